"""``python -m benchmarks.pruned_inference``: see the package's docstring and ``cli``."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a path: make `benchmarks` and `bap` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.pruned_inference.cli import main  # noqa: E402

if __name__ == "__main__":
    main()

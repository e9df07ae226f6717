"""The ``gpu_check`` section of BENCHMARKS.md, from the logs ``benchmarks/gpu_check.sh`` leaves: what ran on
which GPU, its exit status and time, the tests' summary and every RESULT line.

    python -m benchmarks.gpu_check LOGS_DIR      # called by gpu_check.sh
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from benchmarks._common import REPO_ROOT, describe_machine, machine_info, markdown_table, update_section

SECTION = "gpu_check"
RESULT = re.compile(r"^RESULT \S+=\S+$", re.MULTILINE)
PYTEST_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|skipped|error).*?)\s*=*$", re.MULTILINE)


def section_body(logs: Path) -> str:
    rows, results = [], []
    for line in (logs / "steps").read_text().splitlines():
        name, rc, seconds = line.split()
        text = (logs / f"{name}.log").read_text(errors="replace")
        summary = PYTEST_SUMMARY.findall(text)
        status = "ok" if rc == "0" else ("**timed out**" if rc == "124" else f"**failed** (exit {rc})")
        rows.append({"step": name, "status": status, "seconds": int(seconds),
                     "summary": summary[-1][0] if summary else ""})
        results += RESULT.findall(text)
    table = markdown_table(rows, ["step", "status", "seconds", "summary"])
    return "\n".join(["## GPU check (`benchmarks/gpu_check.sh`)", "", describe_machine(machine_info()), "", table,
                      "", "Each benchmark's own CUDA section holds its tables.", "", "```", *results, "```"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path)
    args = parser.parse_args(argv)
    body = section_body(args.logs)
    print(body)
    update_section(REPO_ROOT / "BENCHMARKS.md", SECTION, body)


if __name__ == "__main__":
    main()

"""A new user's first run: the README's default sweep from a clean clone, with the pretraining cache empty and warm.

Clones the repository's HEAD into a temporary folder and runs ``python -m orchestrator.sweep budgets=0.25,0.5,1.0``
there exactly as the README does (its own ``sqlite:///mlflow.db``, a local Ray), once with an empty
``BAP_CACHE_DIR`` (the backbone is pretrained on the embedded source first) and once more with that cache warm.
Setup (``bash setup.sh``) is not timed: the run uses this checkout's ``.venv`` and its built C++ op. Wall time
end to end, the pretraining's share (from the driver's log), and the front each run found (acc_mean,
params_ratio per budget), so a faster first run is seen to keep its quality. Targets: <= 6 min with an empty
cache, <= 4 min warm, on this 2-core machine.

    python -m benchmarks.first_run
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from bap import metrics as M
from benchmarks._common import (REPO_ROOT, add_common_args, describe_machine, machine_info, markdown_table,
                                print_result, write_section)
from orchestrator.front import collect_records
from orchestrator.tracking import client_for
from orchestrator.trial_keys import BUDGET

COMMAND = ["-m", "orchestrator.sweep", "budgets=0.25,0.5,1.0"]
QUICK = ["model.weights=null", "model.width=0.125", "train.epochs=1", "train.steps_per_epoch=2"]
TARGETS_S = {"empty cache": 6 * 60, "warm cache": 4 * 60}
# The driver logs the pretraining's start (orchestrator.pretrained) and end (bap.pretrain), each with a timestamp.
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
PRETRAIN_START, PRETRAIN_END = re.compile(STAMP + r".*pretraining "), re.compile(STAMP + r".*pretrained ")


def pretraining_s(log: str) -> float | None:
    """Seconds between the driver's pretraining log lines; None when it did not pretrain (a warm cache)."""
    start, end = PRETRAIN_START.search(log), PRETRAIN_END.search(log)
    if not (start and end):
        return None
    parse = lambda m: datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def run_once(clone: Path, cache: Path, experiment: str, quick: bool) -> dict[str, Any]:
    env = {**os.environ, "BAP_CACHE_DIR": str(cache), "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, *COMMAND, f"experiment={experiment}", *(QUICK if quick else [])],
                          cwd=clone, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"the default sweep failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-3000:]}")
    client = client_for(f"sqlite:///{clone}/mlflow.db")
    records = collect_records(client, client.get_experiment_by_name(experiment).experiment_id)
    front = "; ".join(f"b{r[BUDGET]:g}: {r[M.ACC_MEAN]:.1f}% at {r[M.PARAMS_RATIO]:.2f}x"
                      for r in sorted(records, key=lambda r: r[BUDGET]))
    return {"wall (s)": wall, "pretraining (s)": pretraining_s(done.stdout + done.stderr),
            "trials": len(records), "front (acc_mean at params_ratio)": front}


def main(argv: list[str] | None = None) -> None:
    args = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv)
    info = machine_info()
    rows: list[Mapping[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bap-first-run-") as tmp:
        clone, cache = Path(tmp) / "clone", Path(tmp) / "cache"
        subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
        for case, experiment in (("empty cache", "first"), ("warm cache", "second")):
            row = {"run": case, **run_once(clone, cache, experiment, args.quick)}
            row["target (s)"] = TARGETS_S[case]
            print(row, flush=True)
            rows.append(row)
    table = markdown_table(rows, ["run", "wall (s)", "pretraining (s)", "target (s)", "trials",
                                  "front (acc_mean at params_ratio)"], {"wall (s)": ".0f", "pretraining (s)": ".0f"})
    print(table)
    def verdict(r: Mapping[str, Any]) -> str:
        over = r["wall (s)"] - r["target (s)"]
        return (f"{r['run']}: {r['wall (s)']:.0f} s against {r['target (s)']} s, "
                + ("met" if over <= 0 else f"**missed** by {over:.0f} s"))

    verdicts = [verdict(r) for r in rows]
    write_section(args, "first_run", "\n".join([
        "## First run: the README's default sweep from a clean clone (`benchmarks/first_run.py`)", "",
        describe_machine(info),
        "- `python -m orchestrator.sweep budgets=0.25,0.5,1.0` in a fresh clone, after setup (this checkout's "
        "`.venv`), first with an empty `BAP_CACHE_DIR`, then again with the pretrained backbone cached.", "",
        table, "", *(f"- {v}" for v in verdicts)]))
    for r in rows:
        print_result(f"first_run_{r['run'].split()[0]}_s", r["wall (s)"])


if __name__ == "__main__":
    main()

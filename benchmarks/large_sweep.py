"""What the sweep driver's MLflow work costs as a sweep grows: N = 100, 300, 1,000 finished trials.

Against the compose stack's MLflow server over HTTP (SQLite behind it, started by ``localstack``), for each N:

1. N trial runs are recorded the way trials record themselves (``Recorder``: params, tags, final metrics, finish),
   timed per trial with the number of HTTP requests: the per-trial MLflow cost and the server's request rate;
2. the driver's live page (``orchestrator.live_page.SweepProgress``) takes the N completions one by one, as Tune's
   event loop calls it: the cost of each completion without a publish (its summary) and of each publish of the
   front, and the driver's memory growth;
3. the closing (``front.finish_sweep``: one read of the sweep, the final front) and ``orchestrator.report`` in a
   fresh process (paged reads, one pass).

The growth exponent of each cost is the slope of log(cost) against log(N). Not measured this way: the trials'
own training and Ray's scheduling. ``--real-trials`` measures those: real sweeps of N very short trials
(``python -m orchestrator.sweep`` on local Ray, recording into the same server), with their wall time, per-trial
orchestration overhead, the driver's peak memory, the server's requests and the live page's publishing time.

    python -m benchmarks.large_sweep [--quick] [--sizes 100,300,1000] [--real-trials]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import mlflow.utils.rest_utils as rest_utils
from mlflow.tracking import MlflowClient

from bap import metrics as M
from benchmarks._common import (REPO_ROOT, add_common_args, current_rss_bytes, describe_machine,
                                machine_info, markdown_table, print_result, write_section)
from benchmarks._sweep_timing import (TrialSize, compose, loop_train_times, per_trial_overhead, run_sweep_process,
                                      scratch_dir, warm_up)
from localstack.processes import base_env
from localstack.stack import Stack
from orchestrator.front import finish_sweep
from orchestrator.live_page import PUBLISH_EVERY_S, PUBLISH_SHARE, SweepProgress
from orchestrator.spool import Recorder
from orchestrator.tracking import SWEEP_TAG, ensure_experiment, find_or_create_child
from orchestrator.trial_keys import DRAW_PARAM, PARAM_KEYS, trial_tags

SECTION = "large_sweep"
FULL_SIZES, QUICK_SIZES = (100, 300, 1000), (20, 60)
BUDGETS = (0.25, 0.5, 0.75, 1.0)


class RequestCounter:
    """Counts MLflow's HTTP requests (every REST call goes through ``rest_utils.http_request``)."""

    def __init__(self) -> None:
        self.count = 0
        self._original = rest_utils.http_request

    def __enter__(self) -> "RequestCounter":
        def counted(*args, **kwargs):
            self.count += 1
            return self._original(*args, **kwargs)
        rest_utils.http_request = counted
        return self

    def __exit__(self, *exc) -> None:
        rest_utils.http_request = self._original


def record_trials(client: MlflowClient, experiment_id: str, parent: str, n: int, spool: str) -> list[str]:
    """N finished trials, each written as ``orchestrator.trainable`` writes one (less its artifacts)."""
    runs = []
    for i in range(n):
        run_id = find_or_create_child(client, experiment_id, parent, f"t{i}", f"trial{i}")
        recorder = Recorder(client, run_id, spool)
        params = {"budget": BUDGETS[i % len(BUDGETS)], "method": "union", "backbone": "resnet26", "domains": None,
                  "seed": i}
        budget, tags = params["budget"], trial_tags(params)
        recorder.log_params({**{key: tags[key] for key in PARAM_KEYS}, "model.backbone": "resnet26", "train.seed": i,
                              DRAW_PARAM: 0})
        recorder.set_tags(tags)
        ratio = budget * (0.9 + 0.2 * ((i * 7919) % 100) / 100)
        recorder.log_metrics({M.ACC_MEAN: 40 + 30 * ratio + (i % 13), M.PARAMS_TOTAL: 1e6 * ratio,
                              M.PARAMS_RATIO: ratio, M.MACS_RATIO: ratio, M.BUDGET_MET: 1.0}, step=3)
        recorder.terminate("FINISHED")
        runs.append(run_id)
    return runs


class FakeTrial:
    """What ``SweepProgress`` reads of a Tune trial: its last result, the final one a finished trial reports."""

    def __init__(self, run_id: str) -> None:
        self.last_result = {"mlflow_run_id": run_id, "final": 1.0}


def measure(url: str, n: int, work: Path) -> dict:
    client = MlflowClient(url)
    experiment_id = ensure_experiment(client, f"large-{n}")
    parent = client.create_run(experiment_id, tags={SWEEP_TAG: f"/runs/large-{n}"}).info.run_id
    progress = SweepProgress(url, experiment_id, parent, publish_every_s=PUBLISH_EVERY_S)
    progress.setup()  # Tune's call before any trial event: the one read at the start, of an empty sweep
    with RequestCounter() as requests:
        start = time.perf_counter()
        runs = record_trials(client, experiment_id, parent, n, str(work / f"spool-{n}"))
        record_s = time.perf_counter() - start
        record_requests = requests.count

    rss_before = current_rss_bytes()
    summary_s, publish_s, summary_requests = [], [], []
    for run_id in runs:
        with RequestCounter() as requests:
            due = progress.publish_due
            start = time.perf_counter()
            progress.on_trial_complete(0, [], FakeTrial(run_id))
            took = time.perf_counter() - start
        if due:
            publish_s.append(took)
        else:
            summary_s.append(took)
            summary_requests.append(requests.count)
    publish = []
    for _ in range(2):  # the front of all N: first with every trial's tag to write, then as a republish does
        start = time.perf_counter()
        progress.publish()
        publish.append(time.perf_counter() - start)
    rss_growth = current_rss_bytes() - rss_before

    start = time.perf_counter()
    finish_sweep(client, experiment_id, parent, "FINISHED")
    close_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator.report", f"experiment=large-{n}", f"mlflow.tracking_uri={url}"],
                   cwd=work, env={**base_env(), "PYTHONPATH": str(REPO_ROOT)}, check=True, capture_output=True,
                   timeout=1800)
    report_s = time.perf_counter() - start
    return {
        "N": n,
        "record_ms_per_trial": 1000 * record_s / n,
        "requests_per_trial": record_requests / n,
        "server_requests_per_s": record_requests / record_s,
        "completion_ms": 1000 * statistics.median(summary_s),
        "completion_requests": statistics.median(summary_requests),
        "publish_first_s": publish[0],
        "publish_s": publish[1],
        "publishes": len(publish_s),
        "driver_rss_mb": rss_growth / 2**20,
        "close_s": close_s,
        "report_s": report_s,
    }


# --real-trials: the smallest embedded trial that still trains, prunes and logs (one epoch of 2 steps of 8 images
# per domain), in real sweeps on local Ray recording into the same server.
REAL_TRIAL = TrialSize(width=0.125, epochs=1, steps_per_epoch=2, batch_size=8, train_per_class=8, val_per_class=4)
REAL_SECTION = "large_sweep_real"
QUICK_REAL_SIZES = (8, 16)
PUBLISH_LINE = re.compile(r"live page: the front of \d+ trial\(s\) published in ([0-9.]+) s")
# Every request the MLflow server answers leaves one access-log line (uvicorn's).
REQUEST_LINE = re.compile(r'"(?:GET|POST|PATCH|DELETE|PUT) /')


def real_overrides(n: int, concurrency: int) -> list[str]:
    """A sweep of ``n`` real trials: every budget x ``n / 4`` seeds, one CPU each, ``concurrency`` at once."""
    if n % len(BUDGETS):
        raise ValueError(f"N={n} must be a multiple of {len(BUDGETS)} (the budgets x seeds)")
    return [f"experiment=real-{n}-{uuid.uuid4().hex[:8]}", "budgets=" + ",".join(f"{b:g}" for b in BUDGETS),
            f"seeds=range(0,{n // len(BUDGETS)})", *REAL_TRIAL.overrides(), "ray.cpus_per_trial=1",
            f"ray.max_concurrent_trials={concurrency}"]


def measure_real(server_log: Path, url: str, n: int, work: Path, concurrency: int, train_s: float) -> dict:
    """One real sweep of ``n`` trials: wall, per-trial orchestration overhead, the driver's peak memory, the
    server's requests, and the live page's publishing (from the driver's log)."""
    before = len(REQUEST_LINE.findall(server_log.read_text(errors="replace")))
    timing = run_sweep_process(real_overrides(n, concurrency), work / f"real-{n}", env={"MLFLOW_TRACKING_URI": url},
                               timeout_s=6 * 3600)
    requests = len(REQUEST_LINE.findall(server_log.read_text(errors="replace"))) - before
    publishes = [float(s) for s in PUBLISH_LINE.findall(timing.driver_log)]
    if len(timing.spans) != n:
        raise RuntimeError(f"the sweep of {n} trials finished {len(timing.spans)}")
    return {"N": n, "wall_s": timing.wall_s, "once_s": timing.once_per_sweep_s,
            "overhead_s": per_trial_overhead(timing.wall_s, timing.once_per_sweep_s, [train_s] * n, concurrency),
            "driver_peak_rss_mb": timing.driver_peak_rss / 2**20,
            "rss_trials_mb": timing.driver_peak_rss_trials / 2**20,
            "driver_cpu_ms_per_trial": 1e3 * timing.driver_cpu_trials_s / n, "requests_per_trial": requests / n,
            "publishes": len(publishes), "publish_s": sum(publishes), "publish_share": sum(publishes) / timing.wall_s}


REAL_COLUMNS = ["N", "wall_s", "once_s", "overhead_s", "driver_peak_rss_mb", "rss_trials_mb",
                "driver_cpu_ms_per_trial", "requests_per_trial", "publishes", "publish_s", "publish_share"]
REAL_FORMATS = {"wall_s": ".1f", "once_s": ".1f", "overhead_s": ".2f", "driver_peak_rss_mb": ".0f",
                "rss_trials_mb": ".0f", "driver_cpu_ms_per_trial": ".0f", "requests_per_trial": ".1f",
                "publish_s": ".1f", "publish_share": ".3f"}


def real_section(rows: list[dict], info: dict, seconds: float, concurrency: int, train_s: float) -> str:
    first, last = rows[0], rows[-1]
    ratio = last["overhead_s"] / first["overhead_s"]
    growth_mb = last["driver_peak_rss_mb"] - first["driver_peak_rss_mb"]
    growth = {k: slope(rows, k)
              for k in ("wall_s", "overhead_s", "driver_peak_rss_mb", "driver_cpu_ms_per_trial", "publish_s")}
    return "\n".join([
        "## Large sweeps of real trials (`benchmarks/large_sweep.py --real-trials`)", "",
        f"{describe_machine(info)}; {seconds:.0f} s.", "",
        f"- Each N: `python -m orchestrator.sweep` on local Ray, {concurrency} trials at once (one CPU each), "
        "recording into the stack's MLflow server over HTTP (SQLite behind it). A trial: ResNet-26 width "
        f"{REAL_TRIAL.width:g}, random init, embedded data, {REAL_TRIAL.epochs} epoch x {REAL_TRIAL.steps_per_epoch} "
        f"steps of {REAL_TRIAL.batch_size} images per domain, then pruning, the model files and every record a "
        f"sweep's trial makes; {train_s:.2f} s of `bap.train` on one core (the plain loop, median).",
        "- `overhead_s`: core-seconds per trial spent on anything but training, once-per-sweep costs left out "
        "(`(trials at once x (wall - once) - N x training) / N`); `once_s`: driver start to the first trial's run "
        "plus the last run's end to the driver's exit; `driver_peak_rss_mb`: the driver process's largest resident "
        "set (sampled every 0.5 s; Ray's own processes not counted), `rss_trials_mb` the same until the last trial's "
        "run ended (the closing left out); `driver_cpu_ms_per_trial`: the driver's CPU time (all its threads) from "
        "the first trial's run to the last one's end, per trial; `requests_per_trial`: requests the server "
        "answered (its access log) per trial, the driver's included; `publish_s`: the live page's publishing, "
        "summed from the driver's log.", "",
        markdown_table(rows, REAL_COLUMNS, REAL_FORMATS), "",
        "Growth exponents (slope of log against log N): " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items())
        + ".", "",
        f"**RESULT real_overhead_ratio={ratio:.2f}** (per-trial overhead at N={last['N']} / N={first['N']}; target "
        "<= 1.2)", "",
        f"**RESULT real_driver_rss_growth_mb={growth_mb:.0f}** (driver peak RSS, N={last['N']} - N={first['N']}; "
        "target < 100)", "",
        f"**RESULT real_publish_share={last['publish_share']:.3f}** (publishing the front / wall at N={last['N']}; "
        "target < 0.05)",
    ])


def run_real(args: argparse.Namespace, sizes: list[int], info: dict) -> None:
    concurrency = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    loop_cfg = compose(real_overrides(len(BUDGETS), 1))
    warm_up(loop_cfg)
    train_s = statistics.median(loop_train_times(loop_cfg, threads=1).values())
    with scratch_dir("bap-large-") as tmp:
        work = Path(tmp)
        stack = Stack(work, workers=0)
        server = stack.start_mlflow("mlflow", f"sqlite:///{work / 'mlflow.db'}")
        try:
            rows = []
            for n in sizes:
                rows.append(measure_real(server.process.log_path, server.url, n, work, concurrency, train_s))
                print(markdown_table(rows[-1:], REAL_COLUMNS, REAL_FORMATS), flush=True)
        finally:
            stack.stop()
    body = real_section(rows, info, time.perf_counter() - started, concurrency, train_s)
    print(body)
    write_section(args, REAL_SECTION, body)
    print_result("real_overhead_ratio", rows[-1]["overhead_s"] / rows[0]["overhead_s"])


CAPACITY_SECTION = "mlflow_capacity"
CAPACITY_CLIENTS = (1, 4, 16)


def server_capacity(url: str, clients: int, seconds: float) -> dict:
    """Requests per second the server answers to ``clients`` concurrent writers (threads, each with its own
    client and run) logging one metric per request for ``seconds``, and the median request latency."""
    client = MlflowClient(url)
    experiment_id = ensure_experiment(client, "capacity")
    runs = [client.create_run(experiment_id).info.run_id for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.perf_counter() + seconds

    def write(i: int) -> None:
        mine = MlflowClient(url)
        step = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            mine.log_metric(runs[i], "capacity", float(step), step=step)
            latencies[i].append(time.perf_counter() - start)
            step += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    done = [x for mine in latencies for x in mine]
    return {"clients": clients, "requests": len(done), "runs": runs, "requests_per_s": len(done) / elapsed,
            "median_ms": 1000 * statistics.median(done), "p95_ms": 1000 * statistics.quantiles(done, n=20)[-1]}


def run_capacity(args: argparse.Namespace, info: dict) -> None:
    """``server_capacity`` for 1, 4 and 16 writers against the stack's server with SQLite and, given, PostgreSQL."""
    backends = {"SQLite": None, **({"PostgreSQL": args.postgres_uri} if args.postgres_uri else {})}
    seconds = 5.0 if args.quick else 20.0
    rows = []
    with scratch_dir("bap-capacity-") as tmp:
        for name, uri in backends.items():
            stack = Stack(Path(tmp) / name, workers=0)
            server = stack.start_mlflow("mlflow", uri or f"sqlite:///{Path(tmp) / name / 'mlflow.db'}")
            try:
                for clients in CAPACITY_CLIENTS:
                    rows.append({"backend": name, **server_capacity(server.url, clients, seconds)})
                    print(markdown_table(rows[-1:], CAPACITY_COLUMNS, CAPACITY_FORMATS), flush=True)
            finally:
                stack.stop()
    body = "\n".join([
        "## MLflow server capacity (`benchmarks/large_sweep.py --capacity`)", "",
        f"{describe_machine(info)}", "",
        "The stack's MLflow server (`localstack`, its compose command) on this machine, SQLite or PostgreSQL behind "
        f"it; `clients` threads in one process on the same machine, each logging one metric per request to its own "
        f"run for {seconds:g} s: the rate the server sustains and the latency a trial's write sees at that load.", "",
        markdown_table(rows, CAPACITY_COLUMNS, CAPACITY_FORMATS),
    ])
    print(body)
    write_section(args, CAPACITY_SECTION, body)
    best = max(r["requests_per_s"] for r in rows)
    print_result("mlflow_capacity_requests_per_s", best)


CAPACITY_COLUMNS = ["backend", "clients", "requests_per_s", "median_ms", "p95_ms"]
CAPACITY_FORMATS = {"requests_per_s": ".0f", "median_ms": ".1f", "p95_ms": ".1f"}


def slope(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(key) against log(N): 0 flat, 1 linear, 2 quadratic."""
    xs = [math.log(r["N"]) for r in rows]
    ys = [math.log(max(r[key], 1e-9)) for r in rows]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


COLUMNS = ["N", "record_ms_per_trial", "requests_per_trial", "server_requests_per_s", "completion_ms",
           "completion_requests", "publish_first_s", "publish_s", "publishes", "driver_rss_mb", "close_s", "report_s"]
FORMATS = {"record_ms_per_trial": ".1f", "requests_per_trial": ".1f", "server_requests_per_s": ".0f",
           "completion_ms": ".1f", "completion_requests": ".0f", "publish_first_s": ".2f", "publish_s": ".2f", "driver_rss_mb": ".1f",
           "close_s": ".1f", "report_s": ".1f"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, checked before anything runs: a bad N would otherwise fail after the sizes before it."""
    parser = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 100,300,1000; quick 20,60, "
                                                      "with --real-trials 8,16)")
    parser.add_argument("--real-trials", action="store_true",
                        help="real sweeps of N very short trials on local Ray instead of the driver's work alone")
    parser.add_argument("--capacity", action="store_true",
                        help="the MLflow server's request capacity against concurrent writers instead")
    parser.add_argument("--postgres-uri", default=None,
                        help="--capacity: also with this PostgreSQL behind the server (`bash "
                             "tests/cluster/start_postgres.sh` prints one)")
    args = parser.parse_args(argv)
    if args.capacity and args.real_trials:
        parser.error("--capacity and --real-trials are two runs; give one of them")
    if args.postgres_uri and not args.capacity:
        parser.error("--postgres-uri is used by --capacity only; add --capacity or drop it")
    quick_sizes = QUICK_REAL_SIZES if args.real_trials else QUICK_SIZES
    try:
        args.sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
                      else list(quick_sizes if args.quick else FULL_SIZES))
    except ValueError:
        parser.error(f"--sizes={args.sizes!r}: give comma-separated whole numbers, e.g. 100,300,1000")
    if len(args.sizes) < 2 or any(n < 1 for n in args.sizes):
        parser.error(f"--sizes={args.sizes}: give at least two N >= 1 (the growth is fitted between them)")
    if args.real_trials and any(n % len(BUDGETS) for n in args.sizes):
        parser.error(f"--sizes={args.sizes}: with --real-trials every N must be a multiple of {len(BUDGETS)} "
                     "(the budgets x seeds)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = args.sizes
    info = machine_info()  # the code measured: the commit the run starts at
    if args.capacity:
        run_capacity(args, info)
        return
    if args.real_trials:
        run_real(args, sizes, info)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bap-large-") as tmp:
        work = Path(tmp)
        server = Stack(work, workers=0).start_mlflow("mlflow", f"sqlite:///{work / 'mlflow.db'}")
        try:
            rows = []
            for n in sizes:
                rows.append(measure(server.url, n, work))
                print(markdown_table(rows[-1:], COLUMNS, FORMATS), flush=True)
        finally:
            server.stop()
    growth = {key: slope(rows, key) for key in ("record_ms_per_trial", "completion_ms", "publish_first_s",
                                                 "publish_s", "close_s", "report_s")}
    first, last = rows[0], rows[-1]
    per_completion_ratio = last["completion_ms"] / first["completion_ms"]
    # Not a timeline: the share the throttle allows for the measured republish cost (at most every
    # PUBLISH_EVERY_S, or less often so it takes at most PUBLISH_SHARE).
    publish_share = last["publish_s"] / max(PUBLISH_EVERY_S, last["publish_s"] / PUBLISH_SHARE)
    body = "\n".join([
        "## Large sweeps: the driver's MLflow cost against N (`benchmarks/large_sweep.py`)", "",
        f"{describe_machine(info)}; {time.perf_counter() - started:.0f} s. Regenerate with "
        "`python -m benchmarks.large_sweep`. MLflow over HTTP (the stack's server, SQLite).", "",
        markdown_table(rows, COLUMNS, FORMATS), "",
        "Growth exponents (slope of log cost against log N; 0 flat, 1 linear): "
        + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()) + ".", "",
        "Columns: `record_ms_per_trial` / `requests_per_trial`, one trial's writes as a trial makes them; "
        "`server_requests_per_s`, the server's rate while they were made (one client); `completion_ms` / "
        "`completion_requests`, the driver's work per finished trial when no publish is due (median); "
        "`publish_first_s`, a publish of the front of all N that writes every trial's `pareto_optimal` tag; "
        "`publish_s`, a republish (plots, tables, description; only changed tags); `publishes`, how many the "
        "throttle let through during the completions; `driver_rss_mb`, the driver's memory growth over the N "
        "completions; `close_s`, the closing; `report_s`, "
        "`orchestrator.report` in a fresh process.", "",
        f"**RESULT completion_cost_ratio={per_completion_ratio:.2f}** (per-completion driver cost at N={last['N']} "
        f"/ N={first['N']}; target <= 1.2)", "",
        f"**RESULT publish_share={publish_share:.3f}** (the front's publishing as a share of wall time at "
        f"N={last['N']}: the throttle's allowance for the measured republish cost; target < 0.05)", "",
        f"**RESULT report_s={last['report_s']:.1f}** (orchestrator.report at N={last['N']})",
    ])
    print(body)
    write_section(args, SECTION, body)
    print_result("completion_cost_ratio", per_completion_ratio)


if __name__ == "__main__":
    main()

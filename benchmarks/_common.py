"""Plumbing shared by the benchmark scripts: machine description, timing, peak RSS, markdown, BENCHMARKS.md.

Every script in ``benchmarks/`` takes ``--quick`` (smaller settings: a smoke run that writes nothing) and
``--output`` (the markdown file whose section it rewrites), writes only its own
``<!-- BEGIN name -->...<!-- END name -->`` section, and ends with a line ``RESULT <name>=<value>`` so CI and
people can read the one number the benchmark is about.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from bap.atomic import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = "BENCHMARKS.md"
# Below this idle share of all CPUs at the start (measured over a second, after waiting up to a minute for it),
# another process shares the CPUs (2 cores here): timings then move by tenths, and the section says so. The load
# average is printed too, but lags: a process that ended a minute ago still weighs in it.
IDLE_SHARE = 0.9
_TITLE = "# Benchmarks\n\nEach section is written by one script in `benchmarks/`; rerun that script to refresh it.\n"


# ---- machine ---------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(wait_idle_s: float = 60.0) -> dict[str, Any]:
    """What a reader needs to compare numbers across machines: CPU, cores, threads, versions, GPU, date (UTC), the
    code's commit, and how busy the CPUs were when the run started (waiting up to ``wait_idle_s`` for them to be
    idle first)."""
    wait_for_idle_cpu(IDLE_SHARE, timeout_s=wait_idle_s)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
    }
    info["cpu_idle"] = round(_cpu_idle_fraction(1.0), 2)
    try:
        info["load_average"] = tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    return info


def git_commit() -> str:
    """The repository's commit, ``-dirty`` when tracked files differ from it: which code made a section. The
    benchmarks' own outputs (BENCHMARKS.md, docs/) do not count: one benchmark's section is not another's code."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{DEFAULT_OUTPUT}", ":!docs")
    return commit + ("-dirty" if changed else "")


def describe_machine(info: Mapping[str, Any], timed: bool = True) -> str:
    """One markdown bullet list of ``machine_info()``; ``timed``: the section holds timings, which a busy machine
    skews (said loudly)."""
    lines = [
        f"- CPU: {info['cpu']}, {info['usable_cores']} usable of {info['logical_cores']} logical cores; "
        f"torch threads {info['torch_threads']} (default, not set)",
        f"- torch {info['torch']}, Python {info['python']}",
        f"- CUDA: {info['cuda'] or 'none present'}",
        f"- date: {info['date']}",
    ]
    lines.append(f"- code: commit `{info['commit']}`" + (" (uncommitted changes)" if info["commit"].endswith("-dirty")
                                                           else ""))
    if "load_average" in info:
        lines.append(f"- load average at start (1, 5, 15 min): {', '.join(map(str, info['load_average']))}; CPUs "
                     f"{info['cpu_idle']:.0%} idle")
    if timed and info.get("cpu_idle", 1.0) < IDLE_SHARE:
        lines.append(f"- **the machine was busy** (CPUs {info['cpu_idle']:.0%} idle at the start, after waiting for "
                     "them): another process shared them, so timings and their ratios may be off by tenths")
    return "\n".join(lines)


# ---- subprocesses ----------------------------------------------------------------------------------------------
def run_json_process(command: Sequence[str], what: str, env: Optional[Mapping[str, str]] = None,
                     cwd: Optional[str | os.PathLike] = None, timeout: Optional[float] = None) -> Any:
    """Run ``command`` (a fresh Python process measuring something away from this one) and return its last stdout
    line parsed as JSON; raises with the end of its stderr if it fails (``what`` names it in the message)."""
    done = subprocess.run(list(command), cwd=cwd, env=None if env is None else dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- timing ----------------------------------------------------------------------------------------------------
def _no_sync() -> None:
    return None


def median_time(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, synchronize: Callable[[], Any] = _no_sync
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` untimed runs.

    ``synchronize`` is called before starting and before stopping the clock (``torch.cuda.synchronize`` for GPU
    work, which is otherwise asynchronous and would time only the kernel launches).
    """
    return statistics.median(interleaved_times({"fn": fn}, repeats, warmup, synchronize)["fn"])


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 5,
    warmup: int = 1,
    synchronize: Callable[[], Any] = _no_sync,
    min_cpu_share: Optional[float] = None,
    max_discarded: int = 0,
    idle_wait_s: float = 0.0,
    stats: Optional[dict] = None,
) -> dict[str, list[float]]:
    """Times (s) of each ``fns[name]()`` run in this process, measured in rounds that run every function once
    (see ``interleaved_rounds``, which takes the other arguments)."""
    def run(name: str) -> tuple[float, float]:
        synchronize()
        cpu, start = time.process_time(), time.perf_counter()
        fns[name]()
        synchronize()
        return time.perf_counter() - start, time.process_time() - cpu

    return interleaved_rounds(run, list(fns), torch.get_num_threads(), repeats, warmup, min_cpu_share,
                              max_discarded, idle_wait_s, stats)


def interleaved_rounds(
    run: Callable[[str], tuple[float, float]],
    names: Sequence[str],
    threads: int,
    repeats: int = 5,
    warmup: int = 1,
    min_cpu_share: Optional[float] = None,
    max_discarded: int = 0,
    idle_wait_s: float = 0.0,
    stats: Optional[dict] = None,
) -> dict[str, list[float]]:
    """Times (s) of each name, measured in rounds that call ``run(name)`` once per name; ``run`` returns the
    pass's (wall seconds, CPU seconds of the process that ran it, which uses ``threads`` threads).

    Measuring models side by side, rather than one after another, spreads slow phases of a shared or throttled
    machine over all of them, so their ratios stay meaningful. The order rotates from round to round so that no
    function always runs right after the same neighbour (cache state, turbo).

    On a CPU shared with other processes, ``min_cpu_share`` discards a timed round in which the passes got less
    than that share of their threads' CPU time (CPU time / (wall time x threads)) and runs it again, at most
    ``max_discarded`` times, each time first waiting up to ``idle_wait_s`` for the CPUs to be idle.
    ``stats`` (a dict) receives "discarded" and "cpu_share" (of each kept round).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    names = list(names)
    times: dict[str, list[float]] = {name: [] for name in names}
    stats = stats if stats is not None else {}
    stats.update(discarded=0, cpu_share=[])
    round_index = 0
    while round_index < warmup + repeats:
        shift = round_index % len(names) if names else 0
        elapsed: dict[str, float] = {}
        cpu = 0.0
        for name in names[shift:] + names[:shift]:
            elapsed[name], cpu_s = run(name)
            cpu += cpu_s
        share = cpu / max(sum(elapsed.values()) * threads, 1e-9)
        if round_index >= warmup:
            if min_cpu_share is not None and share < min_cpu_share and stats["discarded"] < max_discarded:
                stats["discarded"] += 1
                wait_for_idle_cpu(timeout_s=idle_wait_s)
                continue
            stats["cpu_share"].append(share)
            for name, value in elapsed.items():
                times[name].append(value)
        round_index += 1
    return times


def _cpu_idle_fraction(interval_s: float = 0.5) -> float:
    """Fraction of all CPUs' time spent idle over ``interval_s`` (from /proc/stat; 1.0 where unavailable)."""
    def read() -> tuple[int, int]:
        with open("/proc/stat", encoding="utf-8") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = read()
        time.sleep(interval_s)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return 1.0
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle_cpu(threshold: float = 0.9, timeout_s: float = 30.0) -> bool:
    """Wait until the CPUs are at least ``threshold`` idle (other processes quiet); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if _cpu_idle_fraction() >= threshold:
            return True
        if time.monotonic() >= deadline:
            return False


# ---- memory ----------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line; peak RSS needs Linux")


def current_rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark (VmHWM) since start or the last ``reset_peak_rss()``."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Set the RSS high-water mark to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs).

    Raises if the kernel refuses, because a peak that cannot be reset would silently include earlier work.
    """
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
        handle.write("5")
    if peak_rss_bytes() > current_rss_bytes() + 4 * 2**20:
        raise RuntimeError("writing 5 to /proc/self/clear_refs did not reset VmHWM; peak RSS cannot be measured here")


# ---- reporting -------------------------------------------------------------------------------------------------
def _format(value: Any, spec: Optional[str]) -> str:
    if value is None:
        return "–"
    if spec is not None:
        return format(value, spec)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    formats: Optional[Mapping[str, str]] = None,
) -> str:
    """A GitHub markdown table; ``columns`` are row keys (and headers), ``formats`` optional format specs per key.

    A missing key or ``None`` prints as "–"; ints get thousands separators, floats 3 significant digits by default.
    """
    if not columns:
        raise ValueError("columns is empty; name at least one row key to print")
    formats = formats or {}
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    def cell(row: Mapping[str, Any], column: str) -> str:
        return _format(row.get(column), formats.get(column)).replace("|", "\\|")

    body = ["| " + " | ".join(cell(row, column) for column in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name {name!r} may contain only letters, digits, '_', '.' and '-'")
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def update_section(path: str | os.PathLike, name: str, body: str) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``path`` by ``body``.

    Everything outside that section is kept byte for byte, so each script owns exactly one section. A missing
    file is created (with a title) and a missing section is appended at the end.
    """
    begin, end = _markers(name)
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else _TITLE
    block = f"{begin}\n{body.strip()}\n{end}"
    n_begin, n_end = text.count(begin), text.count(end)
    if n_begin == n_end == 0:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    elif n_begin == n_end == 1 and text.index(begin) < text.index(end):
        start, stop = text.index(begin), text.index(end) + len(end)
        text = text[:start] + block + text[stop:]
    else:
        raise ValueError(
            f"{path} has {n_begin} '{begin}' and {n_end} '{end}' markers (expected one of each, BEGIN first); "
            "fix the file by hand so the section is delimited once"
        )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--quick`` (smaller settings, under 60 s) and ``--output`` (the markdown file to update)."""
    parser.add_argument("--quick", action="store_true", help="smaller settings that finish in under 60 s")
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT,
        help=f"markdown file whose section this script rewrites; relative paths are taken from the repository "
             f"root (default: {DEFAULT_OUTPUT}); pass an empty string to write nothing",
    )
    return parser


def output_path(output: str) -> Optional[Path]:
    """Resolve ``--output``: None for "", else a path (relative ones from the repository root)."""
    if not output:
        return None
    path = Path(output)
    return path if path.is_absolute() else REPO_ROOT / path


def write_section(args: argparse.Namespace, name: str, body: str) -> None:
    """Rewrite section ``name`` of ``--output``. A ``--quick`` run is a smoke check of the script, not a
    measurement, so it writes nothing."""
    path = output_path(args.output)
    if path is not None and not args.quick:
        update_section(path, name, body)
        print(f"wrote section {name!r} of {path}", flush=True)


def print_result(name: str, value: float) -> None:
    """The last line of every benchmark: ``RESULT name=value``."""
    print(f"RESULT {name}={value:.4f}", flush=True)

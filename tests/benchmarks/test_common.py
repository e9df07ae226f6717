"""benchmarks/_common.py: section updates keep everything else, tables format, timing rounds interleave."""

import argparse
import os
import subprocess
import sys

import pytest

from benchmarks import _common
from benchmarks._common import (
    add_common_args,
    interleaved_times,
    machine_info,
    markdown_table,
    median_time,
    output_path,
    update_section,
    write_section,
)


def test_update_section_creates_file_and_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    update_section(path, "alpha", "first body")
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "<!-- BEGIN alpha -->\nfirst body\n<!-- END alpha -->" in text


def test_update_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(
        "intro\n\n<!-- BEGIN a -->\nold a\n<!-- END a -->\n\nmiddle\n\n<!-- BEGIN b -->\nold b\n<!-- END b -->\ntail\n"
    )
    update_section(path, "a", "new a\nsecond line")
    update_section(path, "c", "brand new")
    text = path.read_text()
    assert "old a" not in text and "new a\nsecond line" in text
    assert "<!-- BEGIN b -->\nold b\n<!-- END b -->" in text
    assert text.startswith("intro\n\n") and "middle" in text and "tail" in text
    assert text.rstrip().endswith("<!-- BEGIN c -->\nbrand new\n<!-- END c -->")
    update_section(path, "a", "new a\nsecond line")
    assert path.read_text() == text  # idempotent


@pytest.mark.parametrize("content", [
    "<!-- BEGIN a -->\nx\n",  # END missing
    "<!-- END a -->\n<!-- BEGIN a -->\n",  # wrong order
    "<!-- BEGIN a -->\n<!-- END a -->\n<!-- BEGIN a -->\n<!-- END a -->\n",  # twice
])
def test_update_section_refuses_broken_markers(tmp_path, content):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(content)
    with pytest.raises(ValueError, match="markers"):
        update_section(path, "a", "body")
    assert path.read_text() == content


def test_update_section_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError, match="section name"):
        update_section(tmp_path / "B.md", "has space", "body")


def test_markdown_table_formats_values():
    rows = [{"name": "a|b", "n": 1234567, "x": 0.123456, "r": 0.5}, {"name": "c", "n": None, "x": 2.0}]
    table = markdown_table(rows, ["name", "n", "x", "r"], {"r": ".2f"})
    lines = table.splitlines()
    assert lines[0] == "| name | n | x | r |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| a\\|b | 1,234,567 | 0.123 | 0.50 |"
    assert lines[3] == "| c | – | 2 | – |"
    with pytest.raises(ValueError, match="columns"):
        markdown_table(rows, [])


def test_interleaved_times_runs_rounds_with_rotating_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved_times(fns, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["b", "c", "a"] and calls[6:9] == ["c", "a", "b"]
    assert len(calls) == 12
    with pytest.raises(ValueError, match="repeats"):
        interleaved_times(fns, repeats=0)


def test_median_time_is_the_median_and_synchronizes():
    durations = iter([5.0, 1.0, 3.0, 2.0])  # the first is the warm-up
    clock = [0.0]
    syncs = []

    def fn():
        clock[0] += next(durations)

    original = _common.time.perf_counter
    _common.time.perf_counter = lambda: clock[0]
    try:
        assert median_time(fn, repeats=3, warmup=1, synchronize=lambda: syncs.append(1)) == 2.0
    finally:
        _common.time.perf_counter = original
    assert len(syncs) == 8  # before and after every run, warm-up included


def test_machine_info_has_the_fields_a_section_prints():
    info = machine_info(wait_idle_s=0)
    for key in ("cpu", "logical_cores", "usable_cores", "torch_threads", "torch", "python", "cuda", "date"):
        assert key in info
    assert info["torch_threads"] >= 1
    text = _common.describe_machine(info)
    assert "torch " in text and "CUDA" in text and f"commit `{info['commit']}`" in text


def test_a_busy_machine_is_said_so_in_a_section_of_timings():
    info = {**machine_info(wait_idle_s=0), "cpu_idle": 0.97}
    assert "busy" not in _common.describe_machine(info)
    info["cpu_idle"] = 0.55
    assert "**the machine was busy** (CPUs 55% idle" in _common.describe_machine(info)
    assert "busy" not in _common.describe_machine(info, timed=False)


def test_add_common_args_and_output_path(tmp_path):
    parser = add_common_args(argparse.ArgumentParser())
    args = parser.parse_args([])
    assert args.quick is False and args.output == "BENCHMARKS.md"
    assert output_path(args.output) == _common.REPO_ROOT / "BENCHMARKS.md"
    assert parser.parse_args(["--quick"]).quick is True
    assert output_path(str(tmp_path / "x.md")) == tmp_path / "x.md"
    assert output_path("") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS comes from /proc")
def test_peak_rss_sees_a_freed_allocation_after_reset():
    # A fresh process with mmap'd large allocations (as the benchmark runs its memory worker): in this long-lived
    # test process glibc may serve 16 MiB from heap pages already resident, and the RSS would not move.
    code = (
        "import torch; from benchmarks import _common\n"
        "_common.reset_peak_rss(); before = _common.current_rss_bytes()\n"
        "x = torch.ones(16 * 2**20 // 4); del x\n"
        "print(_common.peak_rss_bytes() - before)"
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=_common.REPO_ROOT).stdout
    assert int(out.strip().splitlines()[-1]) >= 15 * 2**20


def test_write_section_skips_quick_runs_and_an_empty_output(tmp_path):
    path = tmp_path / "B.md"
    parser = add_common_args(argparse.ArgumentParser())
    write_section(parser.parse_args(["--quick", "--output", str(path)]), "alpha", "smoke")
    write_section(parser.parse_args(["--output", ""]), "alpha", "nowhere")
    assert not path.exists()
    write_section(parser.parse_args(["--output", str(path)]), "alpha", "measured")
    assert "<!-- BEGIN alpha -->\nmeasured\n<!-- END alpha -->" in path.read_text()


def test_git_commit_names_the_checked_out_commit():
    from benchmarks._common import REPO_ROOT, git_commit

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert git_commit().split("-")[0] == head.stdout.strip()


def test_run_json_process_reads_the_last_line_and_names_a_failure():
    from benchmarks._common import run_json_process

    code = "import json, sys; print('log line'); print(json.dumps({'argv': sys.argv[1:]}))"
    assert run_json_process([sys.executable, "-c", code, "a"], "echo") == {"argv": ["a"]}
    with pytest.raises(RuntimeError, match="the failing step failed:\n.*boom"):
        run_json_process([sys.executable, "-c", "raise SystemExit('boom')"], "the failing step")

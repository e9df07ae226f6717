"""benchmarks/orchestration.py: the call timer, the verdicts on the issue's targets, the tables, arguments."""

import itertools

import pytest

from benchmarks import orchestration
from benchmarks._sweep_timing import SweepTiming, TrialSpan
from benchmarks.orchestration import (Repetition, SweepSummary, TimedCalls, breakdown_rows, end_to_end_verdict,
                                      overhead_verdict, parse_args, server_verdict, speed_verdict, timed)

COSTS = {"checkpoint": 0.2, "mlflow": 0.3, "import": 4.0, "data": 0.1}


def summary(concurrency=2, overhead_s=2.0, vs_loop=0.55, gap_s=1.5, in_trial_s=1.0):
    return SweepSummary(concurrency=concurrency, wall_s=80.0, vs_loop=vs_loop, efficiency=0.7,
                        overhead_s=overhead_s, driver_start_s=5.0, ray_start_s=6.0, tail_s=4.0, gap_s=gap_s,
                        in_trial_s=in_trial_s)


class Counter:
    def work(self, x):
        return x * 2


def test_timed_adds_call_time_and_restores_the_method():
    totals = {"work": 0.0}
    original = Counter.work
    with timed(Counter, "work", totals, "work"):
        assert Counter().work(3) == 6
        assert Counter().work(4) == 8
    assert Counter.work is original
    assert totals["work"] > 0.0


class Nested:
    name = "n"

    def outer(self):
        return self.inner()

    def inner(self):
        return 1


def test_timed_calls_counts_each_outside_call_once_and_passes_attributes_through(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(orchestration.time, "perf_counter", lambda: float(next(ticks)))  # one second per reading
    totals = {"calls": 0.0}
    proxy = TimedCalls(Nested(), totals, "calls")
    assert proxy.name == "n" and proxy.outer() == 1 and proxy.inner() == 1
    assert totals["calls"] == 2.0  # one second per outside call; outer's own call to inner is not timed again


def test_timed_restores_after_an_error():
    totals = {"work": 0.0}
    original = Counter.work
    with pytest.raises(RuntimeError):
        with timed(Counter, "work", totals, "work"):
            raise RuntimeError("boom")
    assert Counter.work is original


def test_overhead_verdict_names_the_largest_part():
    met = overhead_verdict(summary(overhead_s=2.0), train_s=30.0, costs=COSTS)
    assert "met" in met and "6.7%" in met and "the gap between trials" in met
    missed = overhead_verdict(summary(overhead_s=6.0, gap_s=0.5, in_trial_s=5.0), 30.0, COSTS)
    assert "missed" in missed and "Tune reports" in missed


def test_speed_verdict_gives_the_ideal_ratio():
    reps = [Repetition(loop_one_thread={"a": 30.0, "b": 30.0}, loop_all_threads_s=40.0)]
    met = speed_verdict(summary(vs_loop=0.55), reps, cores=2)
    assert "met" in met and "0.75" in met  # 60 / 2 / 40
    missed = speed_verdict(summary(vs_loop=0.9), reps, cores=2)
    assert "missed" in missed and "Once-per-sweep costs are 15.0 s" in missed


def test_end_to_end_compares_the_sweep_with_plain_processes_side_by_side():
    def rep(sweep_wall, plain_wall):
        return Repetition(plain_processes_s=plain_wall, sweeps={2: SweepTiming(0.0, 5.0, sweep_wall, ())})

    met = end_to_end_verdict(summary(), [rep(88.0, 80.0), rep(86.0, 80.0)], cores=2, train_s=30.0)
    assert "+8.7% against 2 plain 1-thread processes" in met and ": met." in met  # median of 10% and 7.5%
    missed = end_to_end_verdict(summary(), [rep(100.0, 80.0)], cores=2, train_s=30.0)
    assert "+25.0%" in missed and "missed by 15.0%" in missed and "15.0 s of its 80.0 s" in missed
    assert "2.00 core-s per trial (6.7% of a trial)" in missed


def test_server_verdict_compares_the_http_sweep_with_the_plain_processes_and_the_sqlite_sweeps():
    spans = (TrialSpan("a", 20.0, 50.0), TrialSpan("b", 20.0, 54.0))
    timing = SweepTiming(0.0, 6.0, 99.0, spans)
    reps = [Repetition(plain_processes_s=80.0, sweeps={2: SweepTiming(0.0, 5.0, 90.0, ())})]
    text = server_verdict(timing, reps, 2, "postgresql+psycopg2://u:p@127.0.0.1:5432/db")
    assert "(postgresql behind it)" in text and "99.0 s, +23.8% against the plain" in text
    assert "+10.0% against the SQLite sweeps" in text and "driver start 6.0 s" in text
    assert "Ray start and first trial 14.0 s" in text and "closing 45.0 s" in text and "32.0 s (median)" in text


def test_breakdown_has_one_column_per_sweep():
    rows = breakdown_rows([summary(2), summary(1, gap_s=None)], train_s=30.0, costs=COSTS)
    assert rows[0] == {"part": "training of one trial", "2 at once (s)": 30.0, "1 at once (s)": 30.0,
                       "measured": "bap.train in the loop, 1 thread"}
    between = next(r for r in rows if r["part"] == "per trial: between trials")
    assert between["2 at once (s)"] == 1.5 and between["1 at once (s)"] is None
    imports = rows[rows.index(between) + 1]
    assert imports["part"] == "once per worker: importing the trainable" and imports["1 at once (s)"] == 4.0


def test_arguments():
    assert parse_args(["--quick", "--output", ""]).repeats == 1
    assert parse_args([]).repeats == 3 and parse_args(["--repeats", "5"]).repeats == 5
    assert parse_args([]).server_backend is None
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])


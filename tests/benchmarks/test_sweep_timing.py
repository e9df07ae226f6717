"""benchmarks/_sweep_timing.py: the sweep's command line matches the loop's configs; the timing arithmetic."""

import subprocess
import sys
import time

import pytest

from benchmarks._sweep_timing import (BUDGETS, DriverSamples, SweepTiming, TrialSize, TrialSpan, compose,
                                      in_trial_overheads, per_trial_overhead, slot_gaps, sweep_efficiency,
                                      sweep_overrides)
from orchestrator.config import plan_sweep, trial_config

SIZE = TrialSize(width=0.125, epochs=2, steps_per_epoch=3, batch_size=8, train_per_class=8, val_per_class=4)


def test_overrides_compose_to_the_trials_the_loop_trains():
    cfg = compose(sweep_overrides(SIZE, trials=3, experiment="x", concurrency=2))
    trials = plan_sweep(cfg).trials
    assert [t["budget"] for t in trials] == list(BUDGETS[:3])
    assert cfg.experiment == "x" and cfg.ray.cpus_per_trial == 1 and cfg.ray.max_concurrent_trials == 2
    one = trial_config(cfg, trials[0])
    assert one.model.width == 0.125 and one.model.weights is None and one.train.device == "cpu"
    assert (one.train.epochs, one.train.steps_per_epoch, one.train.batch_size) == (2, 3, 8)
    assert (one.data.train_per_class, one.data.val_per_class) == (8, 4)


@pytest.mark.parametrize("trials", [0, len(BUDGETS) + 1])
def test_overrides_refuse_a_trial_count_without_budgets(trials):
    with pytest.raises(ValueError, match="trials="):
        sweep_overrides(SIZE, trials=trials, experiment="x", concurrency=1)


def test_sweep_efficiency_is_training_over_held_core_seconds():
    assert sweep_efficiency([30.0, 30.0, 30.0, 30.0], wall_s=80.0, cores=2) == pytest.approx(0.75)
    assert sweep_efficiency([10.0], wall_s=10.0, cores=1) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        sweep_efficiency([1.0], wall_s=0.0, cores=2)


def test_per_trial_overhead_leaves_once_per_sweep_costs_out():
    # one at a time: 4 trials of 30 s, 2 s each on top, 20 s once
    assert per_trial_overhead(20 + 4 * 32, 20, [30.0] * 4, concurrency=1) == pytest.approx(2.0)
    # two at once: two waves of (30 + 2) s
    assert per_trial_overhead(20 + 2 * 32, 20, [30.0] * 4, concurrency=2) == pytest.approx(2.0)


def test_slot_gaps_measure_from_the_freed_slot():
    one_at_a_time = [TrialSpan("a", 0, 10), TrialSpan("b", 13, 20), TrialSpan("c", 24, 30)]
    assert slot_gaps(one_at_a_time, 1) == pytest.approx([3.0, 4.0])
    two_at_once = [TrialSpan("a", 0, 10), TrialSpan("b", 1, 12), TrialSpan("c", 11, 20), TrialSpan("d", 14, 25)]
    assert slot_gaps(two_at_once, 2) == pytest.approx([1.0, 2.0])


def test_in_trial_overhead_is_run_duration_minus_loop_time():
    spans = [TrialSpan("a", 0, 12), TrialSpan("b", 5, 16)]
    assert in_trial_overheads(spans, {"a": 10.0, "b": 10.5}) == pytest.approx([2.0, 0.5])


def test_sweep_timing_splits_the_wall_time():
    timing = SweepTiming(started=100.0, parent_created=105.0, ended=160.0,
                         spans=(TrialSpan("a", 112.0, 130.0), TrialSpan("b", 131.0, 150.0)))
    assert timing.wall_s == 60.0
    assert (timing.driver_start_s, timing.ray_start_s, timing.tail_s) == (5.0, 7.0, 10.0)
    assert timing.once_per_sweep_s == 22.0


def test_driver_samples_see_the_largest_resident_set_of_a_running_process_when_and_its_cpu():
    script = ("import time; time.sleep(1.5); b = b'x' * (200 * 2**20); end = time.process_time() + 1.5\n"
              "while time.process_time() < end: pass\ntime.sleep(1)")
    child = subprocess.Popen([sys.executable, "-c", script])
    started = time.time()
    usage = DriverSamples(child.pid)
    child.wait(timeout=60)
    usage.stop()
    assert usage.peak > 200 * 2**20
    assert any(at <= started + 1.0 for at, _, _ in usage.samples)
    assert usage.peak_until(started + 1.0) < 100 * 2**20  # before the allocation
    assert usage.cpu_between(started, started + 1.0) < 0.5  # asleep
    assert 1.0 < usage.cpu_between(started, time.time()) < 2.5  # the 1.5 s busy loop, sampled every 0.5 s

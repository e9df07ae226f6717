"""benchmarks/node_packing.py: node shares, the sweep model and its fit, the GPU prediction, arguments."""

import pytest

from benchmarks.node_packing import (GpuTrial, SweepModel, SweepPoint, fit_sweep_model, node_cpus, node_scaling,
                                parse_args, predict, trials_per_hour)


def test_nodes_share_the_cores_in_whole_cpus():
    assert [node_cpus(n, cores=2) for n in (1, 2, 3)] == [2, 1, 1]
    assert [node_cpus(n, cores=16) for n in (1, 2, 3)] == [16, 8, 5]


def test_point_counts_waves_and_contention():
    point = SweepPoint(trials=6, slots=3, cores=2, trial_s=10.0, wall_s=0.0, once_s=0.0)
    assert point.waves == 2 and point.contended_trial_s == pytest.approx(15.0)
    assert SweepPoint(6, 2, 2, 10.0, 0.0, 0.0).contended_trial_s == 10.0


def test_fit_recovers_the_overhead_of_synthetic_sweeps():
    truth = SweepModel(once_s=20.0, overhead_s=4.0)
    points = [SweepPoint(6, slots, 2, 15.0, truth.wall_s(6, slots, 15.0 * max(1, slots / 2)), 20.0)
              for slots in (2, 2, 3)]
    fitted = fit_sweep_model(points)
    assert fitted.once_s == pytest.approx(20.0) and fitted.overhead_s == pytest.approx(4.0)


def test_fit_works_from_one_sweep_and_refuses_none():
    only = SweepPoint(2, 2, 2, 1.0, wall_s=30.0, once_s=20.0)
    assert fit_sweep_model([only]).overhead_s == pytest.approx(9.0)
    with pytest.raises(ValueError):
        fit_sweep_model([])


def test_model_wall_counts_waves():
    model = SweepModel(once_s=10.0, overhead_s=5.0)
    assert model.wall_s(trials=16, slots=100, trial_s=95.0) == 110.0
    assert model.wall_s(trials=112, slots=100, trial_s=95.0) == 210.0


def test_gpu_trial_time_is_images_over_throughput():
    gpu = GpuTrial(steps=40 * 500, images_per_step=320, images_per_s=3200.0)
    assert gpu.train_s == pytest.approx(2000.0)


def test_prediction_holds_a_gpu_for_training_and_overhead():
    result = predict(SweepModel(once_s=36.0, overhead_s=10.0), trials=16, nodes=100, trial_s=3590.0)
    assert result["waves"] == 1 and result["wall (h)"] == pytest.approx(1.01)
    assert result["GPU-hours"] == pytest.approx(16.0)
    assert predict(SweepModel(0.0, 0.0), trials=112, nodes=100, trial_s=3600.0)["waves"] == 2


def test_trials_per_hour_and_node_scaling():
    assert trials_per_hour(6, 360.0) == pytest.approx(60.0)
    rows = [{"repetition": r, "nodes": n, "wall_s": w}
            for r, walls in enumerate([(100.0, 110.0), (90.0, 90.0), (100.0, 125.0)]) for n, w in zip((1, 2), walls)]
    assert node_scaling(rows, 2) == pytest.approx(100.0 / 110.0)
    assert node_scaling([r for r in rows if r["nodes"] == 2], 2) is None


def test_arguments():
    quick = parse_args(["--quick", "--output", ""])
    assert quick.quick and quick.output == "" and quick.repeats == 1 and quick.gpu_images_per_s > 0
    assert parse_args([]).repeats == 3
    assert parse_args(["--repeats", "2", "--gpu-images-per-s", "1500"]).gpu_images_per_s == 1500.0
    for bad in (["--repeats", "0"], ["--gpu-images-per-s", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)

"""Tune snapshots the sweep's state (every trial's) when a trial has checkpointed ``num_to_keep`` times since the
last snapshot: the sweep's Tuner must not make that every epoch of every trial."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 12

# The sweep's own Tuner (orchestrator.tuner.build_tuner) around a trainable that checkpoints every epoch, on local Ray
# in a fresh process; prints how many times Tune saved the experiment state.
SCRIPT = textwrap.dedent(
    """
    import sys, tempfile
    import ray
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController
    from orchestrator.config import plan_sweep
    from orchestrator.config_store import compose_sweep_config
    from orchestrator.tuner import build_tuner

    epochs, storage = int(sys.argv[1]), sys.argv[2]
    saves = []
    save_to_dir = TuneController.save_to_dir
    TuneController.save_to_dir = lambda self: (saves.append(1), save_to_dir(self))[1]

    def trainable(config):
        for epoch in range(epochs):
            with tempfile.TemporaryDirectory() as checkpoint:
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(checkpoint))

    overrides = ["preset=smoke", "budgets=[0.5]", "seeds=[0]", f"ray.storage_path={storage}"]
    plan = plan_sweep(compose_sweep_config(overrides))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    build_tuner(plan, f"{storage}/snapshots", None, tune.with_resources(trainable, {"cpu": 1}), []).fit()
    print(len(saves))
    """
)


@pytest.mark.slow
def test_a_trials_checkpoints_do_not_each_snapshot_the_whole_sweep(tmp_path):
    # Tune's periodic snapshots pushed far apart: what is counted does not depend on how fast the machine is.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(EPOCHS), str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saves = int(proc.stdout.split()[-1])
    # One snapshot per checkpoint would be EPOCHS or more; the rest are Tune's first and last ones.
    assert saves < EPOCHS, saves

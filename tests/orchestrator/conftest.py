import pytest
from mlflow.tracking import MlflowClient

from bap import metrics as M
from orchestrator.tracking import SWEEP_TAG, find_or_create_child
from tests.orchestrator.helpers import tag_trial


@pytest.fixture
def store(tmp_path):
    """A fresh SQLite MLflow store: (uri, client, id of experiment "exp")."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("exp")


@pytest.fixture
def two_trial_sweep(store):
    """A sweep's parent run with one finished trial (final metrics logged) and one still RUNNING:
    (parent, done, unfinished) run ids."""
    uri, client, experiment_id = store
    parent = client.create_run(experiment_id, tags={SWEEP_TAG: "/runs/exp_1"}).info.run_id
    done = find_or_create_child(client, experiment_id, parent, "t0", "done")
    for key, value in ((M.ACC_MEAN, 50.0), (M.PARAMS_TOTAL, 1000.0), (M.PARAMS_RATIO, 0.5), (M.MACS_RATIO, 0.5)):
        client.log_metric(done, key, value)
    tag_trial(client, done, budget=0.5)
    client.set_terminated(done, "FINISHED")
    unfinished = find_or_create_child(client, experiment_id, parent, "t1", "unfinished")
    return parent, done, unfinished

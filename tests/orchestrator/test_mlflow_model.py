"""Every trial's pruned model is an MLflow logged model: a pyfunc that loads in a process without the training code,
serves every domain per row, is registered for the front, and reaches its run through the spool when MLflow is down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

import bap
from orchestrator.mlflow_model import MODEL_NAME, log_pyfunc_model
from orchestrator.model_registry import register_front_models
from orchestrator.spool import Recorder
from orchestrator.tracking import ensure_experiment
from orchestrator.trainable import record_trial
from tests.bap.helpers import random_masks, randomize_bn
from tests.orchestrator.helpers import closed_port_uri

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAINS = ["digits", "letters"]
PARAMS = {"budget": 0.5, "method": "union", "backbone": "resnet26", "domains": DOMAINS, "seed": 0}


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """One tiny trial recorded by ``record_trial`` into a SQLite store: (uri, client, run id, its .bap file)."""
    tmp = tmp_path_factory.mktemp("trial")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment(client, "exp")).info.run_id
    cfg = bap.ExperimentConfig(model=bap.ModelConfig(weights=None, width=0.125),
                               data=bap.DataConfig(domains=DOMAINS, train_per_class=4, val_per_class=2, image_size=16),
                               train=bap.TrainConfig(epochs=1, steps_per_epoch=1, batch_size=4))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BAP_NATIVE_OPS", "0")  # no C++ build for one step
        record_trial(cfg, PARAMS, Recorder(client, run_id, str(tmp / "spool")), checkpoint_dir=str(tmp / "ckpt"))
    return uri, client, run_id, str(tmp / "spool" / f"{run_id}.files" / "model.bap")


def logged_model_id(client: MlflowClient, run_id: str) -> str:
    experiment_id = client.get_run(run_id).info.experiment_id
    (model,) = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return model.model_id


def images(side: int = 16) -> torch.Tensor:
    return torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(0))


def request_rows(x: torch.Tensor) -> list[dict]:
    """Rows of alternating domains, so the model must put each domain's rows back in order."""
    return [{"domain": DOMAINS[i % 2], "image": x[i].tolist()} for i in range(len(x))]


def expected_logits(bap_path: str, x: torch.Tensor) -> list[torch.Tensor]:
    model = bap.load(bap_path)
    with torch.no_grad():
        return [model(x[i:i + 1], DOMAINS[i % 2])[0] for i in range(len(x))]


def assert_logits(got: list[list[float]], bap_path: str, x: torch.Tensor) -> None:
    expected = expected_logits(bap_path, x)
    assert [len(row) for row in got] == [len(e) for e in expected]  # each row has its own domain's classes
    for row, e in zip(got, expected):
        assert torch.allclose(torch.tensor(row), e, atol=1e-5)


def test_the_trial_lists_its_logged_model_with_a_signature_naming_the_domain(trial, monkeypatch):
    uri, client, run_id, bap_path = trial
    model_id = logged_model_id(client, run_id)
    model = client.get_logged_model(model_id)
    assert (model.name, model.status) == (MODEL_NAME, LoggedModelStatus.READY)
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model_id]
    assert "model/model.bap" in [f.path for f in client.list_artifacts(run_id, "model")]  # the .bap stays
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ and runs:/ URIs resolve through it
    for model_uri in (f"models:/{model_id}", f"runs:/{run_id}/{MODEL_NAME}"):  # the latter as for a spooled model
        info = mlflow.models.get_model_info(model_uri)
        assert info.signature.inputs.input_names() == ["domain", "image"]
        assert info.signature.outputs.input_names() == ["logits"]
    assert not os.path.exists(os.path.join(os.path.dirname(bap_path), MODEL_NAME))  # logged: the local copy goes


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_a_fresh_process_loads_it_without_the_training_code_and_matches_bap_load(trial, tmp_path):
    uri, client, run_id, bap_path = trial
    x = images()
    (tmp_path / "rows.json").write_text(json.dumps(request_rows(x)))
    script = (
        "import json, sys\n"
        "import mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "rows = pd.DataFrame(json.load(open('rows.json')))\n"
        "out = model.predict(rows)\n"
        "print(json.dumps({'logits': out['logits'].tolist(), 'bap': sys.modules['bap'].__file__,\n"
        "                  'orchestrator': 'orchestrator' in sys.modules}))\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([sys.executable, "-c", script, f"models:/{logged_model_id(client, run_id)}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["orchestrator"]
    # bap is the copy the model carries, not the repository's
    assert out["bap"].endswith(os.path.join("code", "bap", "__init__.py")) and not out["bap"].startswith(REPO)
    assert_logits(out["logits"], bap_path, x)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def bad_rows() -> dict[str, list[dict]]:
    """Rows the model cannot answer truly -> what its refusal says."""
    x = images()
    nan = x[1].clone()
    nan[0, 3, 3] = float("nan")
    return {
        "row 1: image of shape 3 x 20 x 20, but domain 'letters' takes 3 x 16 x 16":
            [request_rows(x)[0], {"domain": "letters", "image": images(20)[0].tolist()}],
        "Expected data to be list or numpy array": [{"domain": "digits", "image": x[0, 0].tolist()}],  # MLflow
        "row 0: image has NaN or infinite values": [{"domain": "letters", "image": nan.tolist()}],
    }


def test_the_model_refuses_an_image_of_the_wrong_size_or_with_nan_naming_the_row(trial, monkeypatch):
    uri, client, run_id, bap_path = trial
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/{logged_model_id(client, run_id)}")
    for reason, rows in bad_rows().items():
        with pytest.raises(mlflow.MlflowException, match=reason.replace("(", r"\(")) as refused:
            model.predict(pd.DataFrame(rows))
        assert refused.value.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert_logits(model.predict(pd.DataFrame(request_rows(images())))["logits"].tolist(), bap_path, images())


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_batch_of_two_domains_and_400_with_the_reason(trial, tmp_path):
    uri, client, run_id, bap_path = trial
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The server runs `uvicorn` from PATH: this interpreter's, as in an activated environment.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{logged_model_id(client, run_id)}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, "mlflow models serve exited"
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the scoring server did not answer /ping"
                time.sleep(1)
        x = images()
        status, body = post(f"{base}/invocations", {"dataframe_records": request_rows(x)})
        assert status == 200, body
        assert_logits([row["logits"] for row in body["predictions"]], bap_path, x)
        status, body = post(f"{base}/invocations", {"dataframe_records": [{"domain": "nope", "image": x[0].tolist()}]})
        assert status == 400 and "nope" in body["message"]
        for reason, rows in bad_rows().items():  # never logits of a wrong-sized image, never a body of NaN
            status, body = post(f"{base}/invocations", {"dataframe_records": rows})
            assert status == 400 and reason in body["message"], (status, body)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already when the server failed to start
            os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn it started
        server.wait(timeout=30)


SIZES = {"digits": (32, 32), "letters": (32, 32)}


def pruned_bap(path: str) -> str:
    torch.manual_seed(0)
    model = bap.build_model("resnet26", {"digits": 3, "letters": 5}, width=0.125)
    randomize_bn(model)
    model.set_masks(random_masks(model, (0.5, 0.7)))
    bap.save(bap.materialize(model.eval()), path)
    return path


def test_front_runs_are_registered_once_with_their_tags(store, tmp_path):
    uri, client, _ = store
    experiment_id = ensure_experiment(client, "models")
    front, off, bare = (client.create_run(experiment_id).info.run_id for _ in range(3))
    path = pruned_bap(str(tmp_path / "model.bap"))
    model_ids = {run: log_pyfunc_model(Recorder(client, run, str(tmp_path / "spool")), path, SIZES)
                 for run in (front, off)}
    table = [{"run_id": run, "pareto_params": on_front, "budget": budget, "sharing": "union",
              "backbone": "resnet26", "domain_set": "digits+letters"}
             for run, on_front, budget in ((front, True, 0.25), (off, False, 0.5), (bare, True, 0.75))]
    (version,) = register_front_models(client, table, "bap-front")  # `bare` has no model: skipped
    assert (version.run_id, version.source) == (front, client.get_logged_model(model_ids[front]).artifact_location)
    assert version.tags == {"budget": "0.25", "sharing": "union", "backbone": "resnet26",
                            "domain_set": "digits+letters"}
    assert register_front_models(client, table, "bap-front") == []  # a repeated closing registers nothing new
    assert len(client.search_model_versions("name = 'bap-front'")) == 1


def test_mlflow_down_spools_the_model_files_and_a_flush_brings_them_to_the_run(store, tmp_path, monkeypatch):
    uri, client, _ = store
    run_id = client.create_run(ensure_experiment(client, "models")).info.run_id
    spool = str(tmp_path / "spool")
    path = pruned_bap(os.path.join(spool, f"{run_id}.files", "model.bap"))
    down = Recorder(MlflowClient(closed_port_uri()), run_id, spool)
    start = time.monotonic()
    assert log_pyfunc_model(down, path, SIZES) is None
    assert time.monotonic() - start < 30  # fail-fast HTTP: no 4-minute backoff
    assert down.pending() == 1 and os.path.isfile(os.path.join(os.path.dirname(path), MODEL_NAME, "MLmodel"))

    assert Recorder(client, run_id, spool).flush()
    assert f"{MODEL_NAME}/MLmodel" in [f.path for f in client.list_artifacts(run_id, MODEL_NAME)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # runs:/ URIs resolve through it
    x = images(32)
    got = mlflow.pyfunc.load_model(f"runs:/{run_id}/{MODEL_NAME}").predict(pd.DataFrame(request_rows(x)))
    assert_logits(got["logits"].tolist(), path, x)
    # Not a logged model, but the front still registers it, from the run's folder.
    row = {"run_id": run_id, "pareto_params": True, "budget": 0.5, "sharing": "union", "backbone": "resnet26",
           "domain_set": "digits+letters"}
    (version,) = register_front_models(client, [row], "bap-front")
    assert version.run_id == run_id and version.source.endswith(f"{run_id}/artifacts/{MODEL_NAME}")

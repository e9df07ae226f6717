"""Resume continues the sweep MLflow recorded or nothing: the recorded config is compared, only the recorded
folder is considered, and it is restored only when its files hash to a state the sweep's driver wrote."""

import dataclasses
import hashlib
import json
import os
import pickle
import time
from types import SimpleNamespace

import pytest
from ray.tune.callback import CallbackList

from orchestrator.config import SweepConfig
from orchestrator.resume import (DIGESTS_KEPT, LATEST, LAUNCH_DIR_TAG, DigestRecorder, check_restorable,
                                 check_same_sweep, comparable_config, find_sweep, recorded_config, recorded_digests,
                                 resume_target)
from orchestrator.spool import sync_spools
from orchestrator.tracking import DIGESTS_TAG, SWEEP_TAG


@pytest.mark.parametrize("value, expected", [(None, None), (False, None), ("False", None), ("", None),
                                             (True, LATEST), ("True", LATEST), ("true", LATEST),
                                             ("s3://bucket/runs/bap_1/", "s3://bucket/runs/bap_1")])
def test_resume_values(value, expected):
    assert resume_target(value) == expected


def test_a_resume_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resume_target("runs/ray/bap_1/") == str(tmp_path / "runs" / "ray" / "bap_1")


def test_the_same_config_resumes_and_the_cluster_address_or_storage_may_change():
    cfg = SweepConfig(budgets=[0.25, 0.5])
    recorded = comparable_config(cfg)
    check_same_sweep(recorded, dataclasses.replace(cfg, resume="true"))
    moved = dataclasses.replace(cfg, resume="true", ray=dataclasses.replace(cfg.ray, address="ray://head:10001",
                                                                            storage_path="/mnt/elsewhere"))
    check_same_sweep(recorded, moved)


def test_a_changed_config_is_refused_naming_every_key_and_the_ways_out():
    cfg = SweepConfig(budgets=[0.25, 0.5])
    changed = dataclasses.replace(cfg, resume="true", budgets=[0.25, 0.5, 1.0],
                                  train=dataclasses.replace(cfg.train, epochs=3))
    with pytest.raises(SystemExit) as refused:
        check_same_sweep(comparable_config(cfg), changed)
    message = str(refused.value)
    assert "budgets: [0.25, 0.5] -> [0.25, 0.5, 1.0]" in message
    assert "train.epochs: 10 -> 3" in message
    assert "start a new sweep" in message and "resume with the old values" in message


def test_a_sweep_recorded_before_search_existed_resumes_as_the_grid_it_was():
    cfg = SweepConfig(budgets=[0.25, 0.5], resume="true")
    recorded = {k: v for k, v in comparable_config(cfg).items() if not k.startswith("search.")}
    check_same_sweep(recorded, cfg)
    optuna = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, algorithm="optuna"))
    with pytest.raises(SystemExit, match=r"search.algorithm: grid -> optuna"):
        check_same_sweep(recorded, optuna)


def test_a_sweep_recorded_without_its_config_is_not_resumed():
    with pytest.raises(SystemExit, match=r"data.root: \(unset\) ->"):
        check_same_sweep({}, SweepConfig(resume="true"))


def _parent(client, experiment_id, sweep_dir, status=None, launch_dir="/launch"):
    time.sleep(0.01)  # distinct start times: "latest" is by start time
    run_id = client.create_run(experiment_id, tags={SWEEP_TAG: sweep_dir, LAUNCH_DIR_TAG: launch_dir}).info.run_id
    if status:
        client.set_terminated(run_id, status)
    return client.get_run(run_id)


def test_resume_true_takes_the_latest_recorded_sweep_and_never_a_planted_folder(store, tmp_path):
    uri, client, experiment_id = store
    _parent(client, experiment_id, str(tmp_path / "exp_1"), "KILLED")
    latest = _parent(client, experiment_id, str(tmp_path / "exp_2"), "KILLED")
    (tmp_path / "exp_9").mkdir()  # sorts last under the storage path, as a planted folder would
    (tmp_path / "exp_9" / "tuner.pkl").write_bytes(b"planted")
    assert find_sweep(client, "exp", LATEST).info.run_id == latest.info.run_id
    assert find_sweep(client, "exp", str(tmp_path / "exp_1")).data.tags[SWEEP_TAG] == str(tmp_path / "exp_1")
    with pytest.raises(SystemExit, match=r"(?s)no sweep recorded .*exp_2 \(KILLED\)"):
        find_sweep(client, "exp", str(tmp_path / "exp_9"))


def test_resume_true_refuses_when_the_latest_sweep_finished_or_none_exists(store, tmp_path):
    uri, client, experiment_id = store
    with pytest.raises(SystemExit, match="has no sweep"):
        find_sweep(client, "exp", LATEST)
    _parent(client, experiment_id, str(tmp_path / "exp_1"), "FINISHED")
    with pytest.raises(SystemExit, match="finished; start a new sweep .* resume=PATH"):
        find_sweep(client, "exp", LATEST)


def test_relative_paths_resolve_against_the_launch_directory(store, tmp_path, monkeypatch):
    uri, client, experiment_id = store
    parent = _parent(client, experiment_id, "/x", launch_dir="/where/it/started")
    monkeypatch.chdir(tmp_path)
    cfg = recorded_config(SweepConfig(), parent)
    assert cfg.ray.storage_path == "/where/it/started/runs/ray"
    assert cfg.mlflow.tracking_uri.startswith("sqlite:///") and str(tmp_path) in cfg.mlflow.tracking_uri


class Planted:
    """Unpickling it creates a file: proof that planted code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _recorded_sweep(store, tmp_path):
    uri, client, experiment_id = store
    sweep_dir = tmp_path / "exp_1"
    sweep_dir.mkdir()
    (sweep_dir / "tuner.pkl").write_bytes(pickle.dumps({"written": "by the driver"}))
    (sweep_dir / "experiment_state-1.json").write_text("{}")
    parent = _parent(client, experiment_id, str(sweep_dir))
    digests = DigestRecorder(uri, parent.info.run_id)
    digests.record(str(sweep_dir))
    return client, sweep_dir, parent.info.run_id, digests


def test_only_files_the_driver_recorded_are_restored(store, tmp_path):
    client, sweep_dir, parent, _ = _recorded_sweep(store, tmp_path)
    check_restorable(str(sweep_dir), client.get_run(parent))

    marker = tmp_path / "planted-code-ran"
    good = (sweep_dir / "tuner.pkl").read_bytes()
    (sweep_dir / "tuner.pkl").write_bytes(pickle.dumps(Planted(str(marker))))
    with pytest.raises(SystemExit, match="tuner.pkl in .* are not files this sweep recorded"):
        check_restorable(str(sweep_dir), client.get_run(parent))
    (sweep_dir / "tuner.pkl").write_bytes(good)
    (sweep_dir / "callback-state.pkl").write_bytes(pickle.dumps(Planted(str(marker))))  # an added file counts too
    with pytest.raises(SystemExit, match="callback-state.pkl in"):
        check_restorable(str(sweep_dir), client.get_run(parent))
    assert not marker.exists()
    os.remove(sweep_dir / "callback-state.pkl")
    check_restorable(str(sweep_dir), client.get_run(parent))


def test_a_staged_state_is_recorded_when_tune_saves_it_before_its_upload(store, tmp_path):
    client, _, parent, digests = _recorded_sweep(store, tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    trial = SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging)))
    digests.on_trial_add(0, [trial], trial)
    (staging / "experiment_state-2.json").write_text('{"trial_data": []}')  # Tune's save, then its callbacks':
    CallbackList([digests]).save_to_dir(str(staging), session_str="2")  # what save_to_dir does before uploading
    recorded = recorded_digests(client.get_run(parent))
    assert recorded["experiment_state-2.json"] == [hashlib.sha256(b'{"trial_data": []}').hexdigest()]
    assert not list(staging.glob("callback-states-*"))  # no state of its own


def test_a_spooled_write_never_vouches_for_a_file(store, tmp_path):
    client, sweep_dir, parent, _ = _recorded_sweep(store, tmp_path)
    (sweep_dir / "tuner.pkl").write_bytes(b"planted")
    planted = {"tuner.pkl": [hashlib.sha256(b"planted").hexdigest()]}
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"{parent}.jsonl").write_text(json.dumps({"op": "tags", "tags": {DIGESTS_TAG: json.dumps(planted),
                                                                               "other": "kept"}}) + "\n")
    sync_spools(store[0], str(spool))
    assert client.get_run(parent).data.tags["other"] == "kept"
    with pytest.raises(SystemExit, match="not files this sweep recorded"):
        check_restorable(str(sweep_dir), client.get_run(parent))


def test_a_gone_folder_is_refused(store, tmp_path):
    uri, client, experiment_id = store
    parent = _parent(client, experiment_id, str(tmp_path / "gone"))
    with pytest.raises(SystemExit, match="no restorable Tune state"):
        check_restorable(str(tmp_path / "gone"), parent)


def test_recent_versions_of_each_file_stay_recorded_and_an_unchanged_file_is_not_rehashed(store, tmp_path):
    client, sweep_dir, parent, digests = _recorded_sweep(store, tmp_path)
    state = sweep_dir / "experiment_state-1.json"
    for version in range(1, DIGESTS_KEPT + 3):
        state.write_text(str(version))
        os.utime(state, ns=(version * 10**9, version * 10**9))
        digests.record(str(sweep_dir))
    recorded = recorded_digests(client.get_run(parent))
    assert len(recorded["experiment_state-1.json"]) == DIGESTS_KEPT
    assert len(recorded["tuner.pkl"]) == 1  # written once, never pushed out by the state's versions
    check_restorable(str(sweep_dir), client.get_run(parent))
    state.write_text("X")  # the size and mtime of the last version: not hashed again, so not recorded
    os.utime(state, ns=((DIGESTS_KEPT + 2) * 10**9,) * 2)
    digests.record(str(sweep_dir))
    assert recorded_digests(client.get_run(parent)) == recorded


def test_a_second_recorder_merges_with_what_the_first_recorded(store, tmp_path):
    # A restored sweep runs the callback pickled in tuner.pkl next to the driver's own recorder.
    client, sweep_dir, parent, first = _recorded_sweep(store, tmp_path)
    restored = pickle.loads(pickle.dumps(first))
    (sweep_dir / "experiment_state-1.json").write_text("later")
    restored.record(str(sweep_dir))
    check_restorable(str(sweep_dir), client.get_run(parent))  # tuner.pkl's digest survived the second writer

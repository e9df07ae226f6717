"""Resume continues the sweep MLflow recorded or nothing: the recorded config is compared, only the recorded
folder is considered, and it is restored only when its files hash to a state the sweep's driver wrote."""

import dataclasses
import hashlib
import json
import os
import pickle
import time
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray.tune.callback import CallbackList

from orchestrator.config import SweepConfig
from orchestrator.errors import UsageError
from orchestrator.resume import (DIGESTS_KEPT, LATEST, LAUNCH_DIR_TAG, DigestRecorder, check_restorable,
                                 check_same_sweep, comparable_config, find_sweep, recorded_config, recorded_digests,
                                 resume_target)
from orchestrator.spool import sync_spools
from orchestrator.tracking import CHECKPOINT_DIGESTS_PREFIX, DIGESTS_TAG, SWEEP_TAG
from orchestrator.verified_fs import UnverifiedFile


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
    with pytest.raises(UsageError) as refused:
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
    with pytest.raises(UsageError, match=r"search.algorithm: grid -> optuna"):
        check_same_sweep(recorded, optuna)


def test_a_sweep_recorded_without_its_config_is_not_resumed():
    with pytest.raises(UsageError, match=r"data.root: \(unset\) ->"):
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
    with pytest.raises(UsageError, match=r"(?s)no sweep recorded .*exp_2 \(KILLED\)"):
        find_sweep(client, "exp", str(tmp_path / "exp_9"))


def test_resume_true_refuses_when_the_latest_sweep_finished_or_none_exists(store, tmp_path):
    uri, client, experiment_id = store
    with pytest.raises(UsageError, match="has no sweep"):
        find_sweep(client, "exp", LATEST)
    _parent(client, experiment_id, str(tmp_path / "exp_1"), "FINISHED")
    with pytest.raises(UsageError, match="finished; start a new sweep .* resume=PATH"):
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
    with pytest.raises(UsageError, match="tuner.pkl in .* are not files this sweep recorded"):
        check_restorable(str(sweep_dir), client.get_run(parent))
    (sweep_dir / "tuner.pkl").write_bytes(good)
    (sweep_dir / "callback-state.pkl").write_bytes(pickle.dumps(Planted(str(marker))))  # an added file counts too
    with pytest.raises(UsageError, match="callback-state.pkl in"):
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
    with pytest.raises(UsageError, match="not files this sweep recorded"):
        check_restorable(str(sweep_dir), client.get_run(parent))


def test_a_gone_folder_is_refused(store, tmp_path):
    uri, client, experiment_id = store
    parent = _parent(client, experiment_id, str(tmp_path / "gone"))
    with pytest.raises(UsageError, match="no restorable Tune state"):
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


def test_a_file_swapped_after_the_check_is_never_read_tune_gets_the_verified_bytes(store, tmp_path):
    # The driver pretrains and starts Ray between the check and Tune's restore: a swap in that window is refused
    # when Tune reads the file, and what Tune reads is the very bytes that were hashed.
    client, sweep_dir, parent, _ = _recorded_sweep(store, tmp_path)
    good = (sweep_dir / "tuner.pkl").read_bytes()
    filesystem, path = check_restorable(str(sweep_dir), client.get_run(parent))
    with filesystem.open_input_file(f"{path}/tuner.pkl") as f:
        assert f.read() == good
    marker = tmp_path / "planted-code-ran"
    (sweep_dir / "tuner.pkl").write_bytes(pickle.dumps(Planted(str(marker))))
    (sweep_dir / "searcher-state-2.pkl").write_bytes(pickle.dumps(Planted(str(marker))))  # a new file too
    for name in ("tuner.pkl", "searcher-state-2.pkl"):
        with pytest.raises(UnverifiedFile, match=f"{name} in .* not a file this sweep recorded"):
            pickle.loads(filesystem.open_input_stream(f"{path}/{name}").read())
    # as the trial workers get it: pickled with Tune's storage context
    with pytest.raises(UnverifiedFile):
        pickle.loads(pickle.dumps(filesystem)).open_input_stream(f"{path}/tuner.pkl")
    assert not marker.exists()


def _checkpoint(sweep_dir, trial, number, payload=b"weights"):
    folder = sweep_dir / trial / f"checkpoint_{number:06d}"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(payload)
    return folder


def test_trial_checkpoints_are_recorded_as_tune_reports_them_and_checked_before_and_while_read(store, tmp_path):
    client, sweep_dir, parent, digests = _recorded_sweep(store, tmp_path)
    trial = "resnet26_all_union_b0.5_s0_abc_00000"
    folders = [_checkpoint(sweep_dir, trial, n, f"epoch {n}".encode()) for n in range(1, DIGESTS_KEPT + 2)]
    for folder in folders:
        digests.record_checkpoint(pyarrow.fs.LocalFileSystem(), str(folder))
    recorded = json.loads(client.get_run(parent).data.tags[CHECKPOINT_DIGESTS_PREFIX + trial])
    assert sorted(recorded) == [f"{f.name}/checkpoint.pt" for f in folders[-DIGESTS_KEPT:]]  # the newest kept
    filesystem, path = check_restorable(str(sweep_dir), client.get_run(parent))
    newest = f"{path}/{trial}/{folders[-1].name}/checkpoint.pt"
    with filesystem.open_input_stream(newest) as f:
        assert f.read() == f"epoch {DIGESTS_KEPT + 1}".encode()

    (folders[-1] / "checkpoint.pt").write_bytes(b"planted weights")  # after the check: refused when read
    with pytest.raises(UnverifiedFile, match="checkpoint.pt"):
        filesystem.open_input_stream(newest)
    with pytest.raises(UsageError, match=f"{trial}/{folders[-1].name}/checkpoint.pt in"):  # before: at the check
        check_restorable(str(sweep_dir), client.get_run(parent))


def test_a_checkpoint_the_driver_never_learned_of_does_not_block_a_resume_but_is_never_read(store, tmp_path):
    # The driver was killed after a worker wrote a checkpoint and before Tune told the driver of it: Tune's
    # state does not name that checkpoint, so the resume goes ahead; a read of it is refused all the same.
    client, sweep_dir, parent, digests = _recorded_sweep(store, tmp_path)
    digests.record_checkpoint(pyarrow.fs.LocalFileSystem(), str(_checkpoint(sweep_dir, "trial_abc_00000", 1)))
    unknown = _checkpoint(sweep_dir, "trial_abc_00001", 3)
    filesystem, path = check_restorable(str(sweep_dir), client.get_run(parent))
    with pytest.raises(UnverifiedFile):
        filesystem.open_input_stream(f"{path}/trial_abc_00001/{unknown.name}/checkpoint.pt")
    (sweep_dir / "trial_abc_00001" / "result.json").write_text("{}")  # results are not restore files
    assert filesystem.open_input_stream(f"{path}/trial_abc_00001/result.json").read() == b"{}"


def test_a_sweep_recorded_before_checkpoints_were_hashed_is_refused_up_front(store, tmp_path):
    client, sweep_dir, parent, _ = _recorded_sweep(store, tmp_path)
    _checkpoint(sweep_dir, "trial_abc_00000", 1)  # no digest of it anywhere: no trial of this sweep could restore
    with pytest.raises(UsageError, match="recorded before its trial checkpoints were hashed"):
        check_restorable(str(sweep_dir), client.get_run(parent))

"""Resume continues the sweep MLflow recorded, or nothing.

A sweep's MLflow parent run records everything a resume needs: its Tune folder (``bap.sweep``), the directory it
was launched from (relative paths resolve there again, so a resume works from any working directory), the
resolved config it started with (its params) and the digests of the folder's restore files as Tune writes them
(``bap.sweep_digests``). ``resume=true`` picks the latest unfinished sweep of the experiment, ``resume=PATH``
the sweep whose folder is PATH; nothing else under ``ray.storage_path`` is looked at.

Tune's restore unpickles the folder's top-level files (``tuner.pkl``, the searcher state, cloudpickle blobs in
``experiment_state-*.json``), so a file planted there would run code in the driver, and a trial continues from the
checkpoint in its subfolder. A folder is restored only when each of these files hashes to a digest this sweep's
driver recorded, and Tune then reads them through ``orchestrator.verified_fs``, which serves the very bytes it
verified; see the trust boundary in docs/cluster.md. A refused resume raises ``UsageError`` (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import posixpath
import threading
from typing import Any, Collection, Iterator, Mapping, Optional

import pyarrow.fs
from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.config import SearchConfig, SweepConfig, resolve_paths
from orchestrator.errors import UsageError
from orchestrator.tracking import CHECKPOINT_DIGESTS_PREFIX, DIGESTS_TAG, SWEEP_TAG, client_for, flatten
from orchestrator.verified_fs import VerifiedReads, checkpoint_dir

log = logging.getLogger(__name__)

LAUNCH_DIR_TAG = "bap.launch_dir"
# Per file, the recent versions stay acceptable: Tune uploads its state in the background, so a driver killed
# mid-upload leaves an earlier one in the folder.
DIGESTS_KEPT = 4
# Keys a resume may change: how to reach the cluster and where new sweeps go, not what the trials compute.
RESUME_MAY_CHANGE = ("resume", "ray.address", "ray.storage_path", "mlflow.end_wait_s", "mlflow.system_metrics_every_s",
                     "model_registry")
LATEST = "latest"
# Trial checkpoints already recorded in this process (a restored sweep runs two recorders).
_CHECKPOINTS_SEEN: set[str] = set()
_CHECKPOINTS_LOCK = threading.Lock()
# Keys added since sweeps were first recorded: a sweep recorded without them ran as their defaults say.
ADDED_KEYS = flatten({"search": dataclasses.asdict(SearchConfig())})


def resume_target(resume: Any) -> Optional[str]:
    """``cfg.resume`` as None (a new sweep), ``LATEST`` (``resume=true``) or the sweep folder to resume."""
    if resume is None or resume is False or str(resume).strip().lower() in ("", "false", "none", "null"):
        return None
    if resume is True or str(resume).strip().lower() == "true":
        return LATEST
    path = str(resume).rstrip("/")
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def find_sweep(client: MlflowClient, experiment: str, target: str) -> Run:
    """The parent run of the sweep to resume; a clear error when there is none."""
    where = f"experiment {experiment!r} at {client.tracking_uri}"
    found = client.get_experiment_by_name(experiment)
    parents = [] if found is None else client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` != ''", order_by=["attributes.start_time DESC"])
    if target == LATEST:
        if not parents:
            raise UsageError(f"error: resume=true but {where} has no sweep; start one without resume=true "
                             "(or set MLFLOW_TRACKING_URI to the MLflow that recorded it)")
        parent = parents[0]
        if parent.info.status == "FINISHED":
            raise UsageError(f"error: resume=true but the latest sweep of {where} ({parent.data.tags[SWEEP_TAG]}) "
                             "finished; start a new sweep without resume=true, or name an older one with "
                             "resume=PATH")
        return parent
    for parent in parents:
        if parent.data.tags[SWEEP_TAG].rstrip("/") == target:
            return parent
    known = "\n".join(f"  {p.data.tags[SWEEP_TAG]} ({p.info.status})" for p in parents[:10]) or "  (none)"
    raise UsageError(f"error: resume={target} is no sweep recorded in {where}; its sweeps:\n{known}")


def recorded_config(cfg: SweepConfig, parent: Run) -> SweepConfig:
    """``cfg`` with its relative paths resolved against the directory the sweep was launched from; the tracking
    URI stays the one that found ``parent``."""
    launched = resolve_paths(cfg, base_dir=parent.data.tags.get(LAUNCH_DIR_TAG))
    return dataclasses.replace(launched, mlflow=resolve_paths(cfg).mlflow)


def comparable_config(cfg: SweepConfig) -> dict[str, str]:
    """The flattened config a sweep is recorded with and a resume must match (MLflow params are strings)."""
    return {k: v for k, v in flatten(dataclasses.asdict(cfg)).items() if k not in RESUME_MAY_CHANGE}


def check_same_sweep(recorded_params: Mapping[str, str], cfg: SweepConfig) -> None:
    """Refuse to resume with a config other than the one the sweep started with: the remaining trials would
    silently run different settings (or a changed axis would be ignored)."""
    old = {k: v for k, v in {**ADDED_KEYS, **recorded_params}.items()
           if not k.startswith("axis.") and k not in RESUME_MAY_CHANGE}
    new = comparable_config(cfg)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        lines = "\n".join(f"  {k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in changed)
        raise UsageError(f"error: resume with a config that differs from the sweep's:\n{lines}\n"
                         "Either start a new sweep (drop resume=...), or resume with the old values.")


def _files(directory: str) -> tuple[pyarrow.fs.FileSystem, list[pyarrow.fs.FileInfo]]:
    """The top-level files of ``directory`` (a local path or a URI): what Tune's restore reads."""
    fs, path = pyarrow.fs.FileSystem.from_uri(directory)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return fs, sorted((i for i in infos if i.type == pyarrow.fs.FileType.File), key=lambda i: i.base_name)


def _file_digest(fs: pyarrow.fs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digests(directory: str) -> dict[str, str]:
    """File name -> SHA-256 of each top-level file of ``directory``."""
    fs, files = _files(directory)
    return {info.base_name: _file_digest(fs, info.path) for info in files}


def recorded_digests(parent: Run) -> dict[str, list[str]]:
    """File name -> the recent digests this sweep's driver recorded for it."""
    return json.loads(parent.data.tags.get(DIGESTS_TAG, "{}"))


def recorded_checkpoints(tags: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Trial folder -> (path in it -> SHA-256) of its recent checkpoints' files, from the parent run's tags."""
    prefix = CHECKPOINT_DIGESTS_PREFIX
    return {key[len(prefix):]: json.loads(value) for key, value in tags.items() if key.startswith(prefix)}


def _checkpoint_files(fs: pyarrow.fs.FileSystem, root: str) -> dict[str, str]:
    """Path relative to ``root`` -> full path of every file in a trial's checkpoint folder under ``root``."""
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    files = {posixpath.relpath(i.path, root): i.path for i in infos if i.type == pyarrow.fs.FileType.File}
    return {rel: path for rel, path in files.items() if checkpoint_dir(rel)}


def check_restorable(sweep_dir: str, parent: Run) -> tuple[pyarrow.fs.FileSystem, str]:
    """Tune may restore ``sweep_dir`` only if every file it would read is one this sweep's driver wrote: its
    top-level files, and the files of each trial checkpoint the driver recorded. Returns the file system and path
    to restore through (``orchestrator.verified_fs``): the check is repeated on the bytes Tune and the trials then
    read, so a file swapped after this check is refused too."""
    if not tune.Tuner.can_restore(sweep_dir):
        raise UsageError(f"error: the sweep folder {sweep_dir} (recorded by MLflow run {parent.info.run_id}) holds "
                         "no restorable Tune state; it was moved or deleted. Start a new sweep without resume=...")
    allowed: dict[str, Collection[str]] = dict(recorded_digests(parent))
    for trial, files in recorded_checkpoints(parent.data.tags).items():
        allowed.update({f"{trial}/{rel}": [digest] for rel, digest in files.items()})
    fs, root = pyarrow.fs.FileSystem.from_uri(sweep_dir)
    found = {info.base_name: info.path for info in _files(sweep_dir)[1]}
    checkpoints = _checkpoint_files(fs, root)
    recorded_dirs = {checkpoint_dir(rel) for rel in allowed if checkpoint_dir(rel)}
    # A checkpoint folder the driver never recorded (it died before it learned of it) is one Tune does not restore
    # from; reading it is refused below. Any other file must hash to a recorded digest.
    checked = {**found, **{rel: path for rel, path in checkpoints.items() if checkpoint_dir(rel) in recorded_dirs}}
    foreign = sorted(rel for rel, path in checked.items() if _file_digest(fs, path) not in allowed.get(rel, ()))
    if foreign:
        raise UsageError(f"error: {', '.join(foreign)} in {sweep_dir} are not files this sweep recorded (MLflow run "
                         f"{parent.info.run_id}, tags {DIGESTS_TAG}*): they were changed or planted after the "
                         "driver wrote them, and restoring would unpickle or load them. Not restored; start a new "
                         "sweep without resume=..., or restore the folder from a copy you trust")
    guarded = {checkpoint_dir(rel) for rel in checkpoints}
    if guarded and not recorded_dirs:
        raise UsageError(f"error: the sweep in {sweep_dir} (MLflow run {parent.info.run_id}) was recorded before its "
                         "trial checkpoints were hashed, so they cannot be verified and would not be restored. Start a "
                         "new sweep without resume=..., or resume it with the version of this project that started it")
    return pyarrow.fs.PyFileSystem(VerifiedReads(fs, root, allowed, guarded, parent.info.run_id)), root


class DigestRecorder(tune.Callback):
    """Records in the parent run the digest of every restore file Tune writes, as it writes it.

    Tune saves its state into a driver-side staging folder during a step and uploads it into the sweep folder in
    the background. Between the two it asks its callbacks for their state (``get_state``): there the staged
    files are hashed (only those whose size or mtime changed) and their digests sent, so a state is recorded
    before it can become restorable, and a driver killed at any moment leaves no unrecorded state behind.
    ``on_step_end`` hashes again (the callbacks' own state file is written after ``get_state``). The driver calls
    ``record(sweep_dir)`` itself for ``tuner.pkl`` (written when the Tuner is made) and watches the folder during
    ``fit`` (``watching``). A trial checkpoint is hashed as Tune reports it (``on_checkpoint``). Digests go
    straight to MLflow, never through the spool: the spool sits on shared storage, where a planted entry could
    vouch for a planted file. Each write merges with the tag's current value (a restored sweep runs the copy of
    this callback pickled in ``tuner.pkl`` next to the driver's own)."""

    def __init__(self, tracking_uri: str, parent_run_id: str) -> None:
        self.tracking_uri, self.parent_run_id = tracking_uri, parent_run_id
        self.__setstate__({})

    def record(self, directory: str) -> None:
        with self._lock:
            fs, files = _files(directory)
            for info in files:
                signature = (info.size, info.mtime_ns)
                if self._seen.get(info.path) != signature:
                    self._seen[info.path] = signature
                    self._unsent.setdefault(info.base_name, []).append(_file_digest(fs, info.path))
            if self._unsent:
                self._send()

    @contextlib.contextmanager
    def watching(self, directory: str, every_s: float = 1.0) -> Iterator[None]:
        """Also check ``directory`` from a thread once a second: Tune writes its final state after its last step,
        and a driver that then hangs on a lost cluster (until Ray ends it) would leave that state unrecorded."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                self._record_quietly(directory)

        thread = threading.Thread(target=loop, name="sweep-digests", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.record(directory)

    def _record_quietly(self, directory: str) -> None:
        try:
            self.record(directory)
        except OSError as error:  # a file replaced while listed: the next check sees the settled state
            log.debug("sweep digests skipped this time: %s", error)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        try:
            self.record_checkpoint(checkpoint.filesystem, checkpoint.path)
        except OSError as error:
            log.warning("could not hash the checkpoint %s (%s); a resume will not restore from it", checkpoint.path,
                        error)

    def record_checkpoint(self, fs: pyarrow.fs.FileSystem, path: str) -> None:
        """Record the digests of a trial checkpoint's files (``<trial folder>/checkpoint_N``) as Tune learns of it,
        keeping the trial's newest ``DIGESTS_KEPT`` checkpoints. Once per process: a restored sweep runs two
        recorders."""
        path = path.rstrip("/")
        with _CHECKPOINTS_LOCK:
            if path in _CHECKPOINTS_SEEN:
                return
            _CHECKPOINTS_SEEN.add(path)
        trial, name = path.split("/")[-2:]
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
        files = {f"{name}/{posixpath.relpath(i.path, path)}": _file_digest(fs, i.path)
                 for i in infos if i.type == pyarrow.fs.FileType.File}
        with self._lock:
            self._unsent_checkpoints.setdefault(trial, {}).update(files)
            self._send()

    def _send(self) -> None:
        try:
            client = client_for(self.tracking_uri)
            tags = []
            if self._unsent:
                merged = recorded_digests(client.get_run(self.parent_run_id))
                for name, digests in self._unsent.items():
                    merged[name] = ([d for d in merged.get(name, []) if d not in digests] + digests)[-DIGESTS_KEPT:]
                tags.append(RunTag(DIGESTS_TAG, json.dumps(merged, sort_keys=True)))
            if self._unsent_checkpoints and self._checkpoints is None:  # read once: then this driver owns them
                self._checkpoints = recorded_checkpoints(client.get_run(self.parent_run_id).data.tags)
            for trial, files in self._unsent_checkpoints.items():
                kept = {**self._checkpoints.get(trial, {}), **files}
                newest = sorted({rel.split("/")[0] for rel in kept})[-DIGESTS_KEPT:]
                self._checkpoints[trial] = {rel: d for rel, d in kept.items() if rel.split("/")[0] in newest}
                tags.append(RunTag(CHECKPOINT_DIGESTS_PREFIX + trial, json.dumps(self._checkpoints[trial],
                                                                                 sort_keys=True)))
            client.log_batch(self.parent_run_id, tags=tags, synchronous=True)
            self._unsent, self._unsent_checkpoints = {}, {}
        except Exception as error:  # MLflow down: kept here and sent with the next state
            log.warning("could not record the sweep folder's digests in MLflow yet (%s)", type(error).__name__)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if trials:
            self._staging = trials[0].storage.experiment_driver_staging_path

    def on_trial_add(self, iteration: int, trials: list, trial, **info) -> None:
        self._staging = trial.storage.experiment_driver_staging_path

    def get_state(self) -> None:
        if self._staging is not None:
            self._record_quietly(self._staging)
        return None  # nothing of its own to save: see the class docstring for why this records

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if trials:
            self._record_quietly(trials[0].storage.experiment_driver_staging_path)

    def __getstate__(self) -> dict:  # pickled into tuner.pkl: where to record, not what was seen
        return {"tracking_uri": self.tracking_uri, "parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._seen: dict[str, tuple] = {}
        self._unsent: dict[str, list[str]] = {}
        self._unsent_checkpoints: dict[str, dict[str, str]] = {}  # trial folder -> its new files' digests
        self._checkpoints: Optional[dict[str, dict[str, str]]] = None  # what is recorded, once read
        self._staging: Optional[str] = None  # Tune's driver-side staging folder, once a trial shows it
        self._lock = threading.RLock()

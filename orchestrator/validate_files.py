"""The files a sweep reads, checked up front (part of ``orchestrator.validate``): the data set's tree and the weights."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from typing import List

from orchestrator.config import EMBEDDED_WEIGHTS, SweepConfig, weights_path


def check_files(cfg: SweepConfig, domains: List[str], errors: List[str]) -> None:
    """The data root and the data set's own checks of ``domains``, and each weights file the sweep will load."""
    data = cfg.data
    env = {"decathlon": "BAP_DECATHLON_ROOT", "imagenet_sketch": "BAP_SKETCH_ROOT"}.get(data.name)
    if env and not os.path.isdir(str(data.root)):
        errors.append(
            f"data.root={data.root} does not exist; point data.root (or ${env}) at the {data.name} directory"
        )
    elif domains:
        # bap.data's own up-front checks (annotation files and their contents, image paths and headers, class
        # sets): an error an hour into a cluster job is raised here instead.
        from bap.data import check_domains

        try:
            check_domains(cfg.data, domains)
        except (ValueError, OSError) as err:
            errors.append(str(err))
    backbones = cfg.backbones or [cfg.model.backbone]
    files = cfg.model.weights not in (None, EMBEDDED_WEIGHTS)
    for backbone, path in sorted({(b, weights_path(cfg.model.weights, b)) for b in backbones} if files else ()):
        if not os.path.isfile(path):
            what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
            errors.append(
                f"model.weights file {path} {what}; train one with the pretrain entry point, "
                "fix the path, or set model.weights=null for a randomly initialised backbone"
            )
        else:
            _check_weights(cfg, backbone, path, errors)


def _check_weights(cfg: SweepConfig, backbone: str, path: str, errors: List[str]) -> None:
    """Load the weights file into the backbone at the sweep's width, as every trial will (a pickle with code, a
    file of another width or backbone fails here, naming the file, not in a trial naming a temporary copy)."""
    from bap import build_model

    try:
        build_model(backbone, {"probe": 1}, width=cfg.model.width, weights=path, unswitched=cfg.model.unswitched)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        errors.append(f"model.weights file {path}: {str(err).strip(chr(39))}")


def _nearest_dir(path: str) -> str:
    """``path``, or its nearest ancestor that exists (what creating ``path`` would write into)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _unwritable(path: str) -> str | None:
    """Why a folder at ``path`` could not be created or written (None when it can): a file is made and removed in
    it, or in its nearest existing ancestor, as the sweep will."""
    existing = _nearest_dir(path)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".bap-write-check-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        return f"{existing} is not writable ({error.strerror or error})"
    return None


_SQLITE_FIXES = {
    "locked": "another process holds it (a sweep, or `mlflow ui` writing); wait for it, or stop it",
    "not a database": "it is corrupt or no MLflow store; restore it from a copy, or point mlflow.tracking_uri at a "
                      "new file",
    "malformed": "it is corrupt; restore it from a copy, or point mlflow.tracking_uri at a new file",
    "readonly": "make the file and its folder writable",
    "full": "free space on its disk",
}


def check_storage(cfg: SweepConfig, errors: List[str]) -> None:
    """The folders a sweep writes (``ray.storage_path``, a local SQLite store) can be written, and the store is a
    usable SQLite database (not corrupt, not locked): else the sweep would fail after it created its parent run
    (left RUNNING), or MLflow would retry for minutes and end in a traceback."""
    if "://" not in cfg.ray.storage_path:
        why = _unwritable(cfg.ray.storage_path)
        if why:
            errors.append(f"ray.storage_path={cfg.ray.storage_path} cannot be written: {why}; make it writable or "
                          "point ray.storage_path at a writable folder")
    uri = cfg.mlflow.tracking_uri
    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///"):]
    why = _unwritable(os.path.dirname(os.path.abspath(path)))
    if why is None and os.path.exists(path):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                db.execute("BEGIN IMMEDIATE")  # takes the write lock a run's creation needs, and gives it back
                db.execute("ROLLBACK")
        except sqlite3.Error as error:
            fix = next((fix for key, fix in _SQLITE_FIXES.items() if key in str(error)), "fix or replace it")
            why = f"{error}; {fix}"
    if why:
        errors.append(f"mlflow.tracking_uri={uri}: the SQLite store cannot be used: {why}")

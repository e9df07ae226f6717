"""The file system a resumed sweep's Tune reads its folder through: restore files served from verified bytes only.

Checking a folder's digests and then letting Tune read it again leaves a window in which a swapped file would
run (the driver pretrains and starts Ray in between). ``VerifiedReads`` closes it: every read of a top-level file
of the sweep folder (``tuner.pkl``, the experiment and searcher state Tune unpickles) and of a file in a trial's
checkpoint folder that existed when the resume began is read once, hashed, compared with the digests the sweep
recorded in MLflow and then served from those same bytes; a file that matches none is refused. Files Tune writes
later (new checkpoints, results) pass through. The handler travels to the trial workers with Tune's storage
context (pickled), so a worker restores its checkpoint from verified bytes too.
"""

from __future__ import annotations

import hashlib
from typing import Collection, Mapping

import pyarrow
import pyarrow.fs as pafs

from orchestrator.errors import UsageError


class UnverifiedFile(UsageError):
    """A restore file whose bytes hash to no digest the sweep recorded (changed or planted)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_dir(relpath: str) -> str | None:
    """For a file inside ``<trial folder>/checkpoint_NNNNNN/`` (a path relative to the sweep folder), that folder:
    what Tune keeps of one checkpoint of a trial."""
    parts = relpath.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 and parts[1].startswith("checkpoint_") else None


class VerifiedReads(pafs.FileSystemHandler):
    """``base`` with reads under ``root`` (the sweep folder, a path of ``base``) checked against ``allowed``
    (relative path -> acceptable SHA-256 digests): top-level files always, files inside ``guarded`` checkpoint
    folders (relative paths) too; everything else passes through."""

    def __init__(self, base: pafs.FileSystem, root: str, allowed: Mapping[str, Collection[str]],
                 guarded: Collection[str], run_id: str = "") -> None:
        self.base, self.root, self.run_id = base, root.rstrip("/"), run_id
        self.allowed = {name: frozenset(digests) for name, digests in allowed.items()}
        self.guarded = frozenset(guarded)

    def __reduce__(self):  # to the trial workers with Tune's storage context
        return VerifiedReads, (self.base, self.root, self.allowed, self.guarded, self.run_id)

    def _relative(self, path: str) -> str | None:
        if not path.startswith(self.root + "/"):
            return None
        relpath = path[len(self.root) + 1:]
        return relpath if "/" not in relpath or checkpoint_dir(relpath) in self.guarded else None

    def _read(self, path: str):
        relpath = self._relative(path)
        if relpath is None:
            return None
        with self.base.open_input_stream(path) as f:
            data = f.read()
        if sha256(data) not in self.allowed.get(relpath, ()):
            raise UnverifiedFile(
                f"error: {relpath} in {self.root} is not a file this sweep recorded (MLflow run {self.run_id}): it "
                "was changed or planted after its checks passed. Not restored; start a new sweep without "
                "resume=..., or restore the folder from a copy you trust")
        return pyarrow.BufferReader(data)  # the very bytes that were hashed

    # ---- reads ------------------------------------------------------------------------------------------------
    def open_input_stream(self, path):
        verified = self._read(path)
        return self.base.open_input_stream(path) if verified is None else verified

    def open_input_file(self, path):
        verified = self._read(path)
        return self.base.open_input_file(path) if verified is None else verified

    # ---- everything else is the base file system's ------------------------------------------------------------
    def get_type_name(self):
        return "bap-verified-" + self.base.type_name

    def get_file_info(self, paths):
        return self.base.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.base.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.base.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.base.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.base.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.base.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.base.delete_file(path)

    def move(self, src, dest):
        self.base.move(src, dest)

    def copy_file(self, src, dest):
        self.base.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.base.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.base.open_append_stream(path, metadata=metadata)

    def normalize_path(self, path):
        return self.base.normalize_path(path)

    def __eq__(self, other):
        return isinstance(other, VerifiedReads) and self.__reduce__()[1] == other.__reduce__()[1]

    def __ne__(self, other):
        return not self == other

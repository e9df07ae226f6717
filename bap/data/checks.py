"""Up-front validation helpers shared by the on-disk data sets: each error names the path or domain and the fix."""

from __future__ import annotations

import os
from typing import Iterable, Sequence


def require_dir(path: str, what: str, fix: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path} does not exist or is not a directory; {fix}")


def require_file(path: str, what: str, fix: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}")


def check_known_domains(dataset: str, requested: Iterable[str], known: Sequence[str]) -> None:
    unknown = [d for d in requested if d not in known]
    if unknown:
        raise ValueError(
            f"data.domains has unknown {dataset} domain(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )


def check_same_classes(domain: str, train: Sequence[str], val: Sequence[str], val_name: str = "val") -> None:
    """Train and evaluation splits must share one label space, or accuracy would silently compare wrong labels."""
    only_train = sorted(set(train) - set(val))
    only_val = sorted(set(val) - set(train))
    if only_train or only_val:
        parts = []
        if only_train:
            parts.append(f"in train but not in {val_name}: {', '.join(map(str, only_train[:10]))}")
        if only_val:
            parts.append(f"in {val_name} but not in train: {', '.join(map(str, only_val[:10]))}")
        raise ValueError(
            f"domain {domain!r}: class sets of train and {val_name} differ ({'; '.join(parts)}); "
            f"give every class images in both splits"
        )


class DirListing:
    """Answers "does this file exist?" with one `os.listdir` per directory instead of one `stat` per file.

    Decathlon's imagenet12 has ~1.2M training images in a handful of directories; listing them is seconds,
    stat-ing each file can be minutes on a network file system.
    """

    def __init__(self) -> None:
        self._entries: dict[str, frozenset[str]] = {}
        self._links: dict[str, frozenset[str]] = {}  # the entries that are symbolic links (scandir says, no stat)

    def _list(self, parent: str) -> None:
        if parent not in self._entries:
            try:
                with os.scandir(parent) as entries:
                    listed = [(entry.name, entry.is_symlink()) for entry in entries]
            except OSError:
                listed = []
            self._entries[parent] = frozenset(name for name, _ in listed)
            self._links[parent] = frozenset(name for name, link in listed if link)

    def exists(self, path: str) -> bool:
        parent, name = os.path.split(os.path.normpath(path))
        self._list(parent)
        return name in self._entries[parent]

    def outside(self, path: str, root: str) -> str | None:
        """Where ``path`` leads when it is a symbolic link to a file outside ``root``, else None. Only the file
        itself is checked: a data root assembled from linked folders is the owner's choice, while a link per file
        is how an image would point at a file that is no part of the data."""
        parent, name = os.path.split(os.path.normpath(path))
        self._list(parent)
        if name not in self._links[parent]:
            return None
        target, base = os.path.realpath(path), os.path.realpath(root)
        return None if target.startswith(base + os.sep) else target

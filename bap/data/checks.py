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

    def exists(self, path: str) -> bool:
        parent, name = os.path.split(os.path.normpath(path))
        if parent not in self._entries:
            try:
                self._entries[parent] = frozenset(os.listdir(parent))
            except OSError:
                self._entries[parent] = frozenset()
        return name in self._entries[parent]

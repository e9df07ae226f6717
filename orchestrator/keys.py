"""Override keys checked against the config's schema before Hydra composes it, so a key that is not there gets the
one that was meant (``num_samples=8`` -> ``search.num_samples``), not only Hydra's "Key ... is not in struct"."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Iterable, List


def schema_keys(schema: type, prefix: str = "") -> List[str]:
    """Every dotted key of the dataclass ``schema`` (nested dataclasses expanded)."""
    keys = []
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(default):
            keys.extend(schema_keys(type(default), f"{prefix}{f.name}."))
    return keys


def _meant(key: str, known: List[str]) -> List[str]:
    """The keys ``key`` was probably meant to be: the same last part under a group, else close spellings."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    return same_leaf or difflib.get_close_matches(key, known, n=3, cutoff=0.75)


def unknown_keys(args: Iterable[str], schema: type, config_dir: Path) -> List[str]:
    """One message per ``key=value`` of ``args`` whose key is neither a key of ``schema`` nor a config group of
    ``config_dir`` (``group/option`` included); ``+key`` (adding a key), ``~key`` and Hydra's own ``hydra.*`` and
    ``hydra/...`` are left to Hydra."""
    known = schema_keys(schema)
    groups = sorted(p.name for p in config_dir.iterdir() if p.is_dir())
    messages = []
    for arg in args:
        key, sep, _ = arg.partition("=")
        if not sep or arg.startswith(("-", "+", "~")) or "@" in key or key.split("/")[0].split(".")[0] == "hydra":
            continue
        if key in known or key.split("/")[0] in groups:
            continue
        meant = _meant(key, known + groups)
        hint = f"did you mean {' or '.join(f'`{m}`' for m in meant)}?" if meant else \
            "the configuration reference in README.md lists every key"
        messages.append(f"error: Could not override '{key}': no such key; {hint}")
    return messages

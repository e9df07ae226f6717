"""Command-line plumbing: sweep-axis syntax, and the ``@hydra.main`` wrapper every entry point uses.

Hydra reads ``budgets=0.25,0.5,1.0`` as a sweep and, without ``--multirun``, refuses it ("Ambiguous value for
argument"); with ``--multirun`` Hydra, not Ray, would run the sweep. So the sweep-axis arguments are rewritten
into list values (``budgets=[0.25,0.5,1.0]``) before ``@hydra.main`` parses ``sys.argv``, using Hydra's own
override parser so quoting, ``range(...)`` and nested lists behave exactly as Hydra documents them.

``python -m orchestrator.cli <overrides>`` is a dry run: it prints the trials the sweep would start (with
``search=optuna``, the space its sampler draws them from) and the validation result, without starting Ray.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import warnings
from typing import Callable, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, QuotedString
from hydra.errors import HydraException

from orchestrator.config import SweepConfig
from orchestrator.errors import INVALID_CONFIG, SweepError
# Renamed keys: the old spelling is still read, with a warning.
DEPRECATED_KEYS = {"budget.budget": "budget.beta", "tracking_uri": "mlflow.tracking_uri", "sharing": "methods",
                   "search.sharing": "search.methods"}
# orchestrator.report's flags before it took Hydra overrides like every entry point: still read, with a warning.
DEPRECATED_FLAGS = {"--sync": "sync=true", "--include-heavy": "include_heavy=true"}
# The list-valued keys of SweepConfig that form the grid.
SWEEP_AXES = ("budgets", "domain_sets", "backbones", "methods", "seeds")

_DOMAIN_SETS_FIX = (
    "each domain set is a bracketed list of domain names: domain_sets=[dtd,svhn] for one set of both, "
    "domain_sets=[dtd],[svhn] or domain_sets=[[dtd],[svhn]] for two sets"
)


def _axis_values(override: Override) -> Optional[list]:
    """The axis as a list, or None to leave the argument as it is (a list already, null, or not parseable)."""
    if override.is_interval_sweep():
        raise ValueError(
            f"{override.input_line}: interval() is a continuous range, not a grid; list the values, "
            f"e.g. {override.key_or_group}=0.25,0.5,1.0"
        )
    if override.is_sweep_override():  # a,b,c | choice(a,b) | range(0,3)
        return list(override.sweep_iterator())
    value = override.value()
    return None if value is None or isinstance(value, list) else [value]


def _rewrite_one(arg: str, parser: OverridesParser) -> str:
    if arg.startswith("-") or "=" not in arg:
        return arg  # a Hydra flag (--cfg job) or a flag's value
    key = arg.split("=", 1)[0].lstrip("+~")
    if "@" in key or key not in SWEEP_AXES:
        return arg
    try:
        override = parser.parse_override(arg)
    except HydraException:
        return arg  # Hydra reports its own parse error with the whole command line
    if override.is_delete():
        return arg
    values = _axis_values(override)
    if key == "domain_sets":
        if values is None and isinstance(override.value(), list):
            flat = override.value()
            # [] keeps its meaning (every domain); [[a,b],[c]] is the list form; [a,b] is one set.
            values = [flat] if flat and not any(isinstance(v, list) for v in flat) else None
        if values is not None and not all(isinstance(v, list) for v in values):
            raise ValueError(f"{arg}: {_DOMAIN_SETS_FIX}")
    if values is None:
        return arg
    prefix = arg[: len(arg) - len(arg.lstrip("+"))]
    return f"{prefix}{key}={_hydra_value(values)}"


# A string Hydra's override grammar reads back unquoted as the same string (a domain, loss or backbone name).
_BARE = re.compile(r"[A-Za-z_][\w\-./]*")


def _hydra_value(value) -> str:
    """``value`` (as Hydra's parser returned it: lists, strings, numbers, booleans, null) in override syntax."""
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, QuotedString):  # an element of a sweep the user quoted: kept as it was written
        return value.with_quotes()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in ("null", "true", "false", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _renamed(arg: str) -> str:
    if arg in DEPRECATED_FLAGS:
        warnings.warn(f"{arg} is deprecated; write {DEPRECATED_FLAGS[arg]}", FutureWarning, stacklevel=3)
        return DEPRECATED_FLAGS[arg]
    key, sep, value = arg.partition("=")
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    new = DEPRECATED_KEYS.get(key[len(prefix):])
    if not sep or new is None:
        return arg
    warnings.warn(f"{key[len(prefix):]} is deprecated; write {new}={value}", FutureWarning, stacklevel=3)
    return f"{prefix}{new}={value}"


def rewrite_sweep_args(argv: Sequence[str]) -> List[str]:
    """Sweep-axis overrides as Hydra list values; every other argument is returned unchanged.

    ``budgets=0.25,0.5,1.0`` -> ``budgets=[0.25,0.5,1.0]``; ``budgets=0.5`` -> ``budgets=[0.5]``;
    ``seeds=range(0,3)`` -> ``seeds=[0,1,2]``; ``domain_sets=[a,b],[c]`` -> ``domain_sets=[[a,b],[c]]``;
    ``domain_sets=[a,b]`` -> ``domain_sets=[[a,b]]`` (one set). List values, ``null``, ``~key`` and the
    ``+``/``++`` prefixes pass through; a deprecated key or flag (``DEPRECATED_KEYS``, ``DEPRECATED_FLAGS``)
    becomes its new spelling. Raises ``ValueError`` for bare domain names, ``interval()`` and unquoted non-ASCII
    values (with the quoting that works).
    """
    parser = OverridesParser.create()
    argv = [_renamed(arg) for arg in argv]
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not value.isascii() and not value.startswith(("'", '"')):
            # Hydra's override lexer rejects unquoted non-ASCII characters with a bare LexerNoViableAltException.
            raise ValueError(f"{arg}: Hydra's override grammar needs a value with non-ASCII characters quoted; "
                             f"write {key}='\"{value}\"' (the outer quotes for the shell)")
    return [_rewrite_one(arg, parser) for arg in argv]


def run_hydra(task: Callable, argv: Optional[List[str]] = None, config: str = "config") -> None:
    """Run ``task(cfg)`` under ``@hydra.main``, ``cfg`` being the real dataclass of ``config``: ``"config"``
    (``sweeps/config.yaml``, a ``SweepConfig``) or ``"report"`` (a ``ReportConfig``).

    ``argv`` (default ``sys.argv[1:]``) is rewritten first (see ``rewrite_sweep_args``), so ``python -m
    orchestrator.sweep budgets=0.25,0.5,1.0`` works. ``@hydra.main`` parses ``sys.argv`` only: it holds the
    rewritten arguments while Hydra runs and is restored afterwards.
    """
    import hydra

    from orchestrator.config import ReportConfig
    from orchestrator.config_store import REPORT_CONFIG_NAME, SWEEPS_DIR, VERSION_BASE, register_configs, to_config

    try:
        args = rewrite_sweep_args(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        sys.exit(f"error: {err}")
    register_configs()
    schema = ReportConfig if config == REPORT_CONFIG_NAME else SweepConfig
    from orchestrator.keys import unknown_keys

    unknown = unknown_keys(args, schema, SWEEPS_DIR)  # a misspelt key gets the one meant, before Hydra composes
    if unknown:
        print("\n".join(unknown), file=sys.stderr)
        sys.exit(INVALID_CONFIG)

    @hydra.main(config_path=str(SWEEPS_DIR), config_name=config, version_base=VERSION_BASE)
    def _main(cfg) -> None:
        try:
            typed = to_config(cfg, schema)
        except ValueError as err:  # a fixed value out of range: its own message names the key and the fix
            print(f"error: {err}", file=sys.stderr)
            sys.exit(INVALID_CONFIG)
        try:
            task(typed)
        except SweepError as err:  # names the key or service and the fix; a traceback would only bury it
            if str(err):
                print(err, file=sys.stderr)
            sys.exit(err.exit_code)

    saved, sys.argv = sys.argv, sys.argv[:1] + args
    try:
        _main()
    finally:
        sys.argv = saved


def sigterm_as_ctrl_c() -> None:
    """For entry points: SIGTERM (``docker stop``, a batch scheduler's cancel) stops the way Ctrl-C does (Tune's
    own stop inside a sweep, KeyboardInterrupt elsewhere), so every run still ends in a true state."""
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def dry_run(cfg: SweepConfig) -> None:
    """Print the trials (a search: its space) and the validation result; local resources stand in for the
    cluster's."""
    from orchestrator.config import objectives, plan_sweep, trial_name
    from orchestrator.validate import known_resources, validate

    plan = plan_sweep(cfg)
    if plan.space:
        s = cfg.search
        print(json.dumps({"experiment": cfg.experiment, "search": {
            "algorithm": s.algorithm, "sampler": s.sampler, "seed": s.seed, "num_samples": s.num_samples,
            "objectives": objectives(s), "fixed": {name: values[0] for name, values in plan.axes.items()},
            "space": {name: {d.kind: list(d.values)} for name, d in plan.space.items()}}}))
    else:
        print(json.dumps({"experiment": cfg.experiment, "trials": [{"name": trial_name(t), **t} for t in plan.trials]}))
    validate(plan, cluster_resources=known_resources(cfg))  # run_hydra reports its errors
    if plan.space:
        print(f"ok: a search of {cfg.search.num_samples} trial(s), valid", file=sys.stderr)
    else:
        print(f"ok: {len(plan.trials)} trial(s) valid", file=sys.stderr)


# For entry points that leave nothing behind (the dry run, the report): no Hydra output directory, no log file.
QUIET_HYDRA = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled",
                  "hydra/hydra_logging=disabled"]

if __name__ == "__main__":
    run_hydra(dry_run, QUIET_HYDRA + sys.argv[1:])

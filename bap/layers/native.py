"""The switched conv's C++ training op (``csrc/switched_conv.cpp``), built on first use.

``torch.utils.cpp_extension`` compiles it once per machine and torch version (about half a minute) into
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``); later processes load the cached library.
Without a C++ compiler, or with ``BAP_NATIVE_OPS=0``, training falls back to the Python autograd function of
``bap.layers.switched``: same results, slower steps.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Optional

from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "switched_conv.cpp"
DISABLE_VARIABLE = "BAP_NATIVE_OPS"

SwitchedConvOp = Callable[[Tensor, Tensor, Tensor, float, int, int], Tensor]


def build():
    """Compile (or load the cached) extension module; raises if it cannot be built."""
    # The op is C++ only: cpp_extension's import-time note about a missing CUDA toolkit does not apply.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    try:  # the ninja wheel puts its binary in the environment, which need not be on PATH
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
    except ImportError:
        pass
    return cpp_extension.load(
        name="bap_switched_conv", sources=[str(SOURCE)], extra_cflags=["-O3", "-fopenmp-simd"], verbose=False
    )


_python_only = False


@contextlib.contextmanager
def python_op():
    """Within the block switched convs train through the Python op, to compare the two side by side."""
    global _python_only
    previous, _python_only = _python_only, True
    try:
        yield
    finally:
        _python_only = previous


def switched_conv_op() -> Optional[SwitchedConvOp]:
    """The C++ op, or None: inside ``python_op()``, with ``BAP_NATIVE_OPS=0``, or when it cannot be built."""
    return None if _python_only else _built_op()


@functools.cache
def _built_op() -> Optional[SwitchedConvOp]:
    setting = os.environ.get(DISABLE_VARIABLE, "1")
    if setting not in ("0", "1"):
        raise ValueError(f"{DISABLE_VARIABLE}={setting!r}: set it to 0 (Python op) or 1 (C++ op, the default)")
    if setting == "0":
        return None
    try:
        return build().switched_conv
    except Exception as error:  # no compiler, no ninja, a broken toolchain: training still works without it
        warnings.warn(
            f"bap: the C++ switched conv could not be built, training uses the slower Python op ({error}). "
            f"Install a C++ compiler (g++) and ninja to get it, or set {DISABLE_VARIABLE}=0 to skip it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None

#!/usr/bin/env bash
# Creates .venv with the project (editable, with test extras) at the versions of constraints.txt: the ones the tests
# ran with, as in CI and the Docker image. Safe to run again: it moves an existing .venv to those versions.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install --quiet -c constraints.txt "$@"; }
pip_install --upgrade pip
# The torch pair first (torchvision must match torch exactly; constraints.txt pins both).
pip_install torch torchvision
pip_install -e ".[dev]"
# Build the C++ switched conv now (half a minute, cached) rather than in the first training step; without a
# compiler this warns and training uses the Python op.
.venv/bin/python -c 'from bap.layers import native; print("C++ switched conv:", "built" if native.switched_conv_op() else "not built, the Python op is used")'
echo "environment ready: $(.venv/bin/python -c 'import torch, ray, mlflow; print("torch", torch.__version__, "ray", ray.__version__, "mlflow", mlflow.__version__)')"

#!/usr/bin/env bash
# Creates .venv with the torch pair and the project (editable, with test extras). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# The torch pair first and pinned together: torchvision must match torch exactly.
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Build the C++ switched conv now (half a minute, cached) rather than in the first training step; without a
# compiler this warns and training uses the Python op.
.venv/bin/python -c 'from bap.layers import native; print("C++ switched conv:", "built" if native.switched_conv_op() else "not built, the Python op is used")'
echo "environment ready: $(.venv/bin/python -c 'import torch, ray, mlflow; print("torch", torch.__version__, "ray", ray.__version__, "mlflow", mlflow.__version__)')"

# syntax=docker/dockerfile:1
# One image for every role of docker-compose.yml: Ray head, Ray workers, the sweep driver and the MLflow server.
# One image means one set of versions: Ray refuses a node whose Ray or Python differs from the head's, and the
# MLflow client in the trials matches the server.
#
#   docker build -t bap-sweeps:cpu .                                     # CPU torch (the default)
#   docker build --build-arg TORCH_INDEX=cu128 -t bap-sweeps:cu128 .     # CUDA torch, for GPU workers
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# torch and torchvision are pinned together: torchvision must match torch exactly. TORCH_INDEX picks the
# PyTorch wheel index: "cpu", a CUDA tag that the pinned torch is published for (cu126, cu128, ...), or
# "pypi" for PyPI's default Linux wheel (CUDA-enabled, larger).
ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# The versions tests/cluster runs the stack's commands with (tests/cluster/test_compose.py checks these pins
# against the test environment). ray[default] brings the dashboard and job API; psycopg2 is MLflow's
# PostgreSQL driver.
ARG RAY_VERSION=2.60.0
ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    BAP_CACHE_DIR=/app/runs/cache

RUN useradd --create-home --uid 1000 bap
# g++ builds bap's C++ switched conv (bap/layers/native.py); without it training falls back to a slower op.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# Heavy, rarely changing layers first, so editing the project rebuilds only the last ones.
RUN set -eux; \
    if [ "$TORCH_INDEX" = pypi ]; then index=""; \
    else index="--index-url https://download.pytorch.org/whl/${TORCH_INDEX}"; fi; \
    pip install $index "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
RUN pip install "ray[default,tune]==${RAY_VERSION}" "mlflow==${MLFLOW_VERSION}" \
    "psycopg2-binary==${PSYCOPG2_VERSION}"

# The repository's layout is kept: orchestrator/config_store.py finds sweeps/ next to the package source
# (hence an editable install), and docker/sweep.sh is the sweep service's entry point.
WORKDIR /app
COPY . /app
RUN pip install -e . \
    && python -c "import torch, torchvision, ray, mlflow; print('torch', torch.__version__, 'ray', ray.__version__, 'mlflow', mlflow.__version__)" \
    && mkdir -p /app/runs/cache /app/outputs /mlartifacts \
    && chown -R bap:bap /app/runs /app/outputs /mlartifacts
# Named volumes mounted on /app/runs and /mlartifacts start with these owners, so the non-root user can write.
USER bap
# Build the C++ switched conv into the image (the bap user's torch_extensions cache), not in every container.
RUN python -c "from bap.layers import native; native.build()"

CMD ["bash"]

# syntax=docker/dockerfile:1
# One image for every role of docker-compose.yml: Ray head, Ray workers, the sweep driver and the MLflow server.
# One image means one set of versions: Ray refuses a node whose Ray or Python differs from the head's, and the
# MLflow client in the trials matches the server.
#
#   docker build -t bap-sweeps:cpu .                                     # CPU torch (the default)
#   docker build --build-arg TORCH_INDEX=cu128 -t bap-sweeps:cu128 .     # CUDA torch, for GPU workers
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Every version comes from constraints.txt, as setup.sh installs them: the versions the tests ran with (README,
# "Tested versions"). TORCH_INDEX picks the PyTorch wheel index for torch and torchvision: "cpu", a CUDA tag that
# the pinned torch is published for (cu126, cu128, ...), or "pypi" for PyPI's default Linux wheel (CUDA-enabled,
# larger; constraints.txt pins its CUDA runtime). A build from another index brings the CUDA runtime its own torch
# pins, so those lock lines (CUDA_RUNTIME) are left out there; every other version is the same in every image.
ARG TORCH_INDEX=cpu
ARG CUDA_RUNTIME='^(nvidia-(?!ml-py)|cuda-|triton==)'

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/etc/bap/constraints.txt \
    RAY_USAGE_STATS_ENABLED=0 \
    BAP_CACHE_DIR=/app/runs/cache

RUN useradd --create-home --uid 1000 bap
# g++ builds bap's C++ switched conv (bap/layers/native.py); without it training falls back to a slower op.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# Heavy, rarely changing layers first, so editing the project rebuilds only the last ones. PIP_CONSTRAINT makes
# every pip install below (and in a derived image) use the lock.
COPY constraints.txt /etc/bap/constraints.txt
RUN set -eux; \
    if [ "$TORCH_INDEX" != pypi ]; then \
        grep -vP "$CUDA_RUNTIME" /etc/bap/constraints.txt > /tmp/c && mv /tmp/c /etc/bap/constraints.txt; \
        pip install --no-deps --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" torch torchvision; \
    fi; \
    pip install torch torchvision
# ray[default] brings the dashboard and job API; psycopg2 is MLflow's PostgreSQL driver.
RUN pip install "ray[default,tune]" mlflow psycopg2-binary

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

#!/usr/bin/env bash
# Entry point of the compose `sweep` service: `python -m orchestrator.sweep "$@"` as a driver of the Ray cluster
# at $RAY_ADDRESS.
#
# A Ray driver attaches to a raylet on its own machine (ray.init(address=...) looks for one), so this container
# first joins the cluster as a node with no CPUs and no GPUs (no trial is ever placed here), then runs the
# driver, then leaves: SIGTERM makes `ray start --block` drain and stop the node. $RAY_START_EXTRA_ARGS adds
# flags to that `ray start` (tests/cluster gives each node on its one host its own ports and temp dir).
set -euo pipefail

: "${RAY_ADDRESS:?RAY_ADDRESS must name the Ray head, e.g. ray-head:6379}"
: "${MLFLOW_TRACKING_URI:?MLFLOW_TRACKING_URI must name the MLflow server, e.g. http://mlflow:5000}"

# shellcheck disable=SC2086  # RAY_START_EXTRA_ARGS is a list of flags
ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats --block \
    ${RAY_OBJECT_STORE_BYTES:+--object-store-memory=$RAY_OBJECT_STORE_BYTES} ${RAY_START_EXTRA_ARGS:-} &
node=$!

leave() {
    kill -TERM "$node" 2>/dev/null || true
    wait "$node" 2>/dev/null || true
}
trap leave EXIT

# ray.init waits for the local raylet to register (up to a minute), so the driver can start right away. It runs
# in the background so that a signal (docker stop, Ctrl-C) reaches this script at once and is passed on.
python -m orchestrator.sweep "$@" &
driver=$!
trap 'kill -TERM "$driver" 2>/dev/null || true' TERM INT
status=0
wait "$driver" || status=$?
while kill -0 "$driver" 2>/dev/null; do  # a trapped signal interrupts `wait`: wait for the driver to finish
    wait "$driver" || status=$?
done
exit "$status"

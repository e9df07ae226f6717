#!/usr/bin/env bash
# The GPU check: run it whenever a CUDA GPU is at hand (a few minutes on one GPU, under 8 with setup cached).
#
#   bash benchmarks/gpu_check.sh
#
# The gpu-marked tests, then on CUDA: the switch overhead and training throughput of the trainer's step
# (switched vs unswitched ResNet-26 at 64x64 and ResNet-50 at 224x224, AMP), pruned-model inference, and the
# data loaders against that step. Each benchmark writes its own CUDA section of BENCHMARKS.md; the gpu_check
# section records what ran, how long, and its RESULT lines. Every step has a time limit, so one slow step cannot
# use up a lent machine. With $OUT set (the device machine's return folder), BENCHMARKS.md and the logs are copied
# there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch: nothing to check")' || exit 2
"$PY" -c 'import bap, orchestrator, ray, mlflow' || { echo "the project is not installed for $PY: run bash setup.sh" >&2; exit 2; }
LOGS=${LOGS:-$(mktemp -d)}
: > "$LOGS/steps"

step() {  # step NAME LIMIT_S COMMAND...: run it bounded, log its output, record its exit status and seconds
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    echo "$name $rc $(( $(date +%s) - start ))" | tee -a "$LOGS/steps"
}

step gpu_tests 150 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider
step switch_overhead 150 "$PY" -m benchmarks.switch_overhead --device cuda
step pruned_inference 150 "$PY" -m benchmarks.pruned_inference --device cuda
step data_loading 120 "$PY" -m benchmarks.data_loading --device cuda
"$PY" -m benchmarks.gpu_check "$LOGS"
if [ -n "${OUT:-}" ]; then
    cp BENCHMARKS.md "$OUT/" && cp -r "$LOGS" "$OUT/gpu_check_logs"
fi

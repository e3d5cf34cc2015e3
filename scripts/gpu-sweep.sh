#!/usr/bin/env bash
# The one GPU job: install carried wheels if the environment lacks a package, then stages/gpu_job.py (probe the
# device ≤ 60 s, then train + evaluate params-gpu.yaml's runs in sweep.order while each one's estimate fits the
# budget; every finished run goes into $OUT/results.tar.gz at once). No DVC needed.
#
#   TCVAE_GPU_BUDGET_S=480 bash scripts/gpu-sweep.sh      # on the GPU machine, carrying .whl (scripts/gpu-wheels.sh)
#   TCVAE_GPU_TINY=1 TCVAE_GPU_BUDGET_S=45 bash scripts/gpu-sweep.sh    # the rehearsal on a CPU (tests/test_gpu_job.py)
#
# $OUT (default ./gpu-sweep-out) receives at most 4 files: results.tar.gz, probe.json, job.log, summary.txt.
# The job never runs past its budget by more than 30 s: the driver kills a run 25 s after the deadline, and this
# script stops the driver 28 s after it (SIGKILL 1 s later if it lingers), then prints the summary written so far.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export OUT=${OUT:-$ROOT/gpu-sweep-out}
BUDGET=${TCVAE_GPU_BUDGET_S:-480}
if ! [[ "$BUDGET" =~ ^[0-9]{1,6}(\.[0-9]+)?$ ]] || [ "${BUDGET%.*}" -lt 1 ]; then    # before any arithmetic on it
    echo "error: TCVAE_GPU_BUDGET_S=${BUDGET:0:40}: give the job's budget in seconds, a number from 1 to 999999" >&2
    exit 2
fi
export TCVAE_GPU_START=$(date +%s.%N)      # the budget counts from here: the wheels' install is in it
export TCVAE_GPU_BUDGET_S=$BUDGET PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 COLUMNS=150
PY=${PYTHON:-python3}
mkdir -p "$OUT"

# Carried wheels (.whl/, made by scripts/gpu-wheels.sh) only where a package is missing, as on the GPU machine.
if [ -d "$ROOT/.whl" ] && ls "$ROOT"/.whl/*.whl >/dev/null 2>&1 && \
        ! PYTHONPATH="$ROOT" "$PY" -c "import sys; from stages.gpu_job import environment; sys.exit(bool(environment()))"; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tcvae-site \
        "$ROOT"/.whl/*.whl >>"$OUT/job.log" 2>&1 || echo "install of carried wheels FAILED (see job.log)"
    export PYTHONPATH="/tmp/tcvae-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/job.log" 2>&1

cd "$ROOT" && timeout -k 1 $((${BUDGET%.*} + 28 - SECONDS)) "$PY" -m stages.gpu_job
rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "the job was stopped at its budget + 28 s; the summary written so far:"
    cat "$OUT/summary.txt" 2>/dev/null
fi
exit $rc

#!/usr/bin/env bash
# GPU kit on the lent machine: the paper's DeepLabV3+ R50 under Keras 3's JAX backend.
#
# On the device, from the repo root, with .gpu_pack carried (make gpu-pack here first):
#     bash tools/gpu_run.sh                  # results under $OUT
# CPU dry run here (tests/test_gpu_kit.py): tiny config, 2 folds, no wheels installed:
#     SMOKE=1 OUT=/tmp/kit PYTHON=.venv/bin/python bash tools/gpu_run.sh
#
# Steps: print the GPU (nvidia-smi, also to $OUT/nvidia_smi.txt); install the carried wheels
# (.gpu_pack/whl: keras, namex, optree, ml-collections, which the image lacks) into /tmp/site;
# then tools/gpu_kit.py with KERAS_BACKEND=jax: jit / no-jit training images/s and MFU in
# mixed_bfloat16, and the paper config's folds in the time left ($OUT/gpu_kit.json,
# $OUT/cv_table.md, $OUT/gpu_kit.log).
#
# Environment: OUT (required unless SMOKE=1: default /tmp/spoils_gpu_kit_out), PACK (default
# .gpu_pack), PYTHON (default python3, the image's), TOTAL_S (gpu_kit.py's budget, default
# 500 s: the run tool allows 540), WORKDIR (scratch: XLA cache, fold folders; default
# /tmp/spoils_gpu_kit), CV_S (the folds' cap, default 420 s; they get what the
# budget leaves after the jit benchmark and the no-jit reserve, ~290 s on an H100), SMOKE=1.
set -euo pipefail

PACK=${PACK:-.gpu_pack}
PYTHON=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
if [[ -z "${OUT:-}" ]]; then
    if [[ "$SMOKE" == 1 ]]; then OUT=/tmp/spoils_gpu_kit_out; else
        echo "gpu_run.sh: set OUT to the results folder" >&2; exit 2; fi
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax

if command -v nvidia-smi >/dev/null 2>&1; then
    { nvidia-smi || echo "gpu_run.sh: nvidia-smi failed"; } 2>&1 | tee "$OUT/nvidia_smi.txt"
else
    echo "gpu_run.sh: no nvidia-smi (CPU run)" | tee "$OUT/nvidia_smi.txt"
fi

if [[ "$SMOKE" != 1 ]]; then
    if ! compgen -G "$PACK/whl/*.whl" >/dev/null; then
        echo "gpu_run.sh: no wheels in $PACK/whl (run make gpu-pack and carry $PACK)" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$PACK"/whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    ARGS=(--pack "$PACK" --total-s "${TOTAL_S:-500}" --cv-s "${CV_S:-420}")
else
    export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    ARGS=(--smoke)
    if compgen -G "$PACK/spider_*.npz" >/dev/null && [[ "${SMOKE_PACK:-0}" == 1 ]]; then
        ARGS+=(--pack "$PACK")
    fi
fi

set -o pipefail
"$PYTHON" tools/gpu_kit.py --out "$OUT" --workdir "${WORKDIR:-/tmp/spoils_gpu_kit}" \
    "${ARGS[@]}" 2>&1 | tee "$OUT/gpu_kit.log"

#!/usr/bin/env bash
# The GPU path on one CUDA GPU: the default recipe eagerly and under torch.compile, the long
# recipe (rescnn, 40 epochs) compiled, and full-width ResNet-9 at batch 512, each a whole `imclass train --device cuda` run (data held on the GPU,
# augmentation there, bf16 autocast, cuDNN autotuning); prints test accuracy and seconds.
#
#   bench/gpu.sh [OUT]        OUT default runs/gpu
#   PYTHON=...  interpreter with torch (CUDA build) and imclass's requirements (default
#               .venv/bin/python, else python3); imclass itself is taken from this checkout
#   DATA_DIR=... folder holding the four Fashion-MNIST IDX files, for a machine without the
#               Debian package or a network
#
# Goal (issue 14): >= 96% test accuracy within 60 s on one H200-class GPU. Not run yet: no
# GPU has been lent to the project (docs/benchmarks.md says so until it has).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=${1:-runs/gpu}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA=()
if [ -n "${DATA_DIR:-}" ]; then DATA=(--data-dir "$DATA_DIR"); fi

"$PYTHON" - <<'PY'
import time, torch
assert torch.cuda.is_available(), "bench/gpu.sh: no CUDA GPU is visible"
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ a
torch.cuda.synchronize()
start = time.perf_counter()
for _ in range(20):
    a @ a
torch.cuda.synchronize()
tflops = 20 * 2 * 8192 ** 3 / (time.perf_counter() - start) / 1e12
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, bf16 matmul {tflops:.0f} TFLOP/s")
PY

train() {
    local name=$1; shift
    "$PYTHON" -m imclass train --device cuda --out "$OUT/$name" --overwrite --quiet \
        ${DATA[@]+"${DATA[@]}"} "$@" >/dev/null
    "$PYTHON" - "$OUT/$name" "$*" <<'PY'
import json, sys
from pathlib import Path
run_dir, flags = Path(sys.argv[1]), sys.argv[2]
test = json.loads((run_dir / "metrics.json").read_text())["test"]
run = json.loads((run_dir / "run.json").read_text())
print(f"| {run_dir.name} | {flags or '(defaults)'} | {test['accuracy']:.2%} | "
      f"{run['total_seconds']:.0f} | {run['epochs_run']} |")
PY
}

echo "| run | flags | test accuracy | seconds (process start to report) | epochs |"
echo "|---|---|---:|---:|---:|"
train default
train default-compiled --compile true
train long-compiled --compile true --recipe long
train resnet9-compiled --compile true --recipe long --widths 64,128,256,512 --batch-size 512 \
    --lr 0.4

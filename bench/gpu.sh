#!/usr/bin/env bash
# Issue 28's measurements on one CUDA GPU, in one call (planned for under 8 minutes on an H200):
#   1. the bf16 matmul rate;
#   2. bench/gpu_step.py: augmentation alone, each model's epoch images/s eager and with CUDA
#      graphs, graphed against eager losses, host synchronisations inside an epoch, the
#      augmentation's operations at batch 64 and 1,024, a profiler summary (OUT/profile.txt);
#   3. whole `imclass train --device cuda` processes on Fashion-MNIST, `nvidia-smi dmon`
#      sampling the GPU once a second during each (OUT/dmon-RUN.txt): the default over three
#      seeds, the default without CUDA graphs, the long recipe, candidates for a GPU recipe,
#      and `--budget 1m` (issue 30).
# Each process is cut off after RUN_LIMIT seconds (default 150) so that the call ends in time.
#
#   bench/gpu.sh [OUT]        OUT default runs/gpu; the table is also written to OUT/table.md
#   PYTHON=...  interpreter with torch (CUDA build) and imclass's requirements (default
#               .venv/bin/python, else python3); imclass itself is taken from this checkout
#   DATA_DIR=... folder holding the four Fashion-MNIST IDX files, for a machine without the
#               Debian package or a network
#   ONLY=step|runs   one half only
#   DEVICE=cpu EXTRA="--subset 600 --epochs 1"   a dry run of the script's own code on a CPU
#
# Targets (issue 28, one H200, median of 3 seeds): the default >= 92.5% in <= 12 s, training
# >= 150,000 images/s (cnn) and >= 100,000 (rescnn), SM busy >= 60% while training; a GPU
# recipe >= 95.5% in <= 30 s and >= 96.0% in <= 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=${1:-runs/gpu}
RUN_LIMIT=${RUN_LIMIT:-150}
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA_FLAGS <<< "${EXTRA:-}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA=()
if [ -n "${DATA_DIR:-}" ]; then DATA=(--data-dir "$DATA_DIR"); fi

if [ "$DEVICE" = cpu ]; then
    "$PYTHON" bench/gpu_step.py --cpu-dry-run --out "$OUT" | tail -3
    ONLY=runs
else "$PYTHON" - <<'PY'
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
fi

if [ "${ONLY:-}" != "runs" ]; then
    "$PYTHON" bench/gpu_step.py --out "$OUT" | tee "$OUT/step.md"
fi
if [ "${ONLY:-}" = "step" ]; then exit 0; fi

train() {
    local name=$1; shift
    local dmon=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi dmon -s u -d 1 > "$OUT/dmon-$name.txt" 2>/dev/null &
        dmon=$!
    fi
    local status=0
    timeout "$RUN_LIMIT" "$PYTHON" -m imclass train --device "$DEVICE" --out "$OUT/$name" \
        --overwrite --quiet ${DATA[@]+"${DATA[@]}"} "$@" ${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"} \
        >"$OUT/$name.log" 2>&1 || status=$?
    if [ -n "$dmon" ]; then kill "$dmon" 2>/dev/null || true; fi
    "$PYTHON" - "$OUT/$name" "$*" "$status" "$OUT/dmon-$name.txt" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
run_dir, flags, status, dmon = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
sm = []
if dmon.exists():  # columns: gpu sm mem enc dec ...; the busy share of each second
    for line in dmon.read_text().splitlines():
        fields = line.split()
        if fields and not line.startswith("#") and fields[1].isdigit():
            sm.append(int(fields[1]))
busy = f"{statistics.mean(sm):.0f}% (max {max(sm)}%)" if sm else "-"
if status or not (run_dir / "metrics.json").exists():
    print(f"| {run_dir.name} | {flags or '(defaults)'} | failed or cut off (exit {status}) "
          f"| - | - | - | {busy} |")
    sys.exit(0)
test = json.loads((run_dir / "metrics.json").read_text())["test"]
run = json.loads((run_dir / "run.json").read_text())
rows = list(csv.DictReader((run_dir / "history.csv").open()))
speed = statistics.median(float(r["images_per_s"]) for r in rows[1:] or rows)
print(f"| {run_dir.name} | {flags or '(defaults)'} | {test['accuracy']:.2%} | "
      f"{run['total_seconds']:.1f} | {run['epochs_run']} | {speed:,.0f} | {busy} |")
PY
}

{
echo
echo "| run | flags | test accuracy | seconds (process start to report) | epochs | training images/s (median epoch after the first) | SM busy (mean of 1-s samples) |"
echo "|---|---|---:|---:|---:|---:|---:|"
for seed in 0 1 2; do train "default-s$seed" --seed "$seed"; done
train default-eager --cuda-graphs off
train long --recipe long
# GPU recipe candidates: ResNet-9 widths at batch 512 on all 60,000 training images
train resnet9-e16 --recipe long --widths 64,128,256,512 --batch-size 512 --lr 0.4 \
    --epochs 16 --val-fraction 0
train resnet9-e40 --recipe long --widths 64,128,256,512 --batch-size 512 --lr 0.4 \
    --epochs 40 --val-fraction 0
# issue 30's GPU target: one minute >= 96% (last, so that a call short of time loses only it)
train budget-1m --budget 1m
} | tee "$OUT/table.md"

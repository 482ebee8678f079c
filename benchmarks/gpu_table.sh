#!/usr/bin/env bash
# One short GPU run (issue 18, point 3): training and inference rows on the GPU, bf16 autocast,
# channels-last, torch.compile rows, the peers under the same settings, the device name in
# every output file. About 5-8 minutes on one H100/H200; run from the repository root:
#   bash benchmarks/gpu_table.sh            # writes benchmarks/results/*_gpu.{md,json}
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results}
REPS=${REPS:-6}
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_table.sh needs a CUDA device"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_device.txt"
# Training: effnet bf16 (+ fp32) against torchvision / timm fp32 and bf16 channels-last, compiled too.
for bs in 64; do
  timeout 420 python3 benchmarks/train_bf16.py --device cuda --batch-size "$bs" --reps "$REPS" \
    --threads 4 --compile --against torchvision,timm --out "$OUT" --tag "_gpu_b${bs}"
done
# Inference + training side by side in the engine (fp32 eager), with the GPU allocator's peaks.
timeout 240 python3 -m effnet benchmark efficientnet_b0 --device cuda --batch-size 64 \
  --reps "$REPS" --against timm,torchvision --json > "$OUT/b0_engine_gpu.json" || true
echo "wrote $OUT/train_bf16_gpu_b64.md and $OUT/b0_engine_gpu.json"

#!/usr/bin/env bash
# The paper-scale path on a GPU machine: configs/rafdb.yaml (ResNet-50, 224 px) for one epoch of
# each stage (warm-up, self-paced, semi-supervised with FAISS retrieval) on a RAF-DB-layout fixture,
# in bf16 and in fp16 (accelerate's gradient scaling), under `accelerate launch` with every visible
# GPU. FAISS searches on the GPU when faiss-gpu is installed. Prints images/s and peak memory.
#   bash benchmarks/gpu_check.sh [OUT_DIR] [IMAGES]      # defaults: runs/gpu_check 2048
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
IMAGES=${2:-2048}
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
python -c "from fer_robust.robust.retrieval import faiss_gpu_available as f; print('FAISS on the GPU:', f())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
rm -rf "$OUT"
python benchmarks/gpu_check.py fixture --root "$OUT/rafdb" --images "$IMAGES"
for precision in bf16 fp16; do
  accelerate launch --num_processes "$GPUS" --num_machines 1 --mixed_precision "$precision" \
    --dynamo_backend no tools/train.py --config configs/rafdb.yaml data.root="$OUT/rafdb" \
    model.pretrained_file=none mixed_precision="$precision" stages.0.epochs=1 \
    stages.1.epochs=1 stages.2.epochs=1 progress_bar=false output_dir="$OUT/run_$precision"
  python tools/test.py --checkpoint "$OUT/run_$precision" --split test
  python benchmarks/gpu_check.py report "$OUT/run_$precision"
done

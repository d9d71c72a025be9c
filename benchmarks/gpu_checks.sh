#!/usr/bin/env bash
# Device checks for a machine with an NVIDIA GPU and PyTorch: the CUDA tests (test/cuda), forward
# latency of the official and tiny presets per precision (bench_model.py), torch.compile, and
# training throughput with AMP. Results (logs + JSON) go to OUT_DIR; BENCHMARKS.md quotes them.
#   benchmarks/gpu_checks.sh OUT_DIR [DATA_DIR]
# DATA_DIR holds root/ + train.pkl (fusionocc-synth + fusionocc-prepare); it is exported as
# FUSIONOCC_TEST_DATA for the tests and used for the training throughput.
set -u
out=${1:?usage: gpu_checks.sh OUT_DIR [DATA_DIR]}
data=${2:-}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -n "$data" ] && export FUSIONOCC_TEST_DATA=$data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)" | tee -a "$out/gpu.txt"

step() { echo "== $*"; }
step "CUDA tests"
timeout 240 python3 -m pytest -q test/cuda 2>&1 | tee "$out/cuda_tests.txt"

step "forward latency"
for spec in "official bf16" "official fp16" "official fp32" "tiny fp32" "tiny bf16"; do
  set -- $spec
  timeout 120 python3 benchmarks/bench_model.py --preset "$1" --device cuda --precision "$2" --iters 20 --warmup 3 \
    --json "$out/bench_$1_$2.json" 2>&1 | tee -a "$out/bench.txt"
done
step "torch.compile, official bf16"
timeout 240 python3 benchmarks/bench_model.py --preset official --device cuda --precision bf16 --iters 20 --warmup 3 \
  --compile --skip-baseline --json "$out/bench_official_bf16_compile.json" 2>&1 | tee -a "$out/bench.txt"

if [ -n "$data" ]; then
  step "training throughput, official with AMP"
  timeout 180 python3 -m fusionocc_core.tools.train --config official --data-root "$data/root" --infos "$data/train.pkl" \
    --work-dir /tmp/train_official --device cuda --amp --max-iters 30 --log-interval 5 --checkpoint-interval 1000 \
    --num-workers 4 --no-progress 2>&1 | tee "$out/train_official.txt"
  cp /tmp/train_official/log.csv "$out/train_official_log.csv" 2>/dev/null
fi

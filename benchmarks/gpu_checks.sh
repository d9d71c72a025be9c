#!/usr/bin/env bash
# Device checks for a machine with an NVIDIA GPU and PyTorch, in one call (well under 10 minutes):
# the official preset's predict() latency (bf16, a realistic 250k-point cloud) now and, in the same
# run, of an OLD tree (OLD_TREE: a `git archive` of an earlier commit, for before/after figures),
# the sparse-conv forms, torch.compile, the node pipeline on a converted bag (decode -> assemble ->
# predict -> encode, p50/p99), a profile, the CUDA tests (test/cuda), then
# benchmarks/results/gpu_latest.json (copied to OUT_DIR; commit it from there).
#   benchmarks/gpu_checks.sh OUT_DIR [BAG_DIR] [OLD_TREE]
# Every step has its own time limit and writes its log/JSON under OUT_DIR/logs as it finishes; at
# the end OUT_DIR holds gpu_latest.json, summary.txt and logs.tgz (the lent machine returns few files).
set -u
dest=${1:?usage: gpu_checks.sh OUT_DIR [BAG_DIR] [OLD_TREE]}
bag=${2:-}
old=${3:-}
out=$dest/logs
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)" | tee -a "$out/gpu.txt"

step() { echo "== $(date +%T) $*"; }
bench() {  # bench NAME ARGS...: official bf16 predict() at 250k points
  local name=$1; shift
  timeout 150 python3 benchmarks/bench_model.py --preset official --device cuda --precision bf16 --iters 10 --warmup 3 \
    --json "$out/bench_$name.json" "$@" 2>&1 | tee "$out/bench_$name.txt"
}

step "official bf16, new (model(batch) and predict())"
bench new
if [ -n "$old" ] && [ -d "$old" ]; then
  step "official bf16, old tree ($old), same run"
  (cd "$old" && PYTHONPATH=$PWD timeout 150 python3 benchmarks/bench_model.py --preset official --device cuda \
    --precision bf16 --iters 10 --warmup 3 --points 250000 --skip-baseline --json "$out/bench_old.json") 2>&1 \
    | tee "$out/bench_old.txt"
fi
if [ -n "$bag" ]; then
  step "node pipeline on $bag, official bf16"
  timeout 150 python3 benchmarks/bench_node_pipeline.py "$bag" --preset official --device cuda --precision bf16 \
    --warmup 8 --json "$out/node_pipeline.json" 2>&1 | tee "$out/node_pipeline.txt"
fi
step "profile, official bf16 predict()"
timeout 120 python3 - "$out" <<'EOF' 2>&1 | tail -5
import os, sys, torch
out = sys.argv[1]
sys.path.insert(0, "benchmarks")
from bench_model import make_frames
from fusionocc_core.predictor import Predictor
pred = Predictor("official", device="cuda", precision="bf16")
frames = make_frames(7, (900, 1600), 250_000)
for f in frames[:4]:
    pred.predict(f)
acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
with torch.profiler.profile(activities=acts) as prof:
    for f in frames[4:]:
        pred.predict(f)
    torch.cuda.synchronize()
with open(os.path.join(out, "profile.txt"), "w") as fh:
    fh.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40) + "\n")
    fh.write(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40) + "\n")
print("profile of 3 predict() calls written")
EOF
step "sparse conv: pair rulebook (the previous algorithm) in the new tree"
bench pairs --sparse-conv pairs --skip-baseline
step "CUDA tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider test/cuda -k "not train_with_amp" 2>&1 | tee "$out/cuda_tests.txt" | tail -15
step "torch.compile, official bf16"
bench compile --compile --skip-baseline
step "SDPA kernels of the Swin window attention"
timeout 60 python3 benchmarks/bench_window_attention.py 2>&1 | tee "$out/attention.txt"
step "JPEG decoding of six 1600x900 images: cv2 serial, cv2 thread pool, nvJPEG batched"
timeout 60 python3 - <<'EOF' 2>&1 | tee "$out/decode.txt"
import time, statistics, cv2, numpy as np
from concurrent.futures import ThreadPoolExecutor
rng = np.random.default_rng(0)
imgs = [cv2.GaussianBlur(rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8), (0, 0), 2.0) for _ in range(6)]
jpgs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1] for im in imgs]
def t(fn, n=20):
    fn(); r = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); r.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(r)
pool = ThreadPoolExecutor(6)
print(f"jpeg sizes {[len(j) // 1024 for j in jpgs]} KiB")
print(f"cv2 serial {t(lambda: [cv2.imdecode(j, cv2.IMREAD_COLOR) for j in jpgs]):.1f} ms")
print(f"cv2 6 threads {t(lambda: list(pool.map(lambda j: cv2.imdecode(j, cv2.IMREAD_COLOR), jpgs))):.1f} ms")
try:
    import torch, torchvision.io as tio
    data = [torch.from_numpy(j.reshape(-1)) for j in jpgs]
    def gpu():
        tio.decode_jpeg(data, device="cuda"); torch.cuda.synchronize()
    print(f"nvJPEG batched {t(gpu):.1f} ms (torchvision {__import__('torchvision').__version__})")
except Exception as exc:
    print("nvJPEG unavailable:", exc)
EOF

step "summary"
python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import datetime, json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
new, old, pairs, comp, node = (load(n) for n in ("bench_new.json", "bench_old.json", "bench_pairs.json",
                                                 "bench_compile.json", "node_pipeline.json"))
import torch
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
       "date": datetime.date.today().isoformat(),
       "official_bf16_predict_ms_p50": new and new["predictor_ms"]["total"],
       "official_bf16_predict_points": new and new["args"]["points"],
       "official_bf16_compiled_predict_ms_p50": comp and comp["predictor_ms"]["total"],
       "node_pipeline_ms_p50": node and node["p50_ms"], "node_pipeline_ms_p99": node and node["p99_ms"],
       "node_pipeline_points_p50": node and node["points_p50"], "node_warmup_s": node and node["warmup_s"],
       "stages_ms": {k: v and v["predictor_ms"] for k, v in
                     (("new", new), ("old", old), ("new_pairs_sparse_conv", pairs), ("new_compiled", comp))},
       "model_batch_ms": new and new["baseline_ms"]}
os.makedirs("benchmarks/results", exist_ok=True)
for path in ("benchmarks/results/gpu_latest.json", os.path.join(out, "..", "gpu_latest.json")):
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
print(json.dumps(res, indent=1))
EOF
cp "$out/summary.txt" "$dest/summary.txt"
tar -czf "$dest/logs.tgz" -C "$out" . && rm -rf "$out"

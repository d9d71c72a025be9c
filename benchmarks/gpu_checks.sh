#!/usr/bin/env bash
# Device checks for a machine with an NVIDIA GPU and PyTorch, in one call (well under 10 minutes):
# the official preset's predict() latency (bf16, a realistic 250k-point cloud) now and, in the same
# run, of an OLD tree (OLD_TREE: a `git archive` of an earlier commit, for before/after figures),
# the node pipeline on a converted bag (decode -> assemble -> predict -> encode, p50/p99; nvJPEG and
# CPU-thread JPEG decoding), a profile (benchmarks/profile_predict.py), the sparse conv's row gather
# variants, the CUDA tests (test/cuda), torch.compile, then benchmarks/results/gpu_latest.json
# (copied to OUT_DIR; commit it from there). The old tree's predict() total includes its stage
# timers' device syncs: compare it with the new "total_with_stage_timers" as well as "total".
#   benchmarks/gpu_checks.sh OUT_DIR [BAG_DIR] [OLD_TREE]
# The lent machine lacks rosbags (node pipeline, CUDA tests): carry its wheels and install them with
# `python3 -m pip install --no-index --no-deps .whl/*.whl` first (plain `pip` there is another Python).
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

step "official bf16, new (predict(): stage table, then without stage timers)"
bench new --skip-baseline
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
  step "node pipeline, markers only (rviz alone subscribes: the node builds only what has a subscriber)"
  timeout 150 python3 benchmarks/bench_node_pipeline.py "$bag" --preset official --device cuda --precision bf16 \
    --warmup 8 --outputs markers --json "$out/node_pipeline_markers.json" 2>&1 | tee "$out/node_pipeline_markers.txt"
  step "node pipeline, JPEGs decoded on CPU threads (same run)"
  timeout 150 python3 benchmarks/bench_node_pipeline.py "$bag" --preset official --device cuda --precision bf16 \
    --warmup 8 --cpu-decode --json "$out/node_pipeline_cpu_decode.json" 2>&1 | tee "$out/node_pipeline_cpu_decode.txt"
fi
step "profile, official bf16 predict() (no stage timers)"
timeout 120 python3 benchmarks/profile_predict.py --preset official --precision bf16 --points 250000 --frames 2 \
  --out "$out/profile" 2>&1 | tail -3
step "row gather of the table sparse conv: index_select vs torch.take of words (official stage shapes)"
timeout 60 python3 - <<'EOF' 2>&1 | tee "$out/gather.txt"
import torch, time
from fusionocc_core.ops.sparse_conv import _gather_rows
dev = "cuda"
for M, C in ((230_000, 16), (150_000, 32), (100_000, 48), (60_000, 64)):
    feats = torch.randn(M + 1, C, device=dev, dtype=torch.bfloat16)
    idx = torch.randint(0, M + 1, (min(M, 2_000_000 // 27) * 27,), device=dev)
    def t(fn, n=20):
        fn(); torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize(); return (time.perf_counter() - t0) / n * 1e3
    a, b = t(lambda: feats.index_select(0, idx)), t(lambda: _gather_rows(feats, idx))
    i64 = t(lambda: torch.gather(feats.view(torch.int64), 0, idx[:, None].expand(-1, C // 4)))
    assert torch.equal(feats.index_select(0, idx), _gather_rows(feats, idx))
    print(f"C={C} rows={idx.numel()}: index_select {a:.3f} ms, take of words {b:.3f} ms ({a / b:.1f}x), "
          f"gather with an expanded index {i64:.3f} ms")
EOF
step "CUDA tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider test/cuda -k "not train_with_amp" 2>&1 | tee "$out/cuda_tests.txt" | tail -15
step "torch.compile, official bf16"
bench compile --compile --skip-baseline
if [ -n "$bag" ]; then
  step "node pipeline, compiled (warm-up includes compilation)"
  timeout 240 python3 benchmarks/bench_node_pipeline.py "$bag" --preset official --device cuda --precision bf16 \
    --warmup 8 --compile --json "$out/node_pipeline_compiled.json" 2>&1 | tee "$out/node_pipeline_compiled.txt"
fi
step "summary"
python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import datetime, json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
new, old, comp, node, node_cpu, node_comp, node_markers = (load(n) for n in (
    "bench_new.json", "bench_old.json", "bench_compile.json", "node_pipeline.json", "node_pipeline_cpu_decode.json",
    "node_pipeline_compiled.json", "node_pipeline_markers.json"))
import torch
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
       "date": datetime.date.today().isoformat(),
       "official_bf16_predict_ms_p50": new and new["predictor_ms"]["total"],
       "official_bf16_predict_points": new and new["args"]["points"],
       "official_bf16_compiled_predict_ms_p50": comp and comp["predictor_ms"]["total"],
       "node_pipeline_ms_p50": node and node["p50_ms"], "node_pipeline_ms_p99": node and node["p99_ms"],
       "node_pipeline_points_p50": node and node["points_p50"], "node_warmup_s": node and node["warmup_s"],
       "node_pipeline_jpeg_decoding": node and node.get("jpeg_decoding"),
       "node_pipeline_occupied_voxels_p50": node and node["occupied_voxels_p50"],
       "node_pipeline_stages_p50_ms": node and node["stages_p50_ms"],
       "node_pipeline_cpu_decode_ms_p50": node_cpu and node_cpu["p50_ms"],
       "node_pipeline_cpu_decode_ms_p99": node_cpu and node_cpu["p99_ms"],
       "node_pipeline_markers_only_ms_p50": node_markers and node_markers["p50_ms"],
       "node_pipeline_markers_only_ms_p99": node_markers and node_markers["p99_ms"],
       "node_pipeline_compiled_ms_p50": node_comp and node_comp["p50_ms"],
       "node_pipeline_compiled_ms_p99": node_comp and node_comp["p99_ms"],
       "stages_ms": {k: v and v["predictor_ms"] for k, v in
                     (("new", new), ("old", old), ("new_compiled", comp))},
       "model_batch_ms": new and new["baseline_ms"]}
os.makedirs("benchmarks/results", exist_ok=True)
for path in ("benchmarks/results/gpu_latest.json", os.path.join(out, "..", "gpu_latest.json")):
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
print(json.dumps(res, indent=1))
EOF
cp "$out/summary.txt" "$dest/summary.txt"
tar -czf "$dest/logs.tgz" -C "$out" . && rm -rf "$out"

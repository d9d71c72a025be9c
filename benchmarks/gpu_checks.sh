#!/usr/bin/env bash
# Device checks for a machine with an NVIDIA GPU and PyTorch, in one call that ends within a time
# budget (GPU_CHECKS_BUDGET_S, default 500 s: a lent machine allows 600 s per command). Steps run in
# order of value and each gets at most what is left; a step that no longer fits is skipped and said so:
#   1. the official preset's predict() latency (bf16, a realistic 250k-point cloud; stage table, then
#      without stage timers) now, and 2. of an OLD tree (a `git archive` of an earlier commit) in the
#      same run; 3. the node pipeline on a converted bag (decode -> assemble -> predict -> encode,
#      p50/p99); 4. the CUDA tests (test/cuda); 5. predict() with the LiDAR encoder's sparse convs as
#      one Triton kernel (--sparse-conv triton) and 6. with torch.compile; 7. the node pipeline with
#      the Triton kernel and 8. compiled; 9. a profile (benchmarks/profile_predict.py: kernels, syncs
#      by caller); 10. the sparse conv's row gather variants and 11. the lift plan (new and old);
#      12. the node pipeline with the markers alone subscribed.
# After every step benchmarks/results/gpu_latest.json (commit it) and OUT_DIR/gpu_latest.json are
# rewritten from what has finished, so a run cut short still reports. The old tree's predict() total
# includes its stage timers' device syncs: compare it with the new "total_with_stage_timers".
#   benchmarks/gpu_checks.sh OUT_DIR [BAG_DIR] [OLD_TREE]
# The lent machine lacks rosbags (node pipeline, CUDA tests) and has no internet: benchmarks/gpu_prepare.sh
# makes the wheels (.whl/), the bag (.gpu_data/bag) and the old tree here; carry them. This script
# installs the wheels (`python3 -m pip install --no-index --no-deps .whl/*.whl`; plain `pip` there is
# another Python) when rosbags is missing.
# GPU_CHECKS_DRY_RUN=1 runs every step on the CPU with the tiny preset and one iteration: it checks
# the script (steps, JSON, summary) on a machine without a GPU; its figures mean nothing.
set -u
dest=${1:?usage: gpu_checks.sh OUT_DIR [BAG_DIR] [OLD_TREE]}
bag=${2:-}
old=${3:-}
old_abs=
mkdir -p "$dest/logs"
dest=$(cd "$dest" && pwd)
out=$dest/logs
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
case $python in */*) python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python") ;; esac  # absolute: steps change directory
start=$SECONDS
deadline=$((start + ${GPU_CHECKS_BUDGET_S:-500}))
if [ "${GPU_CHECKS_DRY_RUN:-0}" = 1 ]; then
  dev=cpu preset=tiny precision=fp32 iters=1 warmup=0 points=20000 node_warmup=2 compile=0 triton=0  # CUDA only
  export FUSIONOCC_TEST_DEVICE=cpu GPU_CHECKS_RESULTS=$dest  # never overwrite the committed results
else
  dev=cuda preset=official precision=bf16 iters=10 warmup=3 points=250000 node_warmup=8 compile=1 triton=1
  export GPU_CHECKS_RESULTS=benchmarks/results
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
if [ -d .whl ] && ! $python -c "import rosbags" 2>/dev/null; then
  $python -m pip install --no-index --no-deps -q .whl/*.whl 2>&1 | tail -3
fi
$python -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)" \
  | tee -a "$out/gpu.txt"

# run NAME MAX_S MIN_S CMD...: CMD under `timeout min(MAX_S, time left)`, output in $out/NAME.txt;
# skipped when less than MIN_S is left; the summary is rewritten afterwards
run() {
  local name=$1 max=$2 min=$3 left
  shift 3
  left=$((deadline - SECONDS))
  if [ "$left" -lt "$min" ]; then
    echo "== $(date +%T) $name: skipped (${left} s left, needs ${min})" | tee -a "$out/skipped.txt"
    return
  fi
  echo "== $(date +%T) $name (limit $((max < left ? max : left)) s)"
  timeout $((max < left ? max : left)) "$@" > "$out/$name.txt" 2>&1
  echo "   exit $? at $((SECONDS - start)) s" | tee -a "$out/$name.txt"
  tail -n 25 "$out/$name.txt"
  summarize
}
model=($python benchmarks/bench_model.py --preset $preset --device $dev --precision $precision --iters $iters
       --warmup $warmup --points $points --skip-baseline)  # predict() at $points points
node=($python benchmarks/bench_node_pipeline.py "$bag" --preset $preset --device $dev --precision $precision
      --warmup $node_warmup)  # the node's per-frame path over $bag
summarize() {
  $python - "$out" "$dest" <<'EOF' > "$out/summary.txt" 2>&1
import datetime, json, os, sys
out, dest = sys.argv[1:3]
def load(name):
    p = os.path.join(out, name)
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
new, old, comp, tri = load("bench_new.json"), load("bench_old.json"), load("bench_compile.json"), load("bench_triton.json")
node, node_comp, node_markers = load("node_pipeline.json"), load("node_pipeline_compiled.json"), load("node_pipeline_markers.json")
node_tri = load("node_pipeline_triton.json")
import torch
res = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (dry run)",
       "torch": torch.__version__, "date": datetime.date.today().isoformat(),
       "official_bf16_predict_ms_p50": new and new["predictor_ms"]["total"],
       "official_bf16_predict_points": new and new["args"]["points"],
       "official_bf16_compiled_predict_ms_p50": comp and comp["predictor_ms"]["total"],
       "official_bf16_triton_sparse_conv_predict_ms_p50": tri and tri["predictor_ms"]["total"],
       "node_pipeline_ms_p50": node and node["p50_ms"], "node_pipeline_ms_p99": node and node["p99_ms"],
       "node_pipeline_points_p50": node and node["points_p50"], "node_warmup_s": node and node["warmup_s"],
       "node_pipeline_jpeg_decoding": node and node.get("jpeg_decoding"),
       "node_pipeline_occupied_voxels_p50": node and node["occupied_voxels_p50"],
       "node_pipeline_stages_p50_ms": node and node["stages_p50_ms"],
       "node_pipeline_markers_only_ms_p50": node_markers and node_markers["p50_ms"],
       "node_pipeline_markers_only_ms_p99": node_markers and node_markers["p99_ms"],
       "node_pipeline_triton_sparse_conv_ms_p50": node_tri and node_tri["p50_ms"],
       "node_pipeline_triton_sparse_conv_ms_p99": node_tri and node_tri["p99_ms"],
       "node_pipeline_compiled_ms_p50": node_comp and node_comp["p50_ms"],
       "node_pipeline_compiled_ms_p99": node_comp and node_comp["p99_ms"],
       "node_pipeline_compiled_warmup_s": node_comp and node_comp["warmup_s"],
       "stages_ms": {k: v and v["predictor_ms"] for k, v in (("new", new), ("old", old), ("new_compiled", comp),
                                                               ("new_triton_sparse_conv", tri))},
       "steps_skipped": open(os.path.join(out, "skipped.txt")).read().splitlines()
                        if os.path.exists(os.path.join(out, "skipped.txt")) else []}
results = os.environ["GPU_CHECKS_RESULTS"]
os.makedirs(results, exist_ok=True)
for path in {os.path.join(results, "gpu_latest.json"), os.path.join(dest, "gpu_latest.json")}:
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(path + ".tmp", path)
print(json.dumps(res, indent=1))
EOF
}

run bench_new 150 60 "${model[@]}" --json "$out/bench_new.json"
if [ -n "$old" ] && [ -d "$old" ]; then
  old_abs=$(cd "$old" && pwd)
  run bench_old 150 60 env -C "$old_abs" PYTHONPATH="$old_abs" "${model[@]}" --json "$out/bench_old.json"
fi
[ -n "$bag" ] && run node_pipeline 150 45 "${node[@]}" --json "$out/node_pipeline.json"
run cuda_tests 200 60 $python -m pytest -q -p no:cacheprovider test/cuda -k "not train_with_amp"
[ "$triton" = 1 ] && run bench_triton 150 60 "${model[@]}" --sparse-conv triton --json "$out/bench_triton.json"
[ "$compile" = 1 ] && run bench_compile 200 90 "${model[@]}" --compile --json "$out/bench_compile.json"
[ "$triton" = 1 ] && [ -n "$bag" ] && run node_pipeline_triton 150 45 "${node[@]}" --sparse-conv triton \
  --json "$out/node_pipeline_triton.json"
[ "$compile" = 1 ] && [ -n "$bag" ] && run node_pipeline_compiled 240 120 "${node[@]}" --compile \
  --json "$out/node_pipeline_compiled.json"
run profile 120 60 $python benchmarks/profile_predict.py --preset $preset --precision $precision --points $points \
  --frames 2 --device $dev --out "$out/profile"
run gather 60 15 $python benchmarks/bench_gather.py --device $dev
run lift_plan 60 15 $python benchmarks/bench_lift_plan.py --device $dev ${old_abs:+--tree "$old_abs"}
[ -n "$bag" ] && run node_pipeline_markers 120 45 "${node[@]}" --outputs markers --json "$out/node_pipeline_markers.json"
summarize
cp "$out/summary.txt" "$dest/summary.txt"
tar -czf "$dest/logs.tgz" -C "$out" . && rm -rf "$out"
echo "== $(date +%T) done in $((SECONDS - start)) s; $dest: gpu_latest.json summary.txt logs.tgz"

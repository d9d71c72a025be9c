#!/usr/bin/env bash
# Train the demo's tiny model on a lent GPU in one call (a few minutes), the run behind the shipped
# demo/tiny_synth.pth (BENCHMARKS.md, "Training curve"):
#   benchmarks/gpu_train_demo.sh OUT_DIR INFOS_DIR [TRAIN_MINUTES]
# The GPU machine has no nuScenes devkit, so the info files come prepared (INFOS_DIR/train.pkl and
# val.pkl, written by `benchmarks/train_curve.py --probe-only` with the same arguments on a machine
# that has it, plus the devkit's nuscenes/utils/splits.py, see below); the synthetic world itself is regenerated here (fusionocc-synth is deterministic
# for a seed) and every file the infos name is checked before training. OUT_DIR gets the EMA
# checkpoint, the logs, results.json and the scores.
set -u
dest=${1:?usage: gpu_train_demo.sh OUT_DIR INFOS_DIR [TRAIN_MINUTES]}
infos=${2:?usage: gpu_train_demo.sh OUT_DIR INFOS_DIR [TRAIN_MINUTES]}
minutes=${3:-3}
work=${WORK:-/tmp/train_demo}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$dest" "$work"
# fusionocc-synth names scenes from the devkit's split lists; without the devkit (and its heavy
# dependencies) on the GPU machine, INFOS_DIR/splits.py (the devkit's nuscenes/utils/splits.py,
# carried as data) serves them, its NuScenes import (type hints only) replaced
if ! python3 -c "import nuscenes" 2>/dev/null && [ -f "$infos/splits.py" ]; then
  shim=$work/nuscenes_lists
  mkdir -p "$shim/nuscenes/utils" && touch "$shim/nuscenes/__init__.py" "$shim/nuscenes/utils/__init__.py"
  sed 's/^from nuscenes import NuScenes$/NuScenes = object  # only in type hints/' "$infos/splits.py" > "$shim/nuscenes/utils/splits.py"
  export PYTHONPATH=$shim:$PYTHONPATH
fi
cp "$infos/train.pkl" "$infos/val.pkl" "$work/"
# the same world as INFOS_DIR's (see train_curve.py --help for each option)
args=(--work "$work" --version v1.0-trainval --scenes 40 --val-scenes 2 --keyframes 10 --data-seed 1)
echo "== $(date +%T) synthetic world"
timeout 240 python3 benchmarks/train_curve.py "${args[@]}" --synth-workers 15 --device cuda --probe-only \
  --probe-iters 2 --num-workers 15 2>&1 | tail -3
python3 - "$work" <<'EOF' || exit 3
import sys
from pathlib import Path
from fusionocc_core.data.safe_pickle import load_path
work = Path(sys.argv[1]); root = work / "data"
missing, total = [], 0
for split in ("train", "val"):
    data = load_path(work / f"{split}.pkl")
    for info in data["infos"]:
        paths = [info["lidar_path"], info["occ_path"] + "/labels.npz"] + [c["data_path"] for c in info["cams"].values()]
        total += len(paths)
        missing += [p for p in paths if not (root / p).is_file()]
print(f"infos name {total} files, {len(missing)} missing", missing[:3])
sys.exit(1 if missing else 0)
EOF
rm -rf "$work/probe"
echo "== $(date +%T) probe + training (${minutes} min) + evaluation"
# 2026-12-04 on an H200 this ran at 4.8 s per iteration (batch 4, 15 workers, deterministic
# algorithms): slower per sample than expected and not yet diagnosed, hence --nondeterministic
# and the loader's share printed from the probe's log (samples/s per logged iteration)
timeout 360 python3 benchmarks/train_curve.py "${args[@]}" --device cuda --num-workers 15 --batch-size 4 \
  --threads 4 --probe-iters 40 --train-minutes "$minutes" --val-points 2 --log-every 25 --nondeterministic \
  2>&1 | tail -40
tail -5 "$work/probe/log.csv" 2>/dev/null
cp "$work"/results.json "$work"/baselines.json "$work"/eval_*.json "$dest/" 2>/dev/null
cp "$work"/run/log.csv "$work"/run/val.csv "$dest/" 2>/dev/null
# the shipped form: the EMA weights and the config only (as demo/tiny_synth.pth)
python3 - "$work/run/latest.pth" "$dest/tiny_synth.pth" <<'EOF'
import sys
from fusionocc_core import build_model, load_config
from fusionocc_core.checkpoint import load_model_weights, save_checkpoint
cfg = load_config("tiny")
model = build_model(cfg)
print("loaded", load_model_weights(model, sys.argv[1]))
save_checkpoint(sys.argv[2], model, cfg)
EOF
ls -la "$dest"

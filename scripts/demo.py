"""The demo (`make demo`): synthetic nuScenes-format scenes -> rosbag2 -> live node over DDS.

Steps, each skipped when its output already exists (delete demo_output/ to start over):
  1. fusionocc-synth      a small synthetic world (train scenes + one held-out scene)
  2. fusionocc-prepare    info pickles for the train and the held-out scenes
  3. model               the tiny checkpoint shipped in demo/ (trained by benchmarks/train_curve.py on
                          other synthetic scenes), or, with DEMO_TRAIN_ITERS=N, fusionocc-train for N
                          iterations on the demo's own training scenes
  4. fusionocc-convert    the held-out scene -> rosbag2 (MCAP)
  5. live graph           fusionocc-node + fusionocc-record, fed by fusionocc-play over loopback DDS
  6. score + pictures     fusionocc-bag-extract -> fusionocc-score (score.json: mIoU and per-class
                          IoU over the camera mask); one key-frame drawn predicted vs ground truth,
                          as a top view and a low oblique 3D view, unscored voxels faded on both
Leaves demo_output/occupancy.png, demo_output/occupancy_3d.png, demo_output/score.json and
demo_output/occupancy_bag/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "demo_output"
BIN = Path(sys.executable).parent
VERSION = "v1.0-mini"
SCENES = int(os.environ.get("DEMO_SCENES", "4"))
KEYFRAMES = int(os.environ.get("DEMO_KEYFRAMES", "10"))
TRAIN_ITERS = int(os.environ.get("DEMO_TRAIN_ITERS", "0"))
SHIPPED_CHECKPOINT = REPO / "demo" / "tiny_synth.pth"


def step(title: str) -> None:
    print(f"\n=== demo: {title}", flush=True)


def run(*cmd: str | Path) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(BIN / str(cmd[0])) if (BIN / str(cmd[0])).exists() else str(cmd[0]), *map(str, cmd[1:])],
                   check=True, cwd=REPO)


def main() -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    t0 = time.monotonic()
    OUT.mkdir(exist_ok=True)
    data = OUT / "data"
    if not data.exists():
        step(f"1/6 synthetic nuScenes-format world ({SCENES} scenes x {KEYFRAMES} key-frames)")
        run("fusionocc-synth", data, "--scenes", SCENES, "--keyframes", KEYFRAMES, "--seed", "7", "--version", VERSION)

    train_infos, val_infos = OUT / "infos_train.pkl", OUT / "infos_val.pkl"
    if not val_infos.exists():
        step("2/6 info files (mini_train scenes for training, a mini_val scene held out)")
        run("fusionocc-prepare", "--data-root", data, "--version", VERSION, "--split", "train", "--out", train_infos, "--quiet")
        run("fusionocc-prepare", "--data-root", data, "--version", VERSION, "--split", "val", "--out", val_infos, "--quiet")
    from fusionocc_core.data.io import read_infos  # the allow-list loader, as every tool

    val = read_infos(val_infos)["infos"]
    scene = val[0]["scene_name"]
    scene_frames = [i for i in val if i["scene_name"] == scene]

    work = OUT / "train"
    if TRAIN_ITERS > 0 or not SHIPPED_CHECKPOINT.exists():
        checkpoint = work / "latest.pth"
        iters = TRAIN_ITERS or 150
        if not checkpoint.exists():
            step(f"3/6 train the tiny preset for {iters} iterations on CPU")
            run("fusionocc-train", "--config", "tiny", "--data-root", data, "--infos", train_infos, "--work-dir", work,
                "--max-iters", iters, "--device", "cpu", "--threads", "1", "--overwrite")  # a killed run's leftovers
    else:
        checkpoint = SHIPPED_CHECKPOINT
        step(f"3/6 model: {checkpoint.relative_to(REPO)} (set DEMO_TRAIN_ITERS=N to train one instead)")

    bags = OUT / "bags"
    if not (bags / scene).exists():
        step(f"4/6 convert held-out scene {scene} to rosbag2")
        run("fusionocc-convert", "--data-root", data, "--version", VERSION, "--scenes", scene, "--out", bags)

    step("5/6 live graph: fusionocc-play -> fusionocc_occupancy node -> fusionocc-record (loopback DDS)")
    from fusionocc_ros.live_run import run_live

    out_bag = OUT / "occupancy_bag"
    if out_bag.exists():
        import shutil

        shutil.rmtree(out_bag)
    result = run_live(bags / scene, out_bag, checkpoint, REPO / "config" / "occ_node.yaml",
                      expected_frames=len(scene_frames), overrides={"model.config": "tiny", "inference.queue_size": 8}, rate=0.1,
                      log_dir=OUT)
    print(result.recorder_log.strip().splitlines()[-1] if result.recorder_log.strip() else "(no recorder output)")
    if not out_bag.exists():
        print(result.node_log[-3000:], file=sys.stderr)
        print("demo: the node produced no output bag", file=sys.stderr)
        return 1

    step("6/6 score the recorded occupancy and draw it")
    preds = OUT / "predictions"
    if preds.exists():
        import shutil

        shutil.rmtree(preds)
    run("fusionocc-bag-extract", out_bag, "--infos", val_infos, "--out", preds)
    run("fusionocc-score", "--pred-dir", preds, "--gt-dir", data / "gts", "--mask", "camera", "--allow-missing",
        "--json", OUT / "score.json")

    from fusionocc_core.tools.score import load_ground_truth, load_prediction
    from fusionocc_core.viz import save_comparison, save_oblique_comparison

    score = json.loads((OUT / "score.json").read_text())
    predicted = [f for f in scene_frames if (preds / f"{f['token']}.npz").exists()]  # the node may drop one
    shown = predicted[len(predicted) // 2]
    pred = load_prediction(preds / f"{shown['token']}.npz")
    gt = load_ground_truth(data / shown["occ_path"] / "labels.npz", mask="camera")
    picture = dict(title=f"{scene}, key-frame {scene_frames.index(shown) + 1}/{len(scene_frames)} "
                         f"(sample {shown['token'][:8]})",
                   names=("predicted (live node, tiny model)", "ground truth (Occ3D format)"),
                   scene_miou=score["miou"], scene_samples=score["num_samples"])
    top = save_comparison(pred, gt.semantics, gt.mask_camera, OUT / "occupancy.png", **picture)
    save_oblique_comparison(pred, gt.semantics, gt.mask_camera, OUT / "occupancy_3d.png", **picture)
    print(top.caption)
    print(f"\ndemo: done in {time.monotonic() - t0:.0f} s - mIoU {score['miou']:.2f} over {score['num_samples']} "
          f"key-frames; see demo_output/occupancy.png, occupancy_3d.png, score.json, occupancy_bag/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Node latency with the tiny preset on CPU: per stage (in-process pipeline) and end to end over DDS.

  .venv/bin/python benchmarks/bench_node.py [--keyframes 16] [--rate 1.0] [--threads 2]

1. Generates one synthetic scene, converts it to a bag, saves a seeded tiny checkpoint.
2. Feeds the bag through OccupancyPipeline in this process (what the node's worker runs) and
   reports the median per-stage time (assembly, model stages, encoders).
3. Plays the bag into the live node (fusionocc-play -> fusionocc_occupancy -> fusionocc-record)
   and reports the end-to-end latency (publish time - LiDAR stamp, the node's own measurement,
   read from the recorded /diagnostics) with sim time off: it includes DDS transport of 6 JPEGs
   and one cloud, decoding, inference and encoding. The bag plays with /clock and the node on sim
   time, at --rate (1.0 = the sensors' pace: the worker then skips sets it cannot keep up with);
   receipt_to_publish is the same on the steady clock, from the LiDAR message's arrival.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keyframes", type=int, default=16, help="key-frames in the generated scene")
    ap.add_argument("--rate", type=float, default=1.0, help="playback rate of the live part (1.0 = recorded pace)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 30))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    from rosbags.rosbag2 import Reader

    from fusionocc_core import build_model, load_config
    from fusionocc_core.checkpoint import save_checkpoint
    from fusionocc_core.predictor import Predictor
    from fusionocc_synth import generate
    from fusionocc_ros.live_run import run_live
    from fusionocc_ros.params import load_params_file, pipeline_settings
    from fusionocc_ros import topics
    from fusionocc_ros.pipeline import OccupancyPipeline
    from rosbag_tools import convert
    from rosbag_tools.typestore import get_store

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    data = generate(tmp / "data", scenes=1, keyframes=args.keyframes, seed=5)
    convert.main(["--data-root", str(data), "--version", "v1.0-mini", "--out", str(tmp / "bags")])
    (bag,) = (tmp / "bags").iterdir()
    cfg = load_config("tiny")
    torch.manual_seed(0)
    ckpt = tmp / "tiny.pth"
    save_checkpoint(ckpt, build_model(cfg), cfg)

    params = load_params_file(REPO / "config" / "occ_node.yaml")
    pipeline = OccupancyPipeline(cfg, Predictor(cfg, checkpoint=ckpt), pipeline_settings(params))
    store = get_store()
    cams = {topics.image_topic(c): c for c in cfg.data.cameras}
    infos = {topics.camera_info_topic(c): c for c in cfg.data.cameras}
    timings: list[dict[str, float]] = []
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/lidar_top":
                sets = pipeline.add_lidar(msg)
            elif conn.topic in cams:
                sets = pipeline.add_camera(cams[conn.topic], msg)
            elif conn.topic in infos:
                sets = pipeline.add_camera_info(infos[conn.topic], msg)
            elif conn.topic in ("/tf", "/tf_static"):
                sets = pipeline.add_tf(msg, static=conn.topic == "/tf_static")
            else:
                sets = []
            for s in sets:
                result = pipeline.infer(s)
                if result is not None:
                    timings.append(result.timings_ms)
        for s in pipeline.flush():
            result = pipeline.infer(s)
            if result is not None:
                timings.append(result.timings_ms)
    steady = timings[1:] or timings  # the first frame pays one-off costs (allocator, rank caches)
    print(f"in-process pipeline, tiny, {args.threads} threads, {len(steady)} frames (first excluded): median ms")
    for stage in steady[0]:
        print(f"  {stage:<24}{statistics.median(t[stage] for t in steady):9.1f}")

    t0 = time.monotonic()
    result = run_live(bag, tmp / "live", ckpt, REPO / "config" / "occ_node.yaml", expected_frames=args.keyframes,
                      overrides={"model.config": "tiny", "diagnostics.period_s": 0.5}, rate=args.rate,
                      timeout_s=120 + 10 * args.keyframes / args.rate, log_dir=tmp, sim_time=True,
                      settle_s=15)
    diag = []
    with Reader(tmp / "live") as reader:
        conns = [c for c in reader.connections if c.topic == "/diagnostics"]
        for conn, _, raw in reader.messages(connections=conns):
            diag.append(store.deserialize_cdr(raw, conn.msgtype))
    with_latency = [d for d in diag if any(kv.key.startswith("end_to_end") for s in d.status for kv in s.values)]
    last = {kv.key: kv.value for s in (with_latency or diag)[-1].status for kv in s.values}
    print(f"live node over loopback DDS ({time.monotonic() - t0:.0f} s), from its last /diagnostics:")
    for key in sorted(k for k in last if k.startswith(("end_to_end", "receipt", "predict", "assemble", "encode"))
                      or k.startswith(("drops.superseded", "frames_"))):
        print(f"  {key:<28}{last[key]:>10}")
    return 0 if result.node_returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

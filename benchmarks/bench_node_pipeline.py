"""Per-frame latency of the node's own code path on a converted bag: decode -> sync/assemble ->
predict -> encode, as `OccupancyPipeline.infer` runs it in the node's worker (no DDS).

    python benchmarks/bench_node_pipeline.py BAG --preset official --device cuda --precision bf16 \
        [--compile] [--sparse-conv triton] [--outputs markers ...] [--checkpoint CKPT] [--warmup 3] [--json out.json]

Every message of BAG (e.g. from `fusionocc-convert`) goes through the pipeline in bag order, as
`fusionocc-replay` does; each synchronized set is inferred on a worker thread, as in the node (a
worker's malloc arena keeps its freed pages, the main thread's returns them: the same 28 MB of
output messages cost ~15 ms more in page faults there), and timed from the start of `infer`
(assembly: JPEG decoding, TF, motion compensation) to its encoded output messages (--outputs: those
with a subscriber; default every output enabled in --params). The first
--warmup sets are not counted; `Predictor.warmup()` runs before (as the node does at start-up) and
its time is reported. Prints p50/p99 of the total and the median of every stage.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusionocc_core.inference_options import PRECISION_NAMES, SPARSE_CONV_ALGORITHMS  # noqa: E402  (light)
from fusionocc_ros.params import OUTPUTS  # noqa: E402  (light: no torch, no rclpy)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("bag", type=Path, help="a rosbag2 directory written by fusionocc-convert")
    ap.add_argument("--preset", default="official", help="model preset or YAML config")
    ap.add_argument("--checkpoint", default=None, help="checkpoint to load (default: seeded random weights)")
    ap.add_argument("--device", default="cuda", help="'cpu' or 'cuda[:N]'")
    ap.add_argument("--precision", default="bf16", choices=PRECISION_NAMES, help="autocast dtype")
    ap.add_argument("--compile", action="store_true", help="torch.compile the dense stages")
    ap.add_argument("--sparse-conv", default="auto", choices=SPARSE_CONV_ALGORITHMS,
                    help="sparse conv form (auto: table on CUDA, pairs on CPU; triton: the table by one Triton kernel)")
    ap.add_argument("--warmup", type=int, default=3, help="synchronized sets not counted at the start")
    ap.add_argument("--cpu-decode", action="store_true",
                    help="decode JPEGs with OpenCV on CPU threads even where nvJPEG (torchvision) is available")
    ap.add_argument("--outputs", nargs="*", default=None, choices=OUTPUTS,
                    help="outputs encoded per frame, as the node encodes only those with a subscriber (default: all enabled)")
    ap.add_argument("--params", type=Path, default=REPO / "config" / "occ_node.yaml", help="node parameters YAML")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    return _run(ap.parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    """Predictor + pipeline over the bag (main's work)."""
    import torch
    from rosbags.rosbag2 import Reader

    from fusionocc_core.classes import FREE_LABEL
    from fusionocc_core.config import load_config
    from fusionocc_core.predictor import Predictor
    from fusionocc_ros import topics
    from fusionocc_ros.params import load_params_file, pipeline_settings
    from fusionocc_ros.pipeline import OccupancyPipeline, freeze_startup_objects
    from rosbag_tools.typestore import get_store

    cfg = load_config(args.preset)
    torch.manual_seed(0)
    predictor = Predictor(cfg, checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                          compile=args.compile, sparse_conv=args.sparse_conv)
    warmup_s = predictor.warmup()
    pipeline = OccupancyPipeline(cfg, predictor, pipeline_settings(load_params_file(args.params)),
                                 gpu_jpeg=not args.cpu_decode)
    store = get_store()
    freeze_startup_objects()  # as the node does once it is ready
    totals: list[float] = []
    stages: list[dict[str, float]] = []
    points: list[int] = []
    occupied: list[int] = []  # non-free voxels per frame: the encoders' cost grows with it
    seen = 0

    worker = ThreadPoolExecutor(1, thread_name_prefix="fusionocc_inference")  # the node's worker thread

    def timed_infer(s) -> tuple[object, float]:
        t0 = time.perf_counter()
        result = pipeline.infer(s, outputs=args.outputs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return result, (time.perf_counter() - t0) * 1e3

    def infer(sets) -> None:
        nonlocal seen
        for s in sets:
            result, ms = worker.submit(timed_infer, s).result()
            seen += 1
            if result is not None and seen > args.warmup:
                totals.append(ms)
                stages.append(result.timings_ms)
                points.append(predictor.last_num_points[0])
                occupied.append(int((result.labels != FREE_LABEL).sum()))

    cams = {topics.image_topic(c): c for c in cfg.data.cameras}
    infos = {topics.camera_info_topic(c): c for c in cfg.data.cameras}
    with Reader(args.bag) as reader:
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics.LIDAR:
                infer(pipeline.add_lidar(msg))
            elif conn.topic in cams:
                infer(pipeline.add_camera(cams[conn.topic], msg))
            elif conn.topic in infos:
                infer(pipeline.add_camera_info(infos[conn.topic], msg))
            elif conn.topic in (topics.TF, topics.TF_STATIC):
                infer(pipeline.add_tf(msg, static=conn.topic == topics.TF_STATIC))
        infer(pipeline.flush())
    if not totals:
        print("bench_node_pipeline: no synchronized set was inferred (too few frames for --warmup?)", file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    result = {
        "device": name, "torch": torch.__version__, "preset": cfg.name, "precision": args.precision,
        "compile": args.compile, "sparse_conv": args.sparse_conv, "outputs": list(pipeline.settings.outputs if args.outputs is None else args.outputs),
        "frames": len(totals), "warmup_s": warmup_s, "jpeg_decoding": pipeline.jpeg_decoding,
        "points_p50": statistics.median(points), "points_min": min(points),
        "occupied_voxels_p50": statistics.median(occupied),
        "p50_ms": percentile(totals, 50), "p99_ms": percentile(totals, 99), "max_ms": max(totals),
        "stages_p50_ms": {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]},
        "drops": pipeline.counters(),
    }
    print(f"# node pipeline on {args.bag.name}: {cfg.name} {args.precision}{' compiled' if args.compile else ''} "
          f"on {name}, torch {torch.__version__}; warm-up {warmup_s:.1f} s; {len(totals)} frames, "
          f"median {result['points_p50']:.0f} LiDAR points (min {result['points_min']}), "
          f"{result['occupied_voxels_p50']:.0f} occupied voxels; JPEG decoding {pipeline.jpeg_decoding}; "
          f"outputs {', '.join(result['outputs']) or 'none'}")
    print(f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms")
    for k, v in result["stages_p50_ms"].items():
        print(f"  {k:<24}{v:9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

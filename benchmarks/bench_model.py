"""Forward latency per stage of FusionOcc (backbone, fusion, lift, LiDAR encoder, 3D encoder, head).

Two ways of running the same network on synthetic, correctly shaped inputs, in the same process:
* baseline  - `model(batch)`: both image frames go through the backbone (what training does);
* predictor - `Predictor.predict(frame_set)` on a stream of frames: the previous key-frame's
  backbone features come from the cache, so only the current frame is encoded.
Prints a Markdown table (median wall ms per stage over --iters runs, and `total_cpu` = process CPU
time of the whole run, all threads) and the predictor/baseline ratio.

    .venv/bin/python benchmarks/bench_model.py --preset tiny --iters 5
    .venv/bin/python benchmarks/bench_model.py --preset official --iters 1 --warmup 0
    .venv/bin/python benchmarks/bench_model.py --preset official --device cuda --precision bf16
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from fusionocc_core.config import load_config
from fusionocc_core.frame import CameraFrame, FrameSet
from fusionocc_core.model.example_inputs import rig_extrinsics, rig_intrinsics, scene_points
from fusionocc_core.model.fusionocc import STAGES
from fusionocc_core.inference_options import PRECISION_NAMES, SPARSE_CONV_ALGORITHMS
from fusionocc_core.ops.sparse_conv import sparse_conv_algorithm
from fusionocc_core.predictor import PRECISIONS, Predictor


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="tiny", help="model preset name or YAML config path")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]'")
    p.add_argument("--precision", default="fp32", choices=PRECISION_NAMES, help="autocast dtype (CUDA only for bf16/fp16)")
    p.add_argument("--iters", type=int, default=5, help="timed runs per mode (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per mode before timing")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave torch's default)")
    p.add_argument("--points", type=int, default=250_000,
                   help="LiDAR points per frame (current + previous sweeps; a real nuScenes 8-sweep cloud has ~250-280k)")
    p.add_argument("--sparse-conv", default="auto", choices=SPARSE_CONV_ALGORITHMS,
                   help="sparse conv rulebook form (auto: table on CUDA, pairs on CPU; triton: the table by an implicit-GEMM Triton kernel)")
    p.add_argument("--src-size", type=int, nargs=2, default=(900, 1600), metavar=("H", "W"),
                   help="source camera image size before the test transform")
    p.add_argument("--compile", action="store_true", help="torch.compile the dense fixed-shape modules: backbone, 2D fusion, 3D encoder, head (FusionOcc.compile_targets; CUDA only)")
    p.add_argument("--skip-baseline", action="store_true", help="time only the predictor (saves one mode on slow presets)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")
    return args


def make_frames(count: int, src_hw: tuple[int, int], num_points: int, seed: int = 0) -> list[FrameSet]:
    """A stream of FrameSets on the nuScenes-like rig, each with the previous one as history."""
    rng = np.random.default_rng(seed)
    scale = np.array([src_hw[1] / 1600.0, src_hw[0] / 900.0, 1.0], np.float32)[:, None]
    K = rig_intrinsics() * scale
    cams, out = [], []
    for i in range(count):
        s2e = rig_extrinsics()
        images = [rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8) for _ in range(6)]
        cams.append(CameraFrame(images, K, s2e, stamp_ns=(i + 1) * 500_000_000))
        pts, _ = scene_points(rng, num_points)
        out.append(FrameSet(cams[-1].stamp_ns + 10_000_000, cams[-1], cams[-2:-1][::-1], pts, pts[: num_points // 8]))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_table(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in runs for k in r})
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}


def time_baseline(pred: Predictor, frames: list[FrameSet], warmup: int, iters: int) -> dict[str, float]:
    """model(batch) with both frames through the backbone; per-stage + total ms (median)."""
    model, runs = pred.model, []
    autocast = torch.autocast("cuda", dtype=PRECISIONS[pred.precision], enabled=pred.precision != "fp32") \
        if pred.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for i in range(warmup + iters):
        batch, _ = pred.make_batch(frames[i % len(frames)])
        batch = {k: ([p.to(pred.device) for p in v] if k == "points" else v.to(pred.device)) for k, v in batch.items()}
        with model.record_stages() as times:
            sync(pred.device)
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.inference_mode(), autocast:
                logits = model(batch)["occ_logits"]
                logits.argmax(-1).cpu()
            sync(pred.device)
        times["total"] = (time.perf_counter() - t0) * 1e3
        times["total_cpu"] = (time.process_time() - c0) * 1e3
        if i >= warmup:
            runs.append(times)
    return median_table(runs)


def time_predictor(pred: Predictor, frames: list[FrameSet], warmup: int, iters: int) -> dict[str, float]:
    """predict() on a stream (the previous frame's features cached); per-stage + total ms (median)."""
    runs = []
    for i in range(warmup + iters):
        c0 = time.process_time()
        res = pred.predict(frames[i % len(frames)])
        res.timings["total_cpu"] = (time.process_time() - c0) * 1e3
        if i >= warmup:
            runs.append(res.timings)
    return median_table(runs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset)
    try:
        pred = Predictor(cfg, device=args.device, precision=args.precision, compile=args.compile,
                         sparse_conv=args.sparse_conv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench_model: {exc}", file=sys.stderr)
        return 2
    n = args.warmup + args.iters
    frames = make_frames(n + 1, tuple(args.src_size), args.points)
    params = sum(p.numel() for p in pred.model.parameters())
    device_name = torch.cuda.get_device_name(pred.device) if pred.device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {cfg.name}: {params / 1e6:.2f} M parameters, input {cfg.data.input_size}, {args.points} points, "
          f"device {pred.device} ({device_name}), precision {args.precision}, sparse conv {args.sparse_conv}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.machine()}")
    with sparse_conv_algorithm(args.sparse_conv):  # the baseline calls the model itself
        baseline = None if args.skip_baseline else time_baseline(pred, frames, args.warmup, args.iters)
    pred.reset()
    pred.predict(frames[0])  # fills the cache with frame 0, the history of frame 1
    pred.stage_timings = True  # the per-stage table (each stage boundary synchronises the device)
    predictor = time_predictor(pred, frames[1:], args.warmup, args.iters)
    if pred.device.type == "cuda":  # the latency the node gets: no stage timers, host and GPU overlap
        pred.stage_timings = False
        pred.reset()  # the stream starts again: without this its stamps would be older than the cache's
        pred.predict(frames[0])
        unsynced = time_predictor(pred, frames[1:], args.warmup, args.iters)
        predictor["total_with_stage_timers"] = predictor["total"]
        predictor["total"], predictor["total_cpu"] = unsynced["total"], unsynced["total_cpu"]
        predictor["preprocess_unsynced"] = unsynced["preprocess"]
    rows = list(STAGES) + ["preprocess", "postprocess", "total", "total_cpu"] + \
        (["total_with_stage_timers"] if "total_with_stage_timers" in predictor else [])
    print("\n| stage | model(batch), both frames encoded [ms] | predict(), previous frame cached [ms] |")
    print("|---|---:|---:|")
    for r in rows:
        b = "-" if baseline is None or r not in baseline else f"{baseline[r]:.1f}"
        print(f"| {r} | {b} | {predictor.get(r, 0.0):.1f} |")
    if baseline is not None:
        print(f"\npredict()/model(batch) total: {predictor['total'] / baseline['total']:.2f}x wall, "
              f"{predictor['total_cpu'] / baseline['total_cpu']:.2f}x CPU "
              f"(backbone {predictor['backbone']:.1f} vs {baseline['backbone']:.1f} ms)")
    print(f"cache: {pred.backbone_runs} backbone runs, {pred.cache_hits} hits; "
          f"lift plan cache {pred.model.img_view_transformer.plan_cache.hits} hits / "
          f"{pred.model.img_view_transformer.plan_cache.misses} misses")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": device_name, "torch": torch.__version__, "baseline_ms": baseline,
                       "predictor_ms": predictor, "params": params}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

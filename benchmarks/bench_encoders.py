"""Cost of each output encoder for N occupied voxels: ours (pre-serialized CDR bytes) against the
naive path (rclpy message objects built by test/ros/rclpy_reference.py +
rclpy.serialization.serialize_message), same run, same data.

    .venv/bin/python benchmarks/bench_encoders.py [--voxels 50000] [--repeats 15]

Prints median / min milliseconds per message and the speed-up of ours over the naive path.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "ros"))  # the rclpy reference builders


def random_labels(n_occupied: int, seed: int) -> np.ndarray:
    """A (200, 200, 16) Occ3D grid with n_occupied non-free voxels of random classes."""
    from fusionocc_core.classes import FREE_LABEL, GRID_SHAPE

    rng = np.random.default_rng(seed)
    labels = np.full(GRID_SHAPE, FREE_LABEL, np.uint8)
    idx = rng.choice(labels.size, n_occupied, replace=False)
    labels.reshape(-1)[idx] = rng.integers(0, FREE_LABEL, n_occupied)
    return labels


def timeit(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up (first-call imports and allocations)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=50_000, help="number of occupied (non-free) voxels (default 50000)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per encoder after one warm-up (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the label grid (default 0)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not 0 < args.voxels <= 200 * 200 * 16 or args.repeats < 1:
        parser.error("--voxels must be in 1..640000 and --repeats >= 1")

    from rclpy.serialization import serialize_message

    from rclpy_reference import reference

    from fusionocc_ros.encoders import MarkerArrayEncoder, PointCloudEncoder, VoxelGridEncoder

    labels = random_labels(args.voxels, args.seed)
    confidence = np.random.default_rng(args.seed + 1).integers(0, 256, labels.shape, dtype=np.uint8)
    stamp = 1_533_201_470_448_696_000
    cases = [
        ("MarkerArray (CUBE_LIST per class)", MarkerArrayEncoder(), ()),
        ("SemanticVoxelGrid (+confidence)", VoxelGridEncoder(), (confidence,)),
        ("PointCloud2 x y z rgb label", PointCloudEncoder(), ()),
    ]
    rows = []
    for name, enc, extra in cases:
        ours = timeit(lambda: enc.encode(labels, stamp, *extra), args.repeats)
        naive = timeit(lambda: serialize_message(reference(enc, labels, stamp, *extra)), args.repeats)
        size = len(enc.encode(labels, stamp, *extra))
        rows.append({
            "encoder": name,
            "bytes": size,
            "ours_ms_median": statistics.median(ours) * 1e3,
            "ours_ms_min": min(ours) * 1e3,
            "naive_ms_median": statistics.median(naive) * 1e3,
            "naive_ms_min": min(naive) * 1e3,
            "speedup_median": statistics.median(naive) / statistics.median(ours),
        })

    print(f"{args.voxels} occupied voxels, {args.repeats} runs each; python {platform.python_version()}, numpy {np.__version__}")
    print(f"{'encoder':36s} {'MB':>6s} {'ours ms (med/min)':>18s} {'naive ms (med/min)':>19s} {'speed-up':>9s}")
    for r in rows:
        print(f"{r['encoder']:36s} {r['bytes'] / 1e6:6.2f} {r['ours_ms_median']:8.2f} / {r['ours_ms_min']:6.2f}"
              f" {r['naive_ms_median']:9.2f} / {r['naive_ms_min']:6.2f} {r['speedup_median']:8.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"voxels": args.voxels, "repeats": args.repeats, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

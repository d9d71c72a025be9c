"""Cost of each output encoder for N occupied voxels: ours (pre-serialized CDR bytes) against the
naive path (rclpy message objects built by test/ros/rclpy_reference.py +
rclpy.serialization.serialize_message), same run, same data.

    .venv/bin/python benchmarks/bench_encoders.py [--voxels 50000] [--repeats 15] [--publish]

Prints median / min milliseconds per message and the speed-up of ours over the naive path. --publish
also times what the node does next with our bytes: `Publisher.publish(bytes)` (reliable, depth 5, as
the node's outputs) with a subscriber matched over loopback DDS, and the delivery to that subscriber.
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


def publish_times(cases: list, labels: np.ndarray, confidence: np.ndarray, stamp: int, repeats: int) -> list[tuple[float, float]]:
    """Per encoder: median ms of `Publisher.publish(bytes)` and of publish -> the subscriber's
    callback (raw bytes, no deserialisation), on a private ROS domain over loopback."""
    import os

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from fusionocc_msgs.msg import SemanticVoxelGrid

    types = {"MarkerArray": MarkerArray, "SemanticVoxelGrid": SemanticVoxelGrid, "PointCloud2": PointCloud2}
    rclpy.init()
    try:
        talker, listener = rclpy.create_node("bench_encoders_talker"), rclpy.create_node("bench_encoders_listener")
        executor = SingleThreadedExecutor()
        executor.add_node(listener)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # the node's output QoS
        out = []
        for i, (name, enc, extra) in enumerate(cases):
            msg_type = types[name.split()[0]]
            data = enc.encode(labels, stamp, *extra)
            arrived: list[float] = []
            pub = talker.create_publisher(msg_type, f"bench_encoders/out{i}", qos)
            listener.create_subscription(msg_type, f"bench_encoders/out{i}", lambda _: arrived.append(time.perf_counter()),
                                         qos, raw=True)
            while pub.get_subscription_count() == 0:
                executor.spin_once(timeout_sec=0.1)
            publish, delivered = [], []
            for _ in range(repeats + 1):  # the first one warms the path up
                arrived.clear()
                t0 = time.perf_counter()
                pub.publish(data)
                publish.append(time.perf_counter() - t0)
                while not arrived:
                    executor.spin_once(timeout_sec=0.5)
                delivered.append(arrived[0] - t0)
            out.append((statistics.median(publish[1:]) * 1e3, statistics.median(delivered[1:]) * 1e3))
        return out
    finally:
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=50_000, help="number of occupied (non-free) voxels (default 50000)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per encoder after one warm-up (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the label grid (default 0)")
    parser.add_argument("--publish", action="store_true",
                        help="also time Publisher.publish(bytes) and the delivery to a subscriber over loopback DDS")
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

    if args.publish:
        published = publish_times(cases, labels, confidence, stamp, args.repeats)
        for row, (publish_ms, delivered_ms) in zip(rows, published):
            row.update(publish_ms_median=publish_ms, delivered_ms_median=delivered_ms)

    print(f"{args.voxels} occupied voxels, {args.repeats} runs each; python {platform.python_version()}, numpy {np.__version__}")
    print(f"{'encoder':36s} {'MB':>6s} {'ours ms (med/min)':>18s} {'naive ms (med/min)':>19s} {'speed-up':>9s}")
    for r in rows:
        print(f"{r['encoder']:36s} {r['bytes'] / 1e6:6.2f} {r['ours_ms_median']:8.2f} / {r['ours_ms_min']:6.2f}"
              f" {r['naive_ms_median']:9.2f} / {r['naive_ms_min']:6.2f} {r['speedup_median']:8.1f}x")
    if args.publish:
        print("over loopback DDS (reliable, depth 5, one subscriber in this process):")
        for r in rows:
            print(f"  {r['encoder']:36s} publish() {r['publish_ms_median']:7.2f} ms, delivered after {r['delivered_ms_median']:7.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"voxels": args.voxels, "repeats": args.repeats, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

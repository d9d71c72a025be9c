"""`fusionocc-bag-extract BAG --infos F --out DIR`: voxel grids in a bag -> Occ3D submission files.

Turns every `fusionocc_msgs/msg/SemanticVoxelGrid` on --topic into `DIR/<sample_token>.npz`
(key `semantics`, uint8 (200, 200, 16): the layout `fusionocc-score` reads), matching a message to
a key-frame by its header stamp = the key-frame's LiDAR timestamp (µs in nuScenes, ns in ROS).
Messages that match no key-frame are counted and skipped. DIR is written atomically.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_TOPIC = "/fusionocc_occupancy/output/voxels"


def stamp_to_token(infos_path: Path) -> dict[int, str]:
    """LiDAR stamp (ns) -> sample token for every key-frame of a fusionocc-prepare info pickle."""
    with open(infos_path, "rb") as f:
        data = pickle.load(f)
    return {int(i["lidar_timestamp"]) * 1000: i["token"] for i in data["infos"]}


def extract(bag: Path, infos: Path, out: Path, topic: str = DEFAULT_TOPIC) -> tuple[int, int]:
    """Write DIR/<token>.npz for each matched grid; returns (written, unmatched)."""
    from rosbags.rosbag2 import Reader

    from fusionocc_ros.conversions import header_stamp_ns, voxel_grid_to_labels
    from rosbag_tools.typestore import get_store

    if out.exists():
        raise FileExistsError(f"output path exists: {out}")
    tokens = stamp_to_token(infos)
    store = get_store()
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.mkdir(parents=True)
    written = unmatched = 0
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                raise ValueError(f"{bag}: no topic {topic}")
            for conn, _, raw in reader.messages(connections=conns):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                token = tokens.get(header_stamp_ns(msg))
                if token is None:
                    unmatched += 1
                    continue
                labels, _ = voxel_grid_to_labels(msg)
                np.savez_compressed(tmp / f"{token}.npz", semantics=np.ascontiguousarray(labels, np.uint8))
                written += 1
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return written, unmatched


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusionocc-bag-extract", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 directory holding SemanticVoxelGrid messages")
    p.add_argument("--infos", type=Path, required=True, help="fusionocc-prepare info pickle of the same scenes")
    p.add_argument("--out", type=Path, required=True, help="directory to create for <sample_token>.npz files")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help="voxel grid topic (default: %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written, unmatched = extract(args.bag, args.infos, args.out, args.topic)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        print(f"fusionocc-bag-extract: {exc}", file=sys.stderr)
        return 1
    print(f"fusionocc-bag-extract: {written} grids -> {args.out}" + (f" ({unmatched} matched no key-frame)" if unmatched else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

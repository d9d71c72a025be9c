"""`fusionocc-bag-extract BAG --infos F --out DIR`: voxel grids in a bag -> Occ3D submission files.

Turns every `fusionocc_msgs/msg/SemanticVoxelGrid` on --topic into `DIR/<sample_token>.npz`
(key `semantics`, uint8 (200, 200, 16): the layout `fusionocc-score` reads), matching a message to
a key-frame by its header stamp = the key-frame's LiDAR timestamp (µs in nuScenes, ns in ROS).
Messages that match no key-frame are counted and skipped; a bag of which no grid matches is an
error. DIR is built under a temporary name and renamed when complete; tokens must be plain names.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from fusionocc_core.classes import GRID_SHAPE
from fusionocc_core.cli import ToolError, ToolParser, tool_main

DEFAULT_TOPIC = "/fusionocc_occupancy/output/voxels"
PROG = "fusionocc-bag-extract"


class ExtractError(ToolError):
    """A bag or info file that cannot be extracted (one line)."""


def stamp_to_token(infos_path: Path) -> dict[int, str]:
    """LiDAR stamp (ns) -> sample token for every key-frame of a fusionocc-prepare info pickle
    (loaded with the allow-list unpickler; every token checked to be a plain file name)."""
    from fusionocc_core.data.io import read_infos
    from fusionocc_core.safe_paths import check_name

    out: dict[int, str] = {}
    for i, info in enumerate(read_infos(infos_path)["infos"]):
        try:
            stamp = int(info["lidar_timestamp"]) * 1000
        except (KeyError, TypeError, ValueError):
            raise ExtractError(f"{infos_path}: info {i} has no integer 'lidar_timestamp'") from None
        out[stamp] = check_name(info["token"], "sample token", infos_path)
    return out


def extract(bag: Path, infos: Path, out: Path, topic: str = DEFAULT_TOPIC, overwrite: bool = False) -> tuple[int, int]:
    """Write DIR/<token>.npz for each matched grid; returns (written, unmatched)."""
    from fusionocc_core.safe_paths import child_path
    from fusionocc_core.tools.atomic import OutputExistsError, atomic_output_dir, exists_message
    from fusionocc_ros.conversions import header_stamp_ns, voxel_grid_to_labels
    from rosbag_tools.reading import deserialize, open_bag, read_messages
    from rosbag_tools.typestore import get_store

    if out.exists() and not overwrite:
        raise OutputExistsError(exists_message(out))
    tokens = stamp_to_token(infos)
    store = get_store()
    written = unmatched = 0
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise ExtractError(f"{bag}: no topic {topic} (see fusionocc-bag-info {bag})")
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            tmp.mkdir()
            for conn, _, raw in read_messages(reader, bag, conns):
                msg = deserialize(store, raw, conn, bag)
                token = tokens.get(header_stamp_ns(msg))
                if token is None:
                    unmatched += 1
                    continue
                try:
                    labels, _ = voxel_grid_to_labels(msg)
                except ValueError as exc:
                    raise ExtractError(f"{bag}: a grid on {topic} is malformed ({exc})") from None
                if labels.shape != GRID_SHAPE:
                    raise ExtractError(f"{bag}: a grid on {topic} has shape {labels.shape}, not the Occ3D {GRID_SHAPE}")
                np.savez_compressed(child_path(tmp, token, "sample token", ".npz"),
                                    semantics=np.ascontiguousarray(labels, np.uint8))
                written += 1
            if written == 0:
                raise ExtractError(f"none of the {unmatched} grids on {topic} in {bag} matches a key-frame LiDAR "
                                   f"stamp of {infos} (are they the same scenes?); nothing written")
    return written, unmatched


def build_parser() -> ToolParser:
    p = ToolParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 directory holding SemanticVoxelGrid messages")
    p.add_argument("--infos", type=Path, required=True, help="fusionocc-prepare info pickle of the same scenes")
    p.add_argument("--out", type=Path, required=True, help="directory to create for <sample_token>.npz files")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help="voxel grid topic (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out directory (only once the new one is complete)")
    return p


@tool_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    written, unmatched = extract(args.bag, args.infos, args.out, args.topic, args.overwrite)
    print(f"{PROG}: {written} grids -> {args.out}" + (f" ({unmatched} matched no key-frame)" if unmatched else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

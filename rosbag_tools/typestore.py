"""The rosbags typestore used to write and read our bags: ROS 2 Jazzy types plus our own messages.

`fusionocc_msgs/msg/SemanticVoxelGrid` is registered from the package's own .msg text (never a
copy), and `tf2_msgs/msg/TFMessage` from its one-line definition if the store lacks it.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

VOXEL_GRID_TYPE = "fusionocc_msgs/msg/SemanticVoxelGrid"
TF_MESSAGE_TYPE = "tf2_msgs/msg/TFMessage"
TF_MESSAGE_MSG = "geometry_msgs/TransformStamped[] transforms\n"
_MSG_RELPATH = Path("fusionocc_msgs") / "msg" / "SemanticVoxelGrid.msg"


def voxel_grid_msg_path() -> Path:
    """Find SemanticVoxelGrid.msg: the source tree first, then <prefix>/share of installs."""
    candidates = [Path(__file__).resolve().parent.parent / _MSG_RELPATH]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    candidates += [Path(p) / "share" / _MSG_RELPATH for p in prefixes]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"SemanticVoxelGrid.msg not found (looked in {', '.join(str(c) for c in candidates)})"
    )


@lru_cache(maxsize=1)
def get_store() -> Typestore:
    """Return the shared typestore: ROS2_JAZZY + SemanticVoxelGrid (+ TFMessage if missing)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    extra = get_types_from_msg(voxel_grid_msg_path().read_text(), VOXEL_GRID_TYPE)
    if TF_MESSAGE_TYPE not in store.types:  # pragma: no cover - the Jazzy store has it
        extra.update(get_types_from_msg(TF_MESSAGE_MSG, TF_MESSAGE_TYPE))
    store.register(extra)
    return store

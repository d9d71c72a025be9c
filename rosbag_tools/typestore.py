"""The rosbags typestore used to write and read our bags: ROS 2 Jazzy types plus our own messages.

`fusionocc_msgs/msg/SemanticVoxelGrid` is registered from the package's own .msg text (never a
copy), and `tf2_msgs/msg/TFMessage` from its one-line definition if the store lacks it.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

VOXEL_GRID_TYPE = "fusionocc_msgs/msg/SemanticVoxelGrid"
TF_MESSAGE_TYPE = "tf2_msgs/msg/TFMessage"
TF_MESSAGE_MSG = "geometry_msgs/TransformStamped[] transforms\n"


def voxel_grid_msg_path() -> Path:
    """Find SemanticVoxelGrid.msg: package data of a wheel, the source tree, or the ament share."""
    from fusionocc_ros.resources import voxel_grid_msg

    return voxel_grid_msg()


@lru_cache(maxsize=1)
def get_store() -> Typestore:
    """Return the shared typestore: ROS2_JAZZY + SemanticVoxelGrid (+ TFMessage if missing)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    extra = get_types_from_msg(voxel_grid_msg_path().read_text(), VOXEL_GRID_TYPE)
    if TF_MESSAGE_TYPE not in store.types:  # pragma: no cover - the Jazzy store has it
        extra.update(get_types_from_msg(TF_MESSAGE_MSG, TF_MESSAGE_TYPE))
    store.register(extra)
    return store

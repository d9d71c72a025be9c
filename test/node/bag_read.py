"""Read our outputs back from a bag with rosbags (helper for the node tests)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from rosbag_tools.typestore import get_store


def messages(bag: Path, topic_suffix: str) -> list[tuple[str, Any]]:
    """(topic, deserialized message) of every message whose topic ends with topic_suffix."""
    store = get_store()
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic.endswith(topic_suffix)]
        return [(c.topic, store.deserialize_cdr(raw, c.msgtype)) for c, _, raw in reader.messages(connections=conns)]


def stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def voxel_labels(bag: Path) -> dict[int, np.ndarray]:
    """LiDAR stamp -> (200, 200, 16) labels of every SemanticVoxelGrid in the bag."""
    return {stamp(m): np.asarray(m.labels, np.uint8).reshape(m.size_x, m.size_y, m.size_z)
            for _, m in messages(bag, "/output/voxels")}

"""What a scene's bag must contain, computed from the nuScenes devkit (independently of the converter)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionocc_core.classes import CAMERA_NAMES, LIDAR_NAME
from rosbags.highlevel import AnyReader

CHANNELS = CAMERA_NAMES + (LIDAR_NAME,)
VERSION = "v1.0-mini"


def scene_samples(nusc: Any, scene_name: str) -> list[dict]:
    """The scene's key-frame samples in time order."""
    scene = next(s for s in nusc.scene if s["name"] == scene_name)
    return sorted((s for s in nusc.sample if s["scene_token"] == scene["token"]), key=lambda s: s["timestamp"])


def scene_sample_data(nusc: Any, scene_name: str, sweeps: bool) -> list[dict]:
    """Every camera/LiDAR sample_data of the scene (key-frames only unless `sweeps`), by time."""
    tokens = {s["token"] for s in scene_samples(nusc, scene_name)}
    records = [
        sd for sd in nusc.sample_data
        if sd["sample_token"] in tokens and sd["channel"] in CHANNELS and (sweeps or sd["is_key_frame"])
    ]
    return sorted(records, key=lambda sd: sd["timestamp"])


def expected_counts(nusc: Any, data_root: Path, scene_name: str, sweeps: bool) -> dict[str, int]:
    """Topic -> message count of the scene's bag."""
    records = scene_sample_data(nusc, scene_name, sweeps)
    counts = {"/tf_static": 1, "/tf": len({sd["timestamp"] for sd in records})}
    for cam in CAMERA_NAMES:
        n = sum(sd["channel"] == cam for sd in records)
        counts[f"/{cam.lower()}/image_rect/compressed"] = n
        counts[f"/{cam.lower()}/camera_info"] = n
    counts["/lidar_top"] = sum(sd["channel"] == LIDAR_NAME for sd in records)
    if (data_root / "gts" / scene_name).is_dir():
        counts["/occupancy/gt"] = len(scene_samples(nusc, scene_name))
    return counts


EXPECTED_TYPES = {
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/lidar_top": "sensor_msgs/msg/PointCloud2",
    "/occupancy/gt": "fusionocc_msgs/msg/SemanticVoxelGrid",
    **{f"/{c.lower()}/image_rect/compressed": "sensor_msgs/msg/CompressedImage" for c in CAMERA_NAMES},
    **{f"/{c.lower()}/camera_info": "sensor_msgs/msg/CameraInfo" for c in CAMERA_NAMES},
}


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a std_msgs/Header stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def read_bag(bag: Path) -> tuple[dict[str, Any], dict[str, list[tuple[int, Any]]]]:
    """(topic -> connection, topic -> [(bag time, decoded message)]) read with rosbags' AnyReader."""
    with AnyReader([bag]) as reader:
        conns = {c.topic: c for c in reader.connections}
        msgs: dict[str, list[tuple[int, Any]]] = {t: [] for t in conns}
        for conn, ts, raw in reader.messages():
            msgs[conn.topic].append((ts, reader.deserialize(raw, conn.msgtype)))
    return conns, msgs

"""Build the bag's ROS messages (rosbags dataclasses) from nuScenes records and file bytes.

Payloads are never re-encoded: JPEG bytes go into CompressedImage and .pcd.bin bytes into
PointCloud2 as they are. Also validates the bytes enough to reject truncated files.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fusionocc_core.classes import FREE_LABEL, GRID_SHAPE
from fusionocc_core.cli import ToolError
from fusionocc_core.jpeg_header import JpegHeaderError, has_end_marker, is_jpeg
from fusionocc_core.jpeg_header import jpeg_size as header_size
from rosbag_tools.typestore import get_store

MAP_FRAME = "map"
BASE_FRAME = "base_link"
LIDAR_POINT_STEP = 20  # x y z intensity ring, float32 each
LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")


class PayloadError(ToolError):
    """A sensor/ground-truth file whose bytes are not what its format promises (one line)."""


def frame_id(channel: str) -> str:
    """ROS frame id of a nuScenes sensor channel: the lower-case channel name (cam_front...)."""
    return channel.lower()


def _types() -> Any:
    return get_store().types


def header(stamp_ns: int, frame: str) -> Any:
    """std_msgs/Header at `stamp_ns` in `frame`."""
    t = _types()
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame)


def jpeg_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame header; PayloadError if not a whole JPEG."""
    if not is_jpeg(data):
        raise PayloadError(f"{name} is not a JPEG file (no SOI marker)")
    if not has_end_marker(data):
        raise PayloadError(f"truncated JPEG {name}: no end-of-image marker")
    try:
        return header_size(data[: 1 << 16])
    except JpegHeaderError as exc:
        raise PayloadError(f"corrupt JPEG {name}: {exc}") from None


def compressed_image(stamp_ns: int, frame: str, jpeg: bytes) -> Any:
    """sensor_msgs/CompressedImage holding the JPEG bytes untouched."""
    return _types()["sensor_msgs/msg/CompressedImage"](
        header=header(stamp_ns, frame), format="jpeg", data=np.frombuffer(jpeg, np.uint8)
    )


def camera_info(stamp_ns: int, frame: str, intrinsic: Sequence[Sequence[float]], width: int, height: int) -> Any:
    """sensor_msgs/CameraInfo of a rectified camera: K from calibration, P = [K|0], no distortion."""
    t = _types()
    k = np.asarray(intrinsic, dtype=np.float64).reshape(3, 3)
    p = np.hstack([k, np.zeros((3, 1))])  # (3, 4)
    return t["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns, frame),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=np.zeros(5, np.float64),
        k=k.ravel(),
        r=np.eye(3).ravel(),
        p=p.ravel(),
        binning_x=0,
        binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def lidar_cloud(stamp_ns: int, frame: str, raw: bytes, name: str = "LiDAR file") -> Any:
    """sensor_msgs/PointCloud2 with nuScenes' 5 x float32 layout, data = the file bytes as they are."""
    if not raw or len(raw) % LIDAR_POINT_STEP:
        raise PayloadError(f"truncated LiDAR file {name}: {len(raw)} bytes is not a whole number of points")
    t = _types()
    field_cls = t["sensor_msgs/msg/PointField"]
    fields = [
        field_cls(name=f, offset=4 * i, datatype=field_cls.FLOAT32, count=1) for i, f in enumerate(LIDAR_FIELDS)
    ]
    n = len(raw) // LIDAR_POINT_STEP
    return t["sensor_msgs/msg/PointCloud2"](
        header=header(stamp_ns, frame),
        height=1,
        width=n,
        fields=fields,
        is_bigendian=False,
        point_step=LIDAR_POINT_STEP,
        row_step=LIDAR_POINT_STEP * n,
        data=np.frombuffer(raw, np.uint8),
        is_dense=True,
    )


def transform(
    stamp_ns: int,
    parent: str,
    child: str,
    translation: Sequence[float],
    rotation_wxyz: Sequence[float],
) -> Any:
    """geometry_msgs/TransformStamped parent -> child (pose of child in parent; nuScenes wxyz quat)."""
    t = _types()
    w, x, y, z = (float(v) for v in rotation_wxyz)
    return t["geometry_msgs/msg/TransformStamped"](
        header=header(stamp_ns, parent),
        child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=float(translation[0]), y=float(translation[1]), z=float(translation[2])),
            rotation=t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
        ),
    )


def tf_message(transforms: list[Any]) -> Any:
    """tf2_msgs/TFMessage holding `transforms`."""
    return _types()["tf2_msgs/msg/TFMessage"](transforms=transforms)


def load_gt_labels(path: str) -> np.ndarray:
    """The Occ3D `semantics` array of a labels.npz as uint8 (200, 200, 16); PayloadError if bad."""
    try:
        with np.load(path) as npz:
            if "semantics" not in npz.files:
                raise PayloadError(f"ground truth {path} has no 'semantics' array")
            labels = npz["semantics"]
    except PayloadError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, OSError...
        raise PayloadError(f"corrupt or truncated ground truth {path}: {type(exc).__name__}") from exc
    if labels.shape != GRID_SHAPE:
        raise PayloadError(f"ground truth {path}: semantics shape {labels.shape}, expected {GRID_SHAPE}")
    if labels.size and int(labels.max()) > FREE_LABEL:
        raise PayloadError(f"ground truth {path}: label {int(labels.max())} > {FREE_LABEL}")
    return np.ascontiguousarray(labels, dtype=np.uint8)

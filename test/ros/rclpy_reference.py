"""Test oracle: the encoders' messages built independently from rclpy message objects (the slow,
obviously-correct path). Used by test_encoders.py and as the naive baseline of
benchmarks/bench_encoders.py. Takes the encoder only for its settings and its voxel selection."""
from __future__ import annotations

from typing import Any

import numpy as np

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL


def _stamp(stamp_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def marker_array(enc: Any, labels: np.ndarray, stamp_ns: int) -> Any:
    """visualization_msgs/MarkerArray for a MarkerArrayEncoder."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    if enc.delete_all:
        m = Marker(action=Marker.DELETEALL)
        m.header.stamp, m.header.frame_id = _stamp(stamp_ns), enc.frame_id
        m.pose.orientation.w = 1.0
        out.markers.append(m)
    for c, centers in enc.groups(labels):
        m = Marker(ns=CLASS_NAMES[c], id=c, type=Marker.CUBE_LIST, action=Marker.ADD)
        m.header.stamp, m.header.frame_id = _stamp(stamp_ns), enc.frame_id
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = enc.voxel_size
        r, g, b, a = (float(v) for v in enc.colors[c])
        m.color = ColorRGBA(r=r, g=g, b=b, a=a)
        m.lifetime = Duration(sec=enc.lifetime["sec"], nanosec=enc.lifetime["nanosec"])
        m.frame_locked = enc.frame_locked
        m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in centers]
        out.markers.append(m)
    return out


def voxel_grid(enc: Any, labels: np.ndarray, stamp_ns: int, confidence: np.ndarray | None = None) -> Any:
    """fusionocc_msgs/SemanticVoxelGrid for a VoxelGridEncoder."""
    from fusionocc_msgs.msg import SemanticVoxelGrid
    from std_msgs.msg import ColorRGBA

    msg = SemanticVoxelGrid()
    msg.header.stamp, msg.header.frame_id = _stamp(stamp_ns), enc.frame_id
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = map(float, enc.grid.lower)
    msg.origin.orientation.w = 1.0
    msg.resolution = float(np.float32(enc.voxel_size))  # the wire type is float32
    msg.size_x, msg.size_y, msg.size_z = map(int, enc.grid.shape)
    msg.class_names = list(CLASS_NAMES)
    msg.class_colors = [ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a)) for r, g, b, a in enc.colors]
    msg.free_label = FREE_LABEL
    msg.labels = enc.grid.check_labels(labels).tobytes()
    msg.confidence = b"" if confidence is None else enc.grid.check_labels(confidence).tobytes()
    return msg


def point_cloud(enc: Any, labels: np.ndarray, stamp_ns: int) -> Any:
    """sensor_msgs/PointCloud2 for a PointCloudEncoder."""
    from sensor_msgs.msg import PointCloud2, PointField

    from fusionocc_ros.encoders import CLOUD_DTYPE, CLOUD_FIELDS

    pts = enc.points(labels)
    msg = PointCloud2()
    msg.header.stamp, msg.header.frame_id = _stamp(stamp_ns), enc.frame_id
    msg.height, msg.width = 1, pts.size
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step, msg.row_step = CLOUD_DTYPE.itemsize, CLOUD_DTYPE.itemsize * pts.size
    msg.data = pts.tobytes()
    msg.is_dense = True
    return msg


def reference(enc: Any, labels: np.ndarray, stamp_ns: int, *extra: Any) -> Any:
    """The reference message for any of the three encoders."""
    from fusionocc_ros.encoders import MarkerArrayEncoder, VoxelGridEncoder

    if isinstance(enc, MarkerArrayEncoder):
        return marker_array(enc, labels, stamp_ns)
    if isinstance(enc, VoxelGridEncoder):
        return voxel_grid(enc, labels, stamp_ns, *extra)
    return point_cloud(enc, labels, stamp_ns)

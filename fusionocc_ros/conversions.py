"""ROS message <-> numpy conversions for the node, replay and tests (vectorised, no rclpy).

Contract: the `*_to_*` readers take any object with the ROS field names (rclpy messages, rosbags
messages, plain dataclasses) and either return a valid array or raise `ConversionError(reason)`
(a ValueError with a one-line reason naming the field) -- never any other exception, so a
hostile message can be counted and skipped. Where the layout allows, results are zero-copy views
of the message buffer (read-only when the buffer is). The few writers that build message objects
import their message package inside the function, so this module imports without ROS.

  pointcloud2_to_xyzir      PointCloud2 (any field layout/endianness/point_step) -> (P, 5) float32
  xyzir_to_pointcloud2      (P, 5) float32 -> sensor_msgs/PointCloud2 (x y z intensity ring)
  compressed_image_to_rgb   CompressedImage (JPEG/PNG) -> (H, W, 3) uint8 RGB
  image_to_rgb              Image (rgb8 bgr8 rgba8 bgra8 mono8) -> (H, W, 3) uint8 RGB
  camera_info_to_k          CameraInfo -> K (3, 3) float64
  transform_to_matrix       geometry_msgs/Transform(Stamped) -> (4, 4) float64, and back
  voxel_grid_to_labels      fusionocc_msgs/SemanticVoxelGrid -> (X, Y, Z) uint8 labels
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, TypeVar

import cv2
import numpy as np

from fusionocc_core.jpeg_header import JpegHeaderError, has_end_marker, jpeg_size
from fusionocc_ros.rigid import matrix_to_quat, transform_from_xyzw

# sensor_msgs/PointField datatypes -> numpy type codes
POINTFIELD_TYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
POINTFIELD_CODES: dict[str, int] = {np.dtype(v).str[1:]: k for k, v in POINTFIELD_TYPES.items()}
FLOAT32 = 7
UINT8 = 2
UINT32 = 6

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # larger images are rejected before any allocation
MAX_IMAGE_SIDE = 1 << 15
MAX_CLOUD_POINTS = 1 << 26

F = TypeVar("F", bound=Callable[..., Any])


class ConversionError(ValueError):
    """A message that cannot be converted; str(exc) is a one-line reason naming the field."""


def _converts(what: str) -> Callable[[F], F]:
    """Turn any unexpected low-level failure of a reader into a ConversionError naming `what`."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ConversionError:
                raise
            except (TypeError, ValueError, AttributeError, OverflowError, IndexError, KeyError, cv2.error) as exc:
                raise ConversionError(f"{what}: malformed message ({type(exc).__name__}: {exc})") from None

        return inner  # type: ignore[return-value]

    return wrap


# --- small helpers ---------------------------------------------------------------------------


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (validates nanosec < 1e9)."""
    sec, nsec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nsec < 1_000_000_000:
        raise ConversionError(f"header.stamp.nanosec={nsec} is outside [0, 1e9)")
    return sec * 1_000_000_000 + nsec


def ns_to_sec_nsec(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) as builtin_interfaces/Time holds them."""
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return sec, nsec


def header_stamp_ns(msg: Any) -> int:
    """The message's header stamp in nanoseconds, or ConversionError."""
    try:
        return stamp_to_ns(msg.header.stamp)
    except ConversionError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"header.stamp: malformed ({exc})") from None


def _bytes_view(data: Any, field: str) -> np.ndarray:
    """A 1-D uint8 view of a `uint8[]` field (bytes, array.array, memoryview or numpy)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ConversionError(f"{field}: expected a 1-D uint8 array, got {data.dtype} {data.shape}")
        return data
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "buffer_info"):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, (list, tuple)):  # slow path, only for hand-built messages
        arr = np.asarray(data, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ConversionError(f"{field}: values outside 0..255")
        return arr.astype(np.uint8)
    raise ConversionError(f"{field}: unsupported buffer type {type(data).__name__}")


def _uint(value: Any, field: str, upper: int = (1 << 32) - 1) -> int:
    v = int(value)
    if not 0 <= v <= upper:
        raise ConversionError(f"{field}={v} is outside [0, {upper}]")
    return v


# --- PointCloud2 -----------------------------------------------------------------------------

XYZIR_NAMES = ("x", "y", "z", "intensity", "ring")


@_converts("PointCloud2")
def pointcloud2_to_xyzir(msg: Any, drop_invalid: bool = True) -> np.ndarray:
    """PointCloud2 -> (P, 5) float32 x y z intensity ring; missing intensity/ring read as 0.

    Any field layout, endianness, point_step and row padding is accepted; x, y, z are required.
    Points with a NaN/Inf value are dropped (drop_invalid). The nuScenes layout (5 x float32
    little-endian, point_step 20) with finite values returns a zero-copy view of msg.data.
    """
    height = _uint(msg.height, "PointCloud2.height")
    width = _uint(msg.width, "PointCloud2.width")
    point_step = _uint(msg.point_step, "PointCloud2.point_step")
    row_step = _uint(msg.row_step, "PointCloud2.row_step")
    n = height * width
    if n > MAX_CLOUD_POINTS:
        raise ConversionError(f"PointCloud2: {height}x{width} points exceeds the limit of {MAX_CLOUD_POINTS}")
    data = _bytes_view(msg.data, "PointCloud2.data")
    if n == 0:
        if data.size:
            raise ConversionError(f"PointCloud2.data has {data.size} bytes but height*width = 0")
        return np.zeros((0, 5), np.float32)
    if point_step == 0:
        raise ConversionError("PointCloud2.point_step is 0")
    if row_step < width * point_step:
        raise ConversionError(f"PointCloud2.row_step={row_step} < width*point_step={width * point_step}")
    if data.size != row_step * height:
        raise ConversionError(f"PointCloud2.data has {data.size} bytes, expected row_step*height = {row_step * height}")
    endian = ">" if bool(msg.is_bigendian) else "<"

    fields: dict[str, tuple[int, str]] = {}
    for f in msg.fields:
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), int(f.count)
        if name in fields:
            raise ConversionError(f"PointCloud2.fields: duplicate field '{name}'")
        if datatype not in POINTFIELD_TYPES:
            raise ConversionError(f"PointCloud2.fields['{name}'].datatype={datatype} is not a PointField type")
        itemsize = np.dtype(POINTFIELD_TYPES[datatype]).itemsize
        if count < 1 or offset < 0 or offset + itemsize * count > point_step:
            raise ConversionError(
                f"PointCloud2.fields['{name}'] (offset {offset}, count {count}) does not fit point_step {point_step}"
            )
        fields[name] = (offset, endian + POINTFIELD_TYPES[datatype])
    missing = [c for c in ("x", "y", "z") if c not in fields]
    if missing:
        raise ConversionError(f"PointCloud2.fields lacks {', '.join(missing)}")

    nuscenes_layout = [(4 * i, "<f4") for i in range(5)]
    if (
        point_step == 20
        and row_step == width * 20
        and [fields.get(name) for name in XYZIR_NAMES] == nuscenes_layout
    ):
        out = data.view("<f4").reshape(n, 5)  # zero-copy
    else:
        if row_step != width * point_step:  # drop per-row padding
            data = np.ascontiguousarray(data.reshape(height, row_step)[:, : width * point_step]).reshape(-1)
        present = [name for name in XYZIR_NAMES if name in fields]
        dtype = np.dtype(
            {
                "names": present,
                "formats": [fields[k][1] for k in present],
                "offsets": [fields[k][0] for k in present],
                "itemsize": point_step,
            }
        )
        rec = np.frombuffer(data, dtype=dtype, count=n)
        out = np.zeros((n, 5), np.float32)
        for col, name in enumerate(XYZIR_NAMES):
            if name in fields:
                out[:, col] = rec[name]
    if drop_invalid:
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            out = out[finite]
    return out


def pointfields_from_dtype(dtype: np.dtype) -> list[tuple[str, int, int, int]]:
    """PointField tuples (name, offset, datatype, count) describing a structured numpy dtype."""
    out = []
    for name in dtype.names or ():
        sub, offset = dtype.fields[name][:2]
        base, count = (sub.base, int(np.prod(sub.shape))) if sub.shape else (sub, 1)
        code = base.str[1:]
        if code not in POINTFIELD_CODES:
            raise ValueError(f"field '{name}' has dtype {base} which PointField cannot describe")
        out.append((name, int(offset), POINTFIELD_CODES[code], count))
    return out


def xyzir_to_pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """(P, 5) float32 x y z intensity ring -> sensor_msgs/msg/PointCloud2 (point_step 20)."""
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.ascontiguousarray(points, dtype="<f4")
    if pts.ndim != 2 or pts.shape[1] != 5:
        raise ValueError(f"points must be (P, 5), got {points.shape}")
    msg = PointCloud2()
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nsec(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, pts.shape[0]
    msg.fields = [PointField(name=n, offset=4 * i, datatype=FLOAT32, count=1) for i, n in enumerate(XYZIR_NAMES)]
    msg.is_bigendian = False
    msg.point_step, msg.row_step = 20, 20 * pts.shape[0]
    msg.data = pts.tobytes()
    msg.is_dense = bool(np.isfinite(pts).all())
    return msg


# --- images ----------------------------------------------------------------------------------

# encoding -> (channels, cv2 conversion to RGB or None for "already RGB")
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


def _check_dims(height: int, width: int, what: str) -> None:
    if height <= 0 or width <= 0:
        raise ConversionError(f"{what}: empty image ({height}x{width})")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise ConversionError(f"{what}: {height}x{width} exceeds the size limit")


@_converts("Image")
def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB.

    rgb8 without row padding is a zero-copy view of msg.data; other encodings are converted.
    """
    encoding = str(msg.encoding)
    if encoding not in RAW_ENCODINGS:
        raise ConversionError(f"Image.encoding '{encoding}' is not one of {', '.join(RAW_ENCODINGS)}")
    channels, code = RAW_ENCODINGS[encoding]
    height = _uint(msg.height, "Image.height")
    width = _uint(msg.width, "Image.width")
    step = _uint(msg.step, "Image.step")
    _check_dims(height, width, "Image")
    if step < width * channels:
        raise ConversionError(f"Image.step={step} < width*channels={width * channels} for {encoding}")
    data = _bytes_view(msg.data, "Image.data")
    if data.size != step * height:
        raise ConversionError(f"Image.data has {data.size} bytes, expected step*height = {step * height}")
    img = data.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if code is None:
        return img
    return cv2.cvtColor(np.ascontiguousarray(img), code)


@_converts("CompressedImage")
def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG, by content) -> (H, W, 3) uint8 RGB.

    Checks the header's size before decoding, rejects truncated JPEGs (no end-of-image
    marker) and anything OpenCV cannot decode.
    """
    data, (height, width), _ = checked_compressed_image(msg)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[:2] != (height, width):
        raise ConversionError(f"CompressedImage: corrupt image data (format '{msg.format}')")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@_converts("CompressedImage")
def checked_compressed_image(msg: Any) -> tuple[np.ndarray, tuple[int, int], str]:
    """(data (n,) uint8, (H, W) from the header, "jpeg" or "png") of a CompressedImage whose header
    and size pass the checks every decoder needs (truncation, dimensions); ConversionError else."""
    data = _bytes_view(msg.data, "CompressedImage.data")
    if data.size < 8:
        raise ConversionError(f"CompressedImage.data is {data.size} bytes (format '{msg.format}')")
    head = data[:32].tobytes()
    if head[:3] == b"\xff\xd8\xff":
        try:
            height, width = jpeg_size(data[: 1 << 16].tobytes())
        except JpegHeaderError as exc:
            raise ConversionError(f"CompressedImage: {exc}") from None
        if height == 0:
            raise ConversionError("CompressedImage: JPEG with height 0 (DNL) is not supported")
        if not has_end_marker(data[-4096:].tobytes()):
            raise ConversionError("CompressedImage: truncated JPEG (no end-of-image marker)")
        kind = "jpeg"
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise ConversionError("CompressedImage: corrupt PNG header")
        width = int.from_bytes(head[16:20], "big")
        height = int.from_bytes(head[20:24], "big")
        kind = "png"
    else:
        raise ConversionError(f"CompressedImage: unsupported or corrupt data (format '{msg.format}'; JPEG and PNG are decoded)")
    _check_dims(height, width, "CompressedImage")
    return data, (height, width), kind


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Image or CompressedImage (told apart by their fields) -> (H, W, 3) uint8 RGB."""
    if hasattr(msg, "encoding"):
        return image_to_rgb(msg)
    if hasattr(msg, "format"):
        return compressed_image_to_rgb(msg)
    raise ConversionError(f"{type(msg).__name__} is neither sensor_msgs/Image nor CompressedImage")


# --- CameraInfo ------------------------------------------------------------------------------


@_converts("CameraInfo")
def camera_info_to_k(msg: Any) -> np.ndarray:
    """sensor_msgs/CameraInfo -> K (3, 3) float64, checked to be a calibrated pinhole matrix."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise ConversionError(f"CameraInfo.k has {k.size} values, expected 9")
    if not np.isfinite(k).all():
        raise ConversionError("CameraInfo.k has NaN/Inf")
    K = k.reshape(3, 3)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ConversionError(f"CameraInfo.k: focal lengths fx={K[0, 0]}, fy={K[1, 1]} must be > 0 (uncalibrated?)")
    if not np.allclose(K[2], (0.0, 0.0, 1.0), atol=1e-6) or K[1, 0] != 0:
        raise ConversionError(f"CameraInfo.k is not a pinhole matrix (bottom row {K[2].tolist()})")
    _check_dims(_uint(msg.height, "CameraInfo.height"), _uint(msg.width, "CameraInfo.width"), "CameraInfo")
    return K.copy()


# --- transforms ------------------------------------------------------------------------------


class StampedTransform(NamedTuple):
    parent: str
    child: str
    stamp_ns: int
    matrix: np.ndarray  # (4, 4) T_parent_child


def _frame_id(name: Any, field: str) -> str:
    frame = str(name).lstrip("/")  # tf2 strips a leading slash
    if not frame:
        raise ConversionError(f"{field} is empty")
    return frame


@_converts("Transform")
def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) float64; rejects NaN and non-unit quaternions (tf2 rule)."""
    t, r = transform.translation, transform.rotation
    trans = np.array([t.x, t.y, t.z], dtype=np.float64)
    quat = np.array([r.x, r.y, r.z, r.w], dtype=np.float64)
    if not (np.isfinite(trans).all() and np.isfinite(quat).all()):
        raise ConversionError("Transform has NaN/Inf")
    norm2 = float(quat @ quat)
    if abs(norm2 - 1.0) > 0.01:
        raise ConversionError(f"Transform.rotation is not a unit quaternion (|q|^2 = {norm2:.4g})")
    return transform_from_xyzw(trans, quat / np.sqrt(norm2))


@_converts("TransformStamped")
def transform_stamped_to_matrix(msg: Any) -> StampedTransform:
    """geometry_msgs/TransformStamped -> (parent, child, stamp_ns, T_parent_child)."""
    parent = _frame_id(msg.header.frame_id, "TransformStamped.header.frame_id")
    child = _frame_id(msg.child_frame_id, "TransformStamped.child_frame_id")
    if parent == child:
        raise ConversionError(f"TransformStamped: frame '{parent}' is its own parent")
    return StampedTransform(parent, child, header_stamp_ns(msg), transform_to_matrix(msg.transform))


def matrix_to_transform_stamped(T: np.ndarray, parent: str, child: str, stamp_ns: int) -> Any:
    """(4, 4) T_parent_child -> geometry_msgs/msg/TransformStamped."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nsec(stamp_ns)
    msg.header.frame_id, msg.child_frame_id = parent, child
    x, y, z = (float(v) for v in T[:3, 3])
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = x, y, z
    q = matrix_to_quat(T[:3, :3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


# --- our voxel message -----------------------------------------------------------------------


@_converts("SemanticVoxelGrid")
def voxel_grid_to_labels(msg: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """fusionocc_msgs/SemanticVoxelGrid -> (labels (X, Y, Z) uint8, confidence or None)."""
    shape = tuple(_uint(getattr(msg, f"size_{a}"), f"SemanticVoxelGrid.size_{a}", 4096) for a in "xyz")
    n = shape[0] * shape[1] * shape[2]
    labels = _bytes_view(msg.labels, "SemanticVoxelGrid.labels")
    if labels.size != n:
        raise ConversionError(f"SemanticVoxelGrid.labels has {labels.size} values, expected {shape} = {n}")
    conf = _bytes_view(msg.confidence, "SemanticVoxelGrid.confidence")
    if conf.size not in (0, n):
        raise ConversionError(f"SemanticVoxelGrid.confidence has {conf.size} values, expected 0 or {n}")
    return labels.reshape(shape), (conf.reshape(shape) if conf.size else None)

"""Output encoders: occupancy labels (X, Y, Z) uint8 -> serialized ROS 2 messages, fast.

Contract: each encoder's `encode(labels, stamp_ns, ...) -> bytes` returns CDR bytes (with the
encapsulation header) of one message, ready for rclpy's `Publisher.publish(bytes)` or a rosbags
`Writer.write`. The byte layout comes from the .msg definitions (`fusionocc_ros.cdr.serialize`);
these encoders only say what goes in each field, the bulk arrays as numpy rows. The node, replay
and the converter (ground truth) all publish/write through them.

  MarkerArrayEncoder   visualization_msgs/MarkerArray: a DELETEALL marker (so classes that
                       vanished disappear), then one CUBE_LIST per class present (ns = class
                       name, id = class index, class colour, scale = voxel size, lifetime set)
  VoxelGridEncoder     fusionocc_msgs/SemanticVoxelGrid (dense labels, optional confidence)
  PointCloudEncoder    sensor_msgs/PointCloud2 x y z rgb label of the occupied voxel centres
  RateLimiter          time-based throttle for an output (the node's marker rate limit)
Voxels with the free label, or of classes outside the class filter, are never drawn. No loops
over voxels: building the 50k-voxel MarkerArray is a few numpy passes plus one bytes join.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import numpy as np

from fusionocc_core.classes import CLASS_INDEX, CLASS_NAMES, FREE_LABEL, NUM_CLASSES, PALETTE
from fusionocc_core.config import GridConfig
from fusionocc_ros.cdr import header, prepare, serialize
from fusionocc_ros.conversions import FLOAT32, UINT8, ns_to_sec_nsec
from rosbag_tools.typestore import VOXEL_GRID_TYPE

MARKER_ARRAY_TYPE = "visualization_msgs/msg/MarkerArray"
POINT_CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
CUBE_LIST = 6  # visualization_msgs/Marker type
ADD, DELETEALL = 0, 3  # visualization_msgs/Marker actions


def cubic_voxel_size(grid: GridConfig) -> float:
    """The edge of the grid's voxels; ValueError unless they are cubes (a marker scale and the
    voxel message's `resolution` hold one size)."""
    sizes = set(grid.voxel_size)
    if len(sizes) != 1:
        raise ValueError(f"voxels must be cubic for the output messages, got {grid.voxel_size}")
    return float(sizes.pop())


def class_mask(classes: Iterable[str | int] | None = None) -> np.ndarray:
    """(NUM_CLASSES,) bool of the classes to draw; None = every non-free class. Unknown names raise."""
    mask = np.zeros(NUM_CLASSES, bool)
    if classes is None:
        mask[:] = True
    else:
        for c in classes:
            idx = CLASS_INDEX.get(c) if isinstance(c, str) else int(c)
            if idx is None or not 0 <= idx < NUM_CLASSES:
                raise ValueError(f"unknown class {c!r} (classes: {', '.join(CLASS_NAMES)})")
            mask[idx] = True
    mask[FREE_LABEL] = False
    return mask


Drawn = tuple[np.ndarray, np.ndarray, np.ndarray]  # occupied_voxels' (index, label, counts)


def occupied_voxels(labels: np.ndarray, mask: np.ndarray) -> Drawn:
    """Flat indices and labels of the drawn voxels, grouped by class, plus per-class counts.

    Returns (index (n,) int64, label (n,) uint8, counts (NUM_CLASSES,)); labels >= NUM_CLASSES
    are ignored. Within a class, voxels keep C order.
    """
    lut = np.zeros(256, bool)
    lut[:NUM_CLASSES] = mask
    flat = labels.reshape(-1)
    index = np.flatnonzero(lut[flat])  # (n,)
    lab = flat[index]
    order = np.argsort(lab, kind="stable")  # radix sort for uint8
    index, lab = index[order], lab[order]
    return index, lab, np.bincount(lab, minlength=NUM_CLASSES)


def _colors_rgba(alpha: float) -> np.ndarray:
    """(NUM_CLASSES, 4) float32 class colours in [0, 1]."""
    rgba = np.ones((NUM_CLASSES, 4), np.float32)
    rgba[:, :3] = PALETTE.astype(np.float32) / 255.0
    rgba[:, 3] = alpha
    return rgba


def _time(stamp_ns: int) -> dict[str, int]:
    """builtin_interfaces Time/Duration value."""
    sec, nsec = ns_to_sec_nsec(stamp_ns)
    return {"sec": sec, "nanosec": nsec}


def _rgba(color: np.ndarray) -> dict[str, float]:
    r, g, b, a = (float(v) for v in color)
    return {"r": r, "g": g, "b": b, "a": a}


IDENTITY_POSE = {"orientation": {"w": 1.0}}


# --- MarkerArray -----------------------------------------------------------------------------


class MarkerArrayEncoder:
    """One CUBE_LIST marker per drawn class, after a DELETEALL (see the module docstring)."""

    def __init__(
        self,
        frame_id: str = "base_link",
        classes: Iterable[str | int] | None = None,
        alpha: float = 1.0,
        lifetime_s: float = 1.0,
        frame_locked: bool = False,
        delete_all: bool = True,
        grid: GridConfig | None = None,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not lifetime_s >= 0.0:
            raise ValueError(f"lifetime_s must be >= 0 (0 = forever), got {lifetime_s}")
        self.frame_id = frame_id
        self.mask = class_mask(classes)
        self.colors = _colors_rgba(alpha)
        self.lifetime = _time(int(round(lifetime_s * 1e9)))
        self.frame_locked = bool(frame_locked)
        self.delete_all = bool(delete_all)
        self.grid = grid or GridConfig()
        self.voxel_size = cubic_voxel_size(self.grid)
        prepare(MARKER_ARRAY_TYPE)

    def groups(self, labels: np.ndarray, drawn: Drawn | None = None) -> list[tuple[int, np.ndarray]]:
        """[(class, (n, 3) float64 centres)] for the drawn classes present, in class order. `drawn`:
        occupied_voxels(labels, self.mask) when the caller already has it (shared by the encoders)."""
        index, _, counts = drawn or occupied_voxels(self.grid.check_labels(labels), self.mask)
        centers = self.grid.centers(index)  # (n, 3), grouped by class
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [(c, centers[bounds[c] : bounds[c + 1]]) for c in range(NUM_CLASSES) if counts[c]]

    def markers(self, labels: np.ndarray, stamp_ns: int, drawn: Drawn | None = None) -> list[dict[str, Any]]:
        """The visualization_msgs/Marker values (dicts; points as (n, 3) float64 rows)."""
        head = header(stamp_ns, self.frame_id)
        out: list[dict[str, Any]] = []
        if self.delete_all:
            out.append({"header": head, "action": DELETEALL, "pose": IDENTITY_POSE})
        size = self.voxel_size
        for c, centers in self.groups(labels, drawn):
            out.append({
                "header": head, "ns": CLASS_NAMES[c], "id": c, "type": CUBE_LIST, "action": ADD,
                "pose": IDENTITY_POSE, "scale": {"x": size, "y": size, "z": size},
                "color": _rgba(self.colors[c]), "lifetime": self.lifetime,
                "frame_locked": self.frame_locked, "points": centers,
            })
        return out

    def encode(self, labels: np.ndarray, stamp_ns: int, drawn: Drawn | None = None) -> bytes:
        """CDR bytes of the MarkerArray for one prediction stamped with the LiDAR stamp."""
        return serialize(MARKER_ARRAY_TYPE, {"markers": self.markers(labels, stamp_ns, drawn)})


# --- SemanticVoxelGrid -----------------------------------------------------------------------


class VoxelGridEncoder:
    """fusionocc_msgs/SemanticVoxelGrid with the class table of fusionocc_core.classes."""

    def __init__(self, frame_id: str = "base_link", grid: GridConfig | None = None):
        self.frame_id = frame_id
        self.grid = grid or GridConfig()
        self.voxel_size = cubic_voxel_size(self.grid)
        self.colors = _colors_rgba(1.0)
        prepare(VOXEL_GRID_TYPE)

    def value(self, labels: np.ndarray, stamp_ns: int, confidence: np.ndarray | None = None) -> dict[str, Any]:
        """The message value (labels and confidence as flat uint8 arrays, copied once)."""
        x, y, z = (float(v) for v in self.grid.lower)
        return {
            "header": header(stamp_ns, self.frame_id),
            "origin": {"position": {"x": x, "y": y, "z": z}, "orientation": {"w": 1.0}},
            "resolution": self.voxel_size,
            "size_x": int(self.grid.shape[0]), "size_y": int(self.grid.shape[1]), "size_z": int(self.grid.shape[2]),
            "class_names": list(CLASS_NAMES),
            "class_colors": self.colors,  # (18, 4) float32 rows of std_msgs/ColorRGBA
            "free_label": FREE_LABEL,
            "labels": self.grid.check_labels(labels).reshape(-1),
            "confidence": np.zeros(0, np.uint8) if confidence is None else self.grid.check_labels(confidence).reshape(-1),
        }

    def encode(self, labels: np.ndarray, stamp_ns: int, confidence: np.ndarray | None = None) -> bytes:
        """CDR bytes of the voxel message."""
        return serialize(VOXEL_GRID_TYPE, self.value(labels, stamp_ns, confidence))


# --- PointCloud2 -----------------------------------------------------------------------------

CLOUD_DTYPE = np.dtype(
    {"names": ["x", "y", "z", "rgb", "label"], "formats": ["<f4", "<f4", "<f4", "<f4", "u1"],
     "offsets": [0, 4, 8, 12, 16], "itemsize": 20}
)
CLOUD_FIELDS = (("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("rgb", 12, FLOAT32, 1), ("label", 16, UINT8, 1))


@lru_cache(maxsize=4)
def _centre_records(x: tuple, y: tuple, z: tuple) -> np.ndarray:
    """(X*Y*Z,) read-only CLOUD_DTYPE records of every voxel centre of a grid (rgb and label zero)."""
    grid = GridConfig(x, y, z)
    centres = grid.centers(np.arange(int(np.prod(grid.shape))), np.float32)
    records = np.zeros(len(centres), CLOUD_DTYPE)
    for axis, name in enumerate("xyz"):
        records[name] = centres[:, axis]
    records.setflags(write=False)
    return records


def packed_rgb() -> np.ndarray:
    """(NUM_CLASSES,) float32 whose bits are 0x00RRGGBB (the PCL/rviz 'rgb' convention)."""
    rgb = PALETTE.astype(np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)


class PointCloudEncoder:
    """sensor_msgs/PointCloud2 (x y z rgb label, point_step 20) at the drawn voxel centres."""

    def __init__(self, frame_id: str = "base_link", classes: Iterable[str | int] | None = None, grid: GridConfig | None = None):
        self.frame_id = frame_id
        self.mask = class_mask(classes)
        self.grid = grid or GridConfig()
        self.voxel_size = cubic_voxel_size(self.grid)
        self.rgb = packed_rgb()
        prepare(POINT_CLOUD_TYPE)

    def points(self, labels: np.ndarray, drawn: Drawn | None = None) -> np.ndarray:
        """(n,) CLOUD_DTYPE records of the drawn voxels (`drawn` as in MarkerArrayEncoder.groups):
        one gather of 20-byte records whose centres are filled in, then the colour and label."""
        index, lab, _ = drawn or occupied_voxels(self.grid.check_labels(labels), self.mask)
        rows = np.take(_centre_records(self.grid.x, self.grid.y, self.grid.z), index)
        rows["rgb"] = self.rgb[lab]
        rows["label"] = lab
        return rows

    def value(self, labels: np.ndarray, stamp_ns: int, drawn: Drawn | None = None) -> dict[str, Any]:
        """The message value (data = the packed points as raw bytes)."""
        pts = self.points(labels, drawn)
        return {
            "header": header(stamp_ns, self.frame_id),
            "height": 1, "width": pts.size,
            "fields": [{"name": n, "offset": o, "datatype": d, "count": c} for n, o, d, c in CLOUD_FIELDS],
            "is_bigendian": False,
            "point_step": CLOUD_DTYPE.itemsize, "row_step": CLOUD_DTYPE.itemsize * pts.size,
            "data": pts.view(np.uint8),
            "is_dense": True,
        }

    def encode(self, labels: np.ndarray, stamp_ns: int, drawn: Drawn | None = None) -> bytes:
        """CDR bytes of the cloud."""
        return serialize(POINT_CLOUD_TYPE, self.value(labels, stamp_ns, drawn))


# --- throttling ------------------------------------------------------------------------------


class RateLimiter:
    """Throttle an output by a time in ns (the node passes its clock, sim time under a bag): let a
    time through when at least 1 / max_rate_hz has passed since the last one let through; 0 Hz =
    no limit. A time going backwards (a looping bag, a time reset) is let through and restarts."""

    def __init__(self, max_rate_hz: float):
        if not max_rate_hz >= 0:
            raise ValueError(f"max_rate_hz must be >= 0, got {max_rate_hz}")
        self.period_ns = int(round(1e9 / max_rate_hz)) if max_rate_hz > 0 else 0
        self._last: int | None = None

    def allow(self, stamp_ns: int) -> bool:
        stamp = int(stamp_ns)
        if self._last is None or stamp < self._last or stamp - self._last >= self.period_ns:
            self._last = stamp
            return True
        return False

"""Small rigid-transform helpers (nuScenes quaternions are w, x, y, z)."""
from __future__ import annotations

import numpy as np

from fusionocc_core.data.poses import invert, quaternion_matrix


quat_to_matrix = quaternion_matrix  # (4,) w x y z -> (3, 3), normalised first


def yaw_to_quat(yaw: float) -> list[float]:
    """Rotation about +z by `yaw` radians as a w x y z quaternion list."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def yaw_transform(x: float, y: float, yaw: float) -> np.ndarray:
    """(4, 4) planar pose: rotation about z by yaw, translation (x, y, 0)."""
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    out[0, 3], out[1, 3] = x, y
    return out


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (..., 3) points."""
    return points @ transform[:3, :3].T + transform[:3, 3]


rigid_inverse = invert  # inverse of a (4, 4) rigid transform (R^T, -R^T t)


def transform_points(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray | None = None) -> np.ndarray:
    """points (P, 3) -> points @ rotation.T + translation, component-wise (no BLAS threads: the
    generator runs one process per core)."""
    r = rotation.astype(points.dtype)
    out = np.empty_like(points)
    for a in range(3):
        out[:, a] = r[a, 0] * points[:, 0] + r[a, 1] * points[:, 1] + r[a, 2] * points[:, 2]
        if translation is not None:
            out[:, a] += translation[a]
    return out

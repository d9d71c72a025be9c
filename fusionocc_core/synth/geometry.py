"""Small rigid-transform helpers (nuScenes quaternions are w, x, y, z)."""
from __future__ import annotations

import numpy as np


def quat_to_matrix(q: np.ndarray | list[float]) -> np.ndarray:
    """(4,) quaternion w x y z -> (3, 3) rotation matrix (normalised first)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def yaw_to_quat(yaw: float) -> list[float]:
    """Rotation about +z by `yaw` radians as a w x y z quaternion list."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def make_transform(rotation: np.ndarray, translation: np.ndarray | list[float]) -> np.ndarray:
    """(3, 3) rotation (or w x y z quaternion) + (3,) translation -> (4, 4) homogeneous matrix."""
    rot = np.asarray(rotation, np.float64)
    if rot.shape == (4,):
        rot = quat_to_matrix(rot)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.asarray(translation, np.float64)
    return out


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


def rigid_inverse(transform: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform (R^T, -R^T t), without a general matrix inverse."""
    out = np.eye(4)
    out[:3, :3] = transform[:3, :3].T
    out[:3, 3] = -transform[:3, :3].T @ transform[:3, 3]
    return out


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

"""The one rigid-transform convention of the project, numpy only.

A transform is a (4, 4) float64 matrix T_parent_child mapping child-frame points into the parent
frame, built as `transform_matrix(translation, rotation)`: translation first, rotation a
(w, x, y, z) quaternion (nuScenes' order) or a (3, 3) matrix. ROS messages order quaternions
(x, y, z, w): `fusionocc_ros.rigid` converts at that boundary and nowhere else.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion (w, x, y, z) (normalised first, as pyquaternion does)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(np.asarray(q, np.float64))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def transform_matrix(translation: Sequence[float], rotation: Sequence[float] | np.ndarray) -> np.ndarray:
    """(4, 4) float64 child -> parent transform from a translation and a (w, x, y, z) quaternion
    (a nuScenes record) or a (3, 3) rotation matrix."""
    rot = np.asarray(rotation, np.float64)
    m = np.eye(4)
    m[:3, :3] = rot if rot.shape == (3, 3) else quaternion_matrix(rot)
    m[:3, 3] = np.asarray(translation, np.float64)
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform."""
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def apply(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Points (P, 3) mapped by the (4, 4) transform m (float64 maths, input dtype out)."""
    return (np.asarray(xyz, np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.asarray(xyz).dtype, copy=False)

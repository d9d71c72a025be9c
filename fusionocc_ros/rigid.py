"""The ROS side of the transform convention (numpy only): geometry_msgs quaternions are
(x, y, z, w); everything else is `fusionocc_core.data.poses` ((4, 4) T_parent_child matrices,
translation first, (w, x, y, z) quaternions). Also slerp for the TF buffer and the
merging of LiDAR sweeps into one float32 cloud.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fusionocc_core.data.poses import quaternion_matrix, transform_matrix


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) quaternion x y z w (geometry_msgs order) -> (3, 3) rotation matrix, normalised first."""
    x, y, z, w = (float(v) for v in q)
    return quaternion_matrix((w, x, y, z))


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion x y z w with w >= 0 (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    out = np.array(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0 else out


def transform_from_xyzw(translation: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """Translation (3,) + geometry_msgs quaternion (4,) x y z w -> (4, 4) T_parent_child."""
    x, y, z, w = (float(v) for v in quat_xyzw)
    return transform_matrix(translation, (w, x, y, z))


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (shortest arc), alpha in [0, 1]."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to ~1e-7 and avoids 0/0
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / sin_theta


def merge_clouds(clouds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """[((4, 4) T, (P_k, C) points x y z + C-3 attributes)] -> one (sum P_k, C) float32 cloud: each
    cloud's xyz mapped by its T, attributes kept. One small GEMM per cloud ([R^T 0; 0 I] on the
    contiguous rows) writes straight into the output, then the translation column by column: 6x
    faster than per-cloud (P, 3) products and concatenations at 250k points (numpy's strided
    paths loop per row). A non-finite value spreads to its point's other values (0 * inf), and
    such points are dropped downstream anyway."""
    width = clouds[0][1].shape[1] if clouds else 5
    out = np.empty((sum(len(points) for _, points in clouds), width), np.float32)
    start = 0
    for T, points in clouds:
        end = start + len(points)
        if end > start:
            M = np.eye(width, dtype=np.float32)
            M[:3, :3] = T[:3, :3].T
            np.matmul(np.ascontiguousarray(points, np.float32), M, out=out[start:end])
            for axis in range(3):
                out[start:end, axis] += np.float32(T[axis, 3])
        start = end
    return out

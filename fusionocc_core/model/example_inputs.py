"""A synthetic, correctly shaped model batch on a nuScenes-like camera rig (tests and benchmarks).

Six cameras at 1.5 m looking at yaw 55/0/-55/110/180/-110 deg with a 1600x900 pinhole, the
official test image transform, a ground plane plus a few boxes as LiDAR points, their sparse
depth maps, and a matching occupancy target (ground = driveable_surface, boxes = car).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fusionocc_core.classes import CLASS_INDEX, FREE_LABEL
from fusionocc_core.config import Config
from fusionocc_core.data.transforms import eval_image_aug, image_aug_matrices, sparse_depth_maps

CAMERA_YAWS_DEG = (55.0, 0.0, -55.0, 110.0, 180.0, -110.0)  # CAMERA_NAMES order
SRC_HW = (900, 1600)


def rig_extrinsics(yaws_deg: tuple[float, ...] = CAMERA_YAWS_DEG, height: float = 1.5) -> np.ndarray:
    """(N, 4, 4) camera optical frame (x right, y down, z forward) -> ego (x forward, z up)."""
    out = []
    for yaw in np.radians(yaws_deg):
        fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        T = np.eye(4)
        T[:3, :3] = np.stack([right, down, fwd], axis=1)
        T[:3, 3] = (0.5 * fwd[0], 0.5 * fwd[1], height)
        out.append(T)
    return np.stack(out).astype(np.float32)


def rig_intrinsics(n: int = 6) -> np.ndarray:
    """(N, 3, 3) nuScenes-like pinhole for 1600x900 images."""
    K = np.array([[1266.0, 0.0, 800.0], [0.0, 1266.0, 450.0], [0.0, 0.0, 1.0]], np.float32)
    return np.repeat(K[None], n, axis=0)


def scene_points(rng: np.random.Generator, num_points: int) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """(P, 5) x y z intensity ring: 70% ground (z = -0.5... 0) and 30% on up to 4 car boxes."""
    n_ground = int(num_points * 0.7)
    r = rng.uniform(2.0, 39.0, n_ground)
    a = rng.uniform(-math.pi, math.pi, n_ground)
    ground = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-0.45, -0.35, n_ground)], 1)
    boxes = []
    parts = [ground]
    for _ in range(4):
        cx, cy = rng.uniform(-30, 30, 2)
        if abs(cx) < 4 and abs(cy) < 4:
            cx += 8.0
        boxes.append((cx - 2.0, cy - 1.0, -0.4, cx + 2.0, cy + 1.0, 1.2))
    n_box = (num_points - n_ground) // len(boxes)
    for x0, y0, z0, x1, y1, z1 in boxes:
        parts.append(np.stack([rng.uniform(x0, x1, n_box), rng.uniform(y0, y1, n_box), rng.uniform(z0, z1, n_box)], 1))
    xyz = np.concatenate(parts).astype(np.float32)
    extra = np.stack([rng.uniform(0, 100, len(xyz)), rng.integers(0, 32, len(xyz))], 1).astype(np.float32)
    return np.concatenate([xyz, extra], 1), boxes


def scene_labels(cfg: Config, boxes: list[tuple[float, ...]]) -> np.ndarray:
    """(X, Y, Z) uint8 labels: free everywhere, driveable_surface on the ground layer, car in boxes."""
    g = cfg.grid
    X, Y, Z = g.shape
    labels = np.full((X, Y, Z), FREE_LABEL, np.uint8)
    centres = [lo + st * (np.arange(n) + 0.5) for (lo, _, st), n in zip((g.x, g.y, g.z), (X, Y, Z))]
    kz = int(np.argmin(np.abs(centres[2] - (-0.4))))
    labels[:, :, kz] = CLASS_INDEX["driveable_surface"]
    for x0, y0, z0, x1, y1, z1 in boxes:
        ix = (centres[0] >= x0) & (centres[0] <= x1)
        iy = (centres[1] >= y0) & (centres[1] <= y1)
        iz = (centres[2] >= z0) & (centres[2] <= z1)
        labels[np.ix_(ix, iy, iz)] = CLASS_INDEX["car"]
    return labels


def example_batch(cfg: Config, batch_size: int = 1, seed: int = 0, num_points: int = 4000,
                  with_targets: bool = True) -> dict:
    """A batch dict (fusionocc_core.frame) with random images and consistent geometry/targets."""
    rng = np.random.default_rng(seed)
    d = cfg.data
    T, N = 1 + d.num_adj_img_frames, len(d.cameras)
    H, W = d.input_size
    s2e = rig_extrinsics()[:N]
    K = rig_intrinsics(N)
    post_rot, post_tran = image_aug_matrices(eval_image_aug(SRC_HW, (H, W)))
    lo, hi, _ = cfg.grid.depth
    batch: dict = {k: [] for k in ("imgs", "intrins", "sensor2ego", "post_rots", "post_trans", "bda", "points",
                                   "sparse_depth", "voxel_semantics", "mask_camera", "mask_lidar", "seg_labels")}
    for _ in range(batch_size):
        pts, boxes = scene_points(rng, num_points)
        s2e_t = np.repeat(s2e[None], T, 0).copy()
        for t in range(1, T):  # previous frames: the ego was ~2.5 m behind per frame
            s2e_t[t, :, 0, 3] -= 2.5 * t
        batch["imgs"].append(rng.standard_normal((T, N, 3, H, W), dtype=np.float32))
        batch["intrins"].append(np.repeat(K[None], T, 0))
        batch["sensor2ego"].append(s2e_t)
        batch["post_rots"].append(np.broadcast_to(post_rot, (T, N, 3, 3)).copy())
        batch["post_trans"].append(np.broadcast_to(post_tran, (T, N, 3)).copy())
        batch["bda"].append(np.eye(3, dtype=np.float32))
        batch["points"].append(torch.from_numpy(pts))
        batch["sparse_depth"].append(sparse_depth_maps(pts, s2e, K, np.repeat(post_rot[None], N, 0),
                                                       np.repeat(post_tran[None], N, 0), (H, W), (lo, hi)))
        labels = scene_labels(cfg, boxes)
        batch["voxel_semantics"].append(labels.astype(np.int64))
        batch["mask_camera"].append(np.ones(labels.shape, bool))
        batch["mask_lidar"].append(np.ones(labels.shape, bool))
        seg = np.full((N, H, W), FREE_LABEL, np.int64)  # 2D labels: road below the horizon row
        seg[:, H // 2:, :] = CLASS_INDEX["driveable_surface"]
        batch["seg_labels"].append(seg)
    out = {k: (v if k == "points" else torch.from_numpy(np.stack(v))) for k, v in batch.items()}
    if not with_targets:
        for k in ("voxel_semantics", "mask_camera", "mask_lidar", "seg_labels"):
            out.pop(k)
    return out

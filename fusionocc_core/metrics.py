"""Occupancy metrics the Occ3D way: a dataset-level 18x18 confusion matrix, IoU per class, mIoU,
and RayIoU (SparseOcc protocol). Pure numpy, vectorised; shared by fusionocc-score/eval/train.

Voxel mIoU follows Metric_mIoU (occ_metrics.py): voxels are selected by `mask_camera`,
`mask_lidar` or not at all, one confusion matrix `bincount(18 * gt + pred)` is accumulated over
all samples, IoU_c = TP / (TP + FP + FN), and mIoU = nanmean over classes 0-16 (free, 17, is in
the matrix but not in the mean). Values are reported in percent (0-100).

RayIoU follows SparseOcc's ray_metrics.py: LiDAR-like rays (its pitch list x 360 azimuths at
1 deg, float32) are cast from up to 8 origins per sample (the LiDAR positions of the scene's
key-frames within |x|, |y| < 39 m of the sample's ego, `sparseocc_origins`) through both volumes
with the geometry and voxel traversal of its `dvr` extension (`cast_rays`); a ray's label is the
first non-free voxel it meets and its depth the distance at which it leaves that voxel (or the
grid). Rays whose ground truth is free are ignored; a ray is a true positive for class c at
threshold t when both labels are c and the float32 depth error is below t metres (t in 1, 2, 4).
RayIoU = nanmean over classes 0-16 and the three thresholds.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from fusionocc_core.classes import FREE_LABEL, GRID_LOWER, GRID_SHAPE, NUM_CLASSES, VOXEL_SIZE
from fusionocc_core.data.poses import transform_matrix

MASK_MODES: tuple[str, ...] = ("camera", "lidar", "none")
RAY_THRESHOLDS_M: tuple[float, ...] = (1.0, 2.0, 4.0)
RAY_MAX_STEPS = 1000  # dvr.cu MAX_STEP
RAY_NUM_ORIGINS = 8  # origins per sample (SparseOcc's EgoPoseDataset)
# nuScenes LIDAR_TOP mount in the ego frame (SparseOcc's comment value): the `--origin ego` point.
NUSCENES_LIDAR_ORIGIN: tuple[float, float, float] = (0.9858, 0.0, 1.8402)


# ----------------------------------------------------------------------------------------------
# voxel mIoU


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None,
                     num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, columns = prediction, over voxels where mask."""
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != prediction shape {pred.shape}")
    if mask is not None:
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} != gt shape {gt.shape}")
        keep = mask.astype(bool, copy=False)
        gt, pred = gt[keep], pred[keep]
    gt = gt.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    if gt.size and (gt.max() >= num_classes or pred.max() >= num_classes or gt.min() < 0 or pred.min() < 0):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """(C,) float64 IoU in percent: TP / (TP + FP + FN); NaN where a class never occurs."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 100.0 * tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(matrix: np.ndarray, free_label: int = FREE_LABEL) -> float:
    """mIoU in percent: nanmean of the per-class IoU over every class except free (NaN if none)."""
    iou = np.delete(iou_per_class(matrix), free_label)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def select_mask(mode: str, mask_camera: np.ndarray | None, mask_lidar: np.ndarray | None) -> np.ndarray | None:
    """The voxel selection for a mask mode: `camera`, `lidar` or `none` (all voxels)."""
    if mode == "camera":
        if mask_camera is None:
            raise ValueError("mask 'camera' needs mask_camera")
        return mask_camera.astype(bool, copy=False)
    if mode == "lidar":
        if mask_lidar is None:
            raise ValueError("mask 'lidar' needs mask_lidar")
        return mask_lidar.astype(bool, copy=False)
    if mode == "none":
        return None
    raise ValueError(f"unknown mask mode '{mode}' (one of {', '.join(MASK_MODES)})")


class ConfusionAccumulator:
    """A dataset-level confusion matrix: `update` per sample, then `miou` / `per_class_iou`."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_samples = 0

    def update(self, gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> None:
        self.matrix += confusion_matrix(gt, pred, mask, self.num_classes)
        self.num_samples += 1

    def per_class_iou(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def miou(self) -> float:
        return mean_iou(self.matrix)


# ----------------------------------------------------------------------------------------------
# RayIoU


def lidar_ray_directions() -> np.ndarray:
    """(R, 3) float32 unit vectors, SparseOcc's `generate_lidar_rays`: its nuScenes-like pitch list
    (10 angles -(pi/2 - atan(k)), then equal steps up to the FOV top at ~0.21 rad) x 360 azimuths
    at 1 deg, pitch-major, stored as float32 as the official does."""
    pitch = [-(math.pi / 2 - math.atan(k + 1)) for k in range(10)]
    while pitch[-1] < 0.21:  # nuScenes LiDAR FOV tops out at ~0.2108 rad
        pitch.append(pitch[-1] + (pitch[-1] - pitch[-2]))
    pitch_a = np.asarray(pitch)[:, None]  # (P, 1)
    azim = np.deg2rad(np.arange(0, 360, 1))[None, :]  # (1, 360)
    dirs = np.stack(np.broadcast_arrays(np.cos(pitch_a) * np.cos(azim), np.cos(pitch_a) * np.sin(azim),
                                        np.sin(pitch_a)), -1)  # (P, 360, 3)
    return dirs.reshape(-1, 3).astype(np.float32)


def _cannot_enter(v: np.ndarray, step: np.ndarray, moving: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """(A,) rays outside the grid along some axis and never coming back along it (moving away, or
    not moving along it): the official loop would spin to its step limit without entering."""
    below = (v < 0) & ((step < 0) | ~moving)
    above = (v >= shape) & ((step > 0) | ~moving)
    return np.any(below | above, axis=1)


def cast_rays(volumes: Sequence[np.ndarray], origin: Sequence[float], directions: np.ndarray,
              grid_lower=GRID_LOWER, voxel_size: float = VOXEL_SIZE, grid_shape=GRID_SHAPE,
              free_label: int = FREE_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """Cast rays from one origin through K label volumes [x][y][z] exactly as SparseOcc's `dvr`
    render_forward (test phase) -> labels (K, R) int64 and depths (K, R) float32 metres.

    The official geometry, kept bit for bit where it matters: origin and ray end point
    (origin + direction, 1 m away) go to voxel units in float64 over a float32 voxel size, are
    rounded to float32, and the direction is their normalised difference (so a tiny direction
    component can become exactly 0); the start voxel is the origin truncated toward zero (an
    origin up to one voxel below the grid starts in layer 0); Amanatides-Woo stepping in float64
    with the official tie-breaking; at most 1000 steps. A ray's label is that of the first voxel
    with a non-free label, its depth the distance at which the ray leaves that voxel; a ray that
    meets none takes the last voxel inside the grid; a ray that never enters the grid (origin above
    or below it) takes voxel (0, 0, 0) and depth -1 voxel. Depth = float32(voxels) * float32(size).
    Vectorised over rays; a ray stops as soon as every volume has been hit."""
    flat = np.stack([np.asarray(vol).reshape(-1) for vol in volumes])  # (K, V)
    num_vol = flat.shape[0]
    shape = np.asarray(grid_shape, dtype=np.int64)
    lower = np.asarray(grid_lower, dtype=np.float64)
    size32 = np.float32(voxel_size)
    o64 = np.asarray(origin, dtype=np.float64).reshape(3)
    o = ((o64 - lower) / np.float64(size32)).astype(np.float32).astype(np.float64)  # (3,) voxel units
    ends = np.asarray(directions, dtype=np.float32).astype(np.float64) + o64  # (R, 3) metres
    e = ((ends - lower) / np.float64(size32)).astype(np.float32).astype(np.float64)  # (R, 3) voxel units
    r = e - o
    d = r / np.sqrt(r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1] + r[:, 2] * r[:, 2])[:, None]  # (R, 3)
    num_rays = d.shape[0]
    step = np.where(d >= 0, 1, -1)  # (R, 3)
    moving = d != 0
    v = np.broadcast_to(np.trunc(o).astype(np.int64), (num_rays, 3)).copy()  # C int(): toward zero
    big = np.finfo(np.float64).max  # DBL_MAX
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max = np.where(moving, ((v + (step > 0)) - o) / d, big)  # (R, 3) to the next border
        t_delta = np.where(moving, step / d, big)  # (R, 3) between borders
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)

    hit_label = np.full((num_vol, num_rays), -1, dtype=np.int64)
    hit_depth = np.zeros((num_vol, num_rays), dtype=np.float64)
    was_inside = np.zeros(num_rays, dtype=bool)
    last_flat = np.zeros(num_rays, dtype=np.int64)  # voxel (0, 0, 0) for rays that never enter
    last_exit = np.full(num_rays, -1.0)  # the official -1 for rays that never enter
    active = np.arange(num_rays)
    steps = 0
    while active.size:
        va = v[active]
        inside = np.all((va >= 0) & (va < shape), axis=1)
        stop = ~inside & (was_inside[active] | _cannot_enter(va, step[active], moving[active], shape))
        if stop.any():
            keep = ~stop
            active, va, inside = active[keep], va[keep], inside[keep]
            if not active.size:
                break
        tm = t_max[active]
        axis = np.where(tm[:, 0] < tm[:, 1], np.where(tm[:, 0] < tm[:, 2], 0, 2), np.where(tm[:, 1] < tm[:, 2], 1, 2))
        rows = np.arange(active.size)
        exit_d = tm[rows, axis]  # leaving the current voxel
        if inside.any():
            ins = active[inside]
            voxel = va[inside] @ strides
            exit_in = exit_d[inside]
            was_inside[ins] = True
            last_flat[ins], last_exit[ins] = voxel, exit_in
            for k in range(num_vol):
                lab = flat[k, voxel]
                new = (hit_label[k, ins] < 0) & (lab != free_label)
                hit_label[k, ins[new]] = lab[new]
                hit_depth[k, ins[new]] = exit_in[new]
        v[active, axis] += step[active, axis]
        t_max[active, axis] += t_delta[active, axis]
        steps += 1
        if steps > RAY_MAX_STEPS:
            break
        active = active[np.any(hit_label[:, active] < 0, axis=0)]  # done once every volume is hit
    missed = hit_label < 0  # (K, R): the last voxel inside (or voxel 0 and depth -1)
    labels = np.where(missed, flat[:, last_flat], hit_label).astype(np.int64)
    depth_vox = np.where(missed, last_exit[None, :], hit_depth)
    return labels, depth_vox.astype(np.float32) * size32


def sparseocc_origins(frames: Sequence[dict]) -> list[np.ndarray]:
    """RayIoU origins of every frame of ONE scene, SparseOcc's EgoPoseDataset: frames are info dicts
    (lidar2ego_* and ego2global_* records) in the scene's time order; for reference frame i, every
    frame's LiDAR position in i's LiDAR frame (float32, 0 for i itself), moved to i's ego frame,
    kept if |x| < 39 m and |y| < 39 m (no height limit), then 8 picked evenly by
    round(linspace(0, n - 1, 8)) when more remain -> one (T, 3) float64 array per frame."""
    ego_from_lidar = np.stack([transform_matrix(f["lidar2ego_translation"], f["lidar2ego_rotation"]) for f in frames])
    global_from_lidar = np.stack([transform_matrix(f["ego2global_translation"], f["ego2global_rotation"])
                                  for f in frames]) @ ego_from_lidar  # (F, 4, 4)
    out = []
    for i in range(len(frames)):
        rel = np.linalg.inv(global_from_lidar[i]) @ global_from_lidar  # (F, 4, 4) frame -> i's LiDAR
        t = rel[:, :3, 3].astype(np.float32).astype(np.float64)
        t[i] = 0.0
        origins = t @ ego_from_lidar[i, :3, :3].T + ego_from_lidar[i, :3, 3]  # (F, 3) in i's ego frame
        origins = origins[(np.abs(origins[:, 0]) < 39) & (np.abs(origins[:, 1]) < 39)]
        if len(origins) > RAY_NUM_ORIGINS:
            origins = origins[np.round(np.linspace(0, len(origins) - 1, RAY_NUM_ORIGINS)).astype(np.int64)]
        out.append(origins)
    return out


class RayIoUAccumulator:
    """Accumulates SparseOcc RayIoU counts over samples (calc_rayiou); `result()` gives percent."""

    def __init__(self, thresholds: tuple[float, ...] = RAY_THRESHOLDS_M, num_classes: int = NUM_CLASSES,
                 free_label: int = FREE_LABEL) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        self.num_classes = num_classes
        self.free_label = free_label
        self.directions = lidar_ray_directions()
        self.gt_count = np.zeros(num_classes, dtype=np.int64)
        self.pred_count = np.zeros(num_classes, dtype=np.int64)
        self.tp_count = np.zeros((len(thresholds), num_classes), dtype=np.int64)
        self.num_samples = 0

    def update(self, gt: np.ndarray, pred: np.ndarray, origins: np.ndarray) -> None:
        """Cast from each origin (T, 3), in the sample's ego frame, through both volumes; rays whose
        ground truth is free are ignored; the depth error is taken in float32 as the official."""
        origins = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
        for origin in origins:
            (gt_label, pred_label), (gt_depth, pred_depth) = cast_rays((gt, pred), origin, self.directions,
                                                                       free_label=self.free_label)
            valid = gt_label != self.free_label
            gt_label, pred_label = gt_label[valid], pred_label[valid]
            err = np.abs(pred_depth[valid] - gt_depth[valid])  # float32
            self.gt_count += np.bincount(gt_label, minlength=self.num_classes)
            self.pred_count += np.bincount(pred_label, minlength=self.num_classes)
            same = gt_label == pred_label
            for j, thr in enumerate(self.thresholds):
                self.tp_count[j] += np.bincount(gt_label[same & (err < thr)], minlength=self.num_classes)
        self.num_samples += 1

    def per_class_iou(self) -> np.ndarray:
        """(K, C) IoU in percent per threshold and class (free column NaN); NaN if never seen."""
        union = self.gt_count[None] + self.pred_count[None] - self.tp_count
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, 100.0 * self.tp_count / np.where(union > 0, union, 1), np.nan)
        iou[:, self.free_label] = np.nan
        return iou

    def result(self) -> dict[str, float]:
        """{'rayiou': mean, 'rayiou@1': ..., 'rayiou@2': ..., 'rayiou@4': ...} in percent."""
        iou = np.delete(self.per_class_iou(), self.free_label, axis=1)
        out = {"rayiou": _nanmean(iou)}
        for thr, row in zip(self.thresholds, iou):
            out[f"rayiou@{thr:g}"] = _nanmean(row)
        return out


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

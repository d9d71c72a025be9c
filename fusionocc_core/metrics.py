"""Occupancy metrics the Occ3D way: a dataset-level 18x18 confusion matrix, IoU per class, mIoU,
and RayIoU (SparseOcc protocol). Pure numpy, vectorised; shared by fusionocc-score/eval/train.

Voxel mIoU follows Metric_mIoU (occ_metrics.py): voxels are selected by `mask_camera`,
`mask_lidar` or not at all, one confusion matrix `bincount(18 * gt + pred)` is accumulated over
all samples, IoU_c = TP / (TP + FP + FN), and mIoU = nanmean over classes 0-16 (free, 17, is in
the matrix but not in the mean). Values are reported in percent (0-100).

RayIoU follows SparseOcc's ray_metrics.py: LiDAR-like rays (its pitch list x 360 azimuths at
1 deg) are cast from the given origins through both volumes with the same voxel traversal as its
`dvr` extension; a ray's label is the first non-free voxel it meets and its depth the distance
at which it leaves that voxel (or the grid). Rays whose ground truth meets nothing are ignored; a
ray is a true positive for class c at threshold t when both labels are c and the depth error is
below t metres (t in 1, 2, 4). RayIoU = nanmean over classes 0-16 and the three thresholds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fusionocc_core.classes import FREE_LABEL, GRID_LOWER, GRID_SHAPE, NUM_CLASSES, VOXEL_SIZE

MASK_MODES: tuple[str, ...] = ("camera", "lidar", "none")
RAY_THRESHOLDS_M: tuple[float, ...] = (1.0, 2.0, 4.0)
# nuScenes LIDAR_TOP mount in the ego frame (SparseOcc's comment value): default ray origin.
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
    """(R, 3) float64 unit vectors: SparseOcc's nuScenes-like pitch list x 360 azimuths (1 deg)."""
    pitch = [-(math.pi / 2 - math.atan(k + 1)) for k in range(10)]
    while pitch[-1] < 0.21:  # nuScenes LiDAR FOV tops out at ~0.2108 rad
        pitch.append(pitch[-1] + (pitch[-1] - pitch[-2]))
    pitch_a = np.asarray(pitch)[:, None]  # (P, 1)
    azim = np.deg2rad(np.arange(0, 360, 1, dtype=np.float64))[None, :]  # (1, 360)
    dirs = np.stack(np.broadcast_arrays(np.cos(pitch_a) * np.cos(azim), np.cos(pitch_a) * np.sin(azim),
                                        np.sin(pitch_a)), -1)  # (P, 360, 3)
    dirs = dirs.reshape(-1, 3).astype(np.float32).astype(np.float64)  # SparseOcc stores float32
    return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


@dataclass
class RayPaths:
    """The voxels every ray crosses, in order, from one origin: geometry only, reusable."""

    flat_index: np.ndarray  # (R, L) int64 index into labels.reshape(-1); padding = grid size
    exit_dist: np.ndarray  # (R, L) float64 metres at which the ray leaves each voxel
    length: np.ndarray  # (R,) int64 number of voxels crossed inside the grid (>= 1)


def trace_rays(origin: np.ndarray, directions: np.ndarray, grid_lower=GRID_LOWER, voxel_size: float = VOXEL_SIZE,
               grid_shape=GRID_SHAPE) -> RayPaths:
    """Amanatides-Woo traversal of all rays at once (lock-step over steps, vectorised over rays).

    Reproduces SparseOcc's dvr traversal, including its tie-breaking between axes. The origin
    must lie inside the grid.
    """
    shape = np.asarray(grid_shape, dtype=np.int64)
    o = (np.asarray(origin, dtype=np.float64) - np.asarray(grid_lower, dtype=np.float64)) / voxel_size  # (3,)
    if not (np.all(o >= 0) and np.all(o < shape)):
        raise ValueError(f"ray origin {tuple(np.asarray(origin).tolist())} lies outside the grid")
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)  # (R, 3)
    num_rays = d.shape[0]
    v = np.broadcast_to(o.astype(np.int64), (num_rays, 3)).copy()  # (R, 3) current voxel
    step = np.where(d >= 0, 1, -1)  # (R, 3)
    boundary = v + (step > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max = np.where(d != 0, (boundary - o) / d, np.inf)  # (R, 3) distance to next border
        t_delta = np.where(d != 0, step / d, np.inf)  # (R, 3) distance between borders
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    pad = int(shape.prod())
    rows = np.arange(num_rays)
    active = np.ones(num_rays, dtype=bool)
    indices, dists = [], []
    while active.any():
        tx, ty, tz = t_max[:, 0], t_max[:, 1], t_max[:, 2]
        axis = np.where(tx < ty, np.where(tx < tz, 0, 2), np.where(ty < tz, 1, 2))  # (R,)
        exit_d = t_max[rows, axis]  # (R,) leaving the current voxel
        indices.append(np.where(active, v @ strides, pad))
        dists.append(np.where(active, exit_d, np.nan))
        v[rows, axis] += step[rows, axis]
        t_max[rows, axis] += t_delta[rows, axis]
        active &= np.all((v >= 0) & (v < shape), axis=1)
    flat_index = np.stack(indices, 1)  # (R, L)
    exit_dist = np.stack(dists, 1) * voxel_size  # (R, L)
    length = (flat_index != pad).sum(1)
    return RayPaths(flat_index, exit_dist, length)


def cast_rays(labels: np.ndarray, paths: RayPaths, free_label: int = FREE_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """Per ray: label of the first non-free voxel (free if none) and its exit depth in metres."""
    flat = np.append(labels.reshape(-1), np.uint8(free_label))  # padding reads free
    along = flat[paths.flat_index]  # (R, L)
    occupied = along != free_label
    hit = occupied.any(1)
    first = np.where(hit, occupied.argmax(1), paths.length - 1)  # (R,)
    rows = np.arange(len(first))
    return along[rows, first].astype(np.int64), paths.exit_dist[rows, first]


class RayIoUAccumulator:
    """Accumulates SparseOcc RayIoU counts over samples; `result()` gives percent values."""

    def __init__(self, thresholds: tuple[float, ...] = RAY_THRESHOLDS_M, num_classes: int = NUM_CLASSES,
                 free_label: int = FREE_LABEL) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.num_classes = num_classes
        self.free_label = free_label
        self.directions = lidar_ray_directions()
        self.gt_count = np.zeros(num_classes, dtype=np.int64)
        self.pred_count = np.zeros(num_classes, dtype=np.int64)
        self.tp_count = np.zeros((len(thresholds), num_classes), dtype=np.int64)
        self.num_samples = 0
        self._paths: dict[tuple[float, float, float], RayPaths] = {}

    def paths_for(self, origin: np.ndarray) -> RayPaths:
        """Traced rays from one origin (cached: a fixed origin is traced once per run)."""
        key = tuple(float(x) for x in np.asarray(origin, dtype=np.float64).reshape(3))
        if key not in self._paths:
            if len(self._paths) > 64:
                self._paths.clear()
            self._paths[key] = trace_rays(np.asarray(key), self.directions)
        return self._paths[key]

    def update(self, gt: np.ndarray, pred: np.ndarray, origins: np.ndarray | None = None) -> None:
        """Cast from each origin (T, 3) in the ego frame (default: the nuScenes LiDAR mount)."""
        origins = np.asarray(NUSCENES_LIDAR_ORIGIN if origins is None else origins, dtype=np.float64).reshape(-1, 3)
        for origin in origins:
            paths = self.paths_for(origin)
            gt_label, gt_depth = cast_rays(gt, paths, self.free_label)
            pred_label, pred_depth = cast_rays(pred, paths, self.free_label)
            valid = gt_label != self.free_label
            gt_label, pred_label = gt_label[valid], pred_label[valid]
            err = np.abs(pred_depth[valid] - gt_depth[valid])
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

"""FusionOcc training losses (reference/fusionocc-architecture.md §1.9), weighted by cfg.train.

* loss_occ: softmax CE over the 18 classes per voxel; with cfg.data.use_mask the voxels are
  weighted by mask_camera and averaged over the camera-visible count (mmdet avg_factor). Optional
  class weights (cfg.train.class_weights) scale each voxel's CE by its label's weight, mmdet-style
  (the mean stays over voxels, not over weights).
* loss_depth: BCE between the key frame's depth distribution and the one-hot of the current
  sweep's sparse depth reduced per feature patch (min non-zero depth, bin lower-edge
  convention), summed over bins and averaged over feature pixels with a LiDAR return.
* loss_seg: CE between the key frame's 2D seg logits and the label map sub-sampled with the
  feature stride, ignoring 17 (no LiDAR label).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from fusionocc_core.classes import FREE_LABEL, NUM_CLASSES
from fusionocc_core.config import Config

SEG_IGNORE = FREE_LABEL  # 2D pixels without a projected LiDAR label carry 17
_EPS = torch.finfo(torch.float32).eps  # mmdet weight_reduce_loss: sum / (avg_factor + eps)


def _need(mapping: Mapping, key: str, where: str) -> torch.Tensor:
    if key not in mapping:
        raise KeyError(f"compute_losses: {where} has no '{key}'")
    return mapping[key]


def _check_labels(labels: torch.Tensor, num: int, name: str) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num):
        raise ValueError(f"batch['{name}'] holds labels outside [0, {num}): min {int(labels.min())}, max {int(labels.max())}")


ENET_C = 1.02  # ENet (Paszke et al. 2016) class weighting: w_c = 1 / ln(c + p_c)


def enet_class_weights(counts: np.ndarray, c: float = ENET_C) -> np.ndarray:
    """(C,) float32 weights 1 / ln(c + p_c) from per-class voxel counts (p_c = share of all voxels)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.sum() <= 0:
        raise ValueError(f"class counts must be a non-empty 1-D array with a positive sum, got {counts!r}")
    return (1.0 / np.log(c + counts / counts.sum())).astype(np.float32)


def resolve_class_weights(spec: object, num_classes: int, counts=None) -> torch.Tensor | None:
    """cfg.train.class_weights -> a (num_classes,) tensor or None.

    `counts` is a zero-argument callable returning the training split's per-class voxel counts;
    it is only called for the "enet" scheme (counting reads every ground-truth file once).
    """
    if spec is None:
        return None
    if spec == "enet":
        if counts is None:
            raise ValueError("train.class_weights 'enet' needs the training split's label counts")
        weights = enet_class_weights(counts())
    elif isinstance(spec, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec):
        weights = np.asarray(spec, np.float32)
    else:
        raise ValueError(f"train.class_weights must be null, 'enet' or a list of {num_classes} numbers, got {spec!r}")
    if weights.shape != (num_classes,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"train.class_weights must hold {num_classes} finite non-negative numbers, got {weights.tolist()}")
    return torch.from_numpy(weights)


def occupancy_loss(occ_logits: torch.Tensor, voxel_semantics: torch.Tensor, mask_camera: torch.Tensor | None = None,
                   class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE of logits (B, X, Y, Z, C) vs labels (B, X, Y, Z); camera-masked mean when mask_camera is given.

    With `class_weight` (C,), each voxel's CE is scaled by the weight of its label; the mean is still
    over voxels (mmdet CrossEntropyLoss), so weights of 1 give the plain loss."""
    if occ_logits.shape[:-1] != voxel_semantics.shape:
        raise ValueError(f"occ_logits {tuple(occ_logits.shape)} do not match voxel_semantics {tuple(voxel_semantics.shape)}")
    num_classes = occ_logits.shape[-1]
    _check_labels(voxel_semantics, num_classes, "voxel_semantics")
    logits = occ_logits.reshape(-1, num_classes).float()  # (B*X*Y*Z, C)
    labels = voxel_semantics.reshape(-1).long()
    if class_weight is not None:
        class_weight = class_weight.to(device=logits.device, dtype=logits.dtype)
        if class_weight.shape != (num_classes,):
            raise ValueError(f"class_weight has shape {tuple(class_weight.shape)}, expected ({num_classes},)")
    if mask_camera is None:
        if class_weight is None:
            return F.cross_entropy(logits, labels)
        return F.cross_entropy(logits, labels, weight=class_weight, reduction="none").mean()
    if mask_camera.shape != voxel_semantics.shape:
        raise ValueError(f"mask_camera {tuple(mask_camera.shape)} does not match voxel_semantics {tuple(voxel_semantics.shape)}")
    weight = mask_camera.reshape(-1).to(logits.dtype)
    per_voxel = F.cross_entropy(logits, labels, weight=class_weight, reduction="none")
    return (per_voxel * weight).sum() / (weight.sum() + _EPS)


def depth_target(sparse_depth: torch.Tensor, downsample: int, depth_cfg: tuple[float, float, float]) -> torch.Tensor:
    """(B, N, H, W) metres (0 = no return) -> one-hot (B*N*h*w, D) of the min depth per patch.

    Bin k covers [lo + k*step, lo + (k+1)*step); depths outside [lo, hi) and patches without a
    return give an all-zero row. Non-finite or non-positive depths count as no return.
    """
    B, N, H, W = sparse_depth.shape
    lo, hi, step = depth_cfg
    num_bins = int(round((hi - lo) / step))
    h, w = H // downsample, W // downsample
    d = sparse_depth.float()
    d = torch.where(torch.isfinite(d) & (d > 0), d, torch.full_like(d, float("inf")))
    d = d.reshape(B * N, h, downsample, w, downsample).amin(dim=(2, 4))  # (B*N, h, w) nearest return
    # official: (d - (lo - step)) / step, truncated; 0 and >= D+1 are dropped, so k = that - 1
    k = torch.floor((d - (lo - step)) / step)
    valid = torch.isfinite(k) & (k >= 1) & (k < num_bins + 1)
    k = torch.where(valid, k - 1, torch.zeros_like(k)).long()
    onehot = F.one_hot(k.reshape(-1), num_bins).float()  # (B*N*h*w, D)
    return onehot * valid.reshape(-1, 1)


def _map_stride(field: str, target: torch.Tensor, output: torch.Tensor, output_name: str) -> int:
    """The integer stride from batch[field] (B, N, H, W) to the per-camera map `output` (B*N, C, h, w);
    a one-line ValueError naming the field when the shapes do not fit."""
    BN, _, h, w = output.shape
    if target.ndim != 4 or target.shape[0] * target.shape[1] != BN:
        raise ValueError(f"batch['{field}'] {tuple(target.shape)} does not match {output_name} {tuple(output.shape)}")
    H, W = target.shape[2:]
    ds = H // h
    if ds < 1 or H != h * ds or W != w * ds:
        raise ValueError(f"batch['{field}'] {H}x{W} is not an integer multiple of the {output_name} map {h}x{w}")
    return ds


def depth_loss(depth_probs: torch.Tensor, sparse_depth: torch.Tensor, depth_cfg: tuple[float, float, float]) -> torch.Tensor:
    """BCE of the depth distribution (B*N, D, h, w) vs the sparse-depth one-hot on pixels with a return."""
    BN, D, h, w = depth_probs.shape
    ds = _map_stride("sparse_depth", sparse_depth, depth_probs, "depth_probs")
    target = depth_target(sparse_depth, ds, depth_cfg)  # (B*N*h*w, D)
    if target.shape[1] != D:
        raise ValueError(f"depth_probs has {D} bins but grid.depth {depth_cfg} gives {target.shape[1]}")
    probs = depth_probs.permute(0, 2, 3, 1).reshape(-1, D).float()  # (B*N*h*w, D)
    fg = target.amax(1) > 0  # pixels with a LiDAR return in range
    with torch.autocast(probs.device.type, enabled=False):
        bce = F.binary_cross_entropy(probs[fg], target[fg], reduction="none").sum()
    return bce / max(1.0, float(fg.sum()))


def seg_loss(seg_logits: torch.Tensor, seg_labels: torch.Tensor) -> torch.Tensor:
    """CE of 2D seg logits (B*N, C, h, w) vs labels (B, N, H, W) sub-sampled by the stride, ignoring 17."""
    BN, C, h, w = seg_logits.shape
    ds = _map_stride("seg_labels", seg_labels, seg_logits, "seg_logits")
    labels = seg_labels[:, :, ::ds, ::ds].reshape(BN, h, w).long()  # every ds-th pixel
    _check_labels(labels, C, "seg_labels")
    logits = seg_logits.float()
    if not bool((labels != SEG_IGNORE).any()):
        return logits.sum() * 0.0  # no labelled pixel: a zero that keeps the graph
    return F.cross_entropy(logits, labels, ignore_index=SEG_IGNORE)


def compute_losses(outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], cfg: Config,
                   class_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Weighted loss_occ, loss_depth, loss_seg (their sum is the training objective).

    `class_weight` is resolve_class_weights(cfg.train.class_weights, ...), resolved once by the caller."""
    t = cfg.train
    mask = _need(batch, "mask_camera", "batch") if cfg.data.use_mask else None
    occ = occupancy_loss(_need(outputs, "occ_logits", "outputs"), _need(batch, "voxel_semantics", "batch"), mask,
                         class_weight)
    dep = depth_loss(_need(outputs, "depth_probs", "outputs"), _need(batch, "sparse_depth", "batch"), tuple(cfg.grid.depth))
    seg = seg_loss(_need(outputs, "seg_logits", "outputs"), _need(batch, "seg_labels", "batch"))
    return {
        "loss_occ": occ * t.loss_occ_weight,
        "loss_depth": dep * t.loss_depth_weight,
        "loss_seg": seg * t.loss_seg_weight,
    }


__all__ = ["compute_losses", "occupancy_loss", "enet_class_weights", "resolve_class_weights", "depth_loss", "depth_target", "seg_loss", "NUM_CLASSES"]

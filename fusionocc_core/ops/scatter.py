"""Scatter means: the torch_scatter.scatter_mean replacement, built on index_add_ + counts.

index_add_ is used instead of scatter_reduce("mean") because its backward is ~5x faster on CPU
(reference/python-dependencies.md).
"""
from __future__ import annotations

import torch


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of the rows of `src` (P, C) grouped by `index` (P,) into (dim_size, C); empty rows are 0."""
    if src.ndim != 2 or index.ndim != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(f"scatter_mean: expected src (P, C) and index (P,), got {tuple(src.shape)} and {tuple(index.shape)}")
    out = src.new_zeros(dim_size, src.shape[1]).index_add_(0, index, src)  # (V, C) sums
    counts = torch.bincount(index, minlength=dim_size).clamp_(min=1)  # (V,)
    return out / counts.unsqueeze(1).to(src.dtype)


def voxel_mean(features: torch.Tensor, coords: torch.Tensor, spatial_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average point `features` (P, C) that share an integer voxel `coords` (P, D) row.

    Returns (voxel features (V, C), unique voxel coords (V, D)), voxels sorted by their C-order
    linear index in `spatial_shape` (the caller guarantees 0 <= coords < spatial_shape).
    """
    if coords.ndim != 2 or coords.shape[1] != len(spatial_shape) or coords.shape[0] != features.shape[0]:
        raise ValueError(f"voxel_mean: coords must be (P, {len(spatial_shape)}) matching features {tuple(features.shape)}, got {tuple(coords.shape)}")
    coords = coords.long()
    key = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)  # (P,) linear index
    for axis, size in enumerate(spatial_shape):
        key = key * int(size) + coords[:, axis]
    uniq, inverse = torch.unique(key, return_inverse=True)  # (V,), (P,)
    means = scatter_mean(features, inverse, uniq.shape[0])  # (V, C)
    voxel_coords = torch.empty(uniq.shape[0], len(spatial_shape), dtype=torch.long, device=coords.device)
    rest = uniq
    for axis in range(len(spatial_shape) - 1, -1, -1):
        voxel_coords[:, axis] = rest % int(spatial_shape[axis])
        rest = rest // int(spatial_shape[axis])
    return means, voxel_coords

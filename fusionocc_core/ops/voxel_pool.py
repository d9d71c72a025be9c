"""LSS voxel pooling with BEVPoolv2 semantics in pure PyTorch (the `bev_pool_v2` replacement).

Every frustum point p (camera n, depth bin d, pixel h, w) adds depth[p] * feature[n, h, w] to the
voxel it falls in: out[voxel] = sum_p depth[p] * feat[pixel(p)] (a sum, not a mean). The point ->
voxel index arrays depend only on the geometry (calibration, image augmentation, BEV
augmentation), so they are computed once by `plan_voxel_pool` and reused; `VoxelPoolPlanCache`
keeps the last few plans keyed by the exact geometry values (a static rig hits it every frame).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import NamedTuple

import torch

from fusionocc_core.transfer import device_constant


class VoxelPoolPlan(NamedTuple):
    """Index arrays of the frustum points that land inside the grid (P_kept each)."""

    ranks_depth: torch.Tensor  # (P,) int64 index into depth.flatten()  (B, N, D, H, W)
    ranks_feat: torch.Tensor  # (P,) int64 index into features viewed as (B*N*H*W, C)
    ranks_voxel: torch.Tensor  # (P,) int64 index into the output viewed as (B*Z*Y*X, C)
    batch: int
    grid_zyx: tuple[int, int, int]  # (Z, Y, X)


def plan_voxel_pool(coords: torch.Tensor, lower: tuple[float, float, float],
                    interval: tuple[float, float, float], grid_xyz: tuple[int, int, int]) -> VoxelPoolPlan:
    """Voxel ranks of frustum points `coords` (B, N, D, H, W, 3) given in ego metres (x, y, z).

    Index = integer cast of (p - lower) / interval, i.e. truncation toward zero as in the
    official code (points up to one voxel below `lower` land in voxel 0); points whose index
    falls outside [0, grid) are dropped. rank = ((b * Z + z) * Y + y) * X + x.
    """
    if coords.ndim != 6 or coords.shape[-1] != 3:
        raise ValueError(f"plan_voxel_pool: coords must be (B, N, D, H, W, 3), got {tuple(coords.shape)}")
    B, N, D, H, W, _ = coords.shape
    X, Y, Z = (int(v) for v in grid_xyz)
    lo = device_constant(tuple(lower), coords.device, coords.dtype)
    step = device_constant(tuple(interval), coords.device, coords.dtype)
    idx = ((coords - lo) / step).long().view(-1, 3)  # (B*N*D*H*W, 3) trunc toward zero
    size = device_constant((X, Y, Z), coords.device, torch.long)
    kept = ((idx >= 0) & (idx < size)).all(-1).nonzero().squeeze(1)  # the point indices kept: one host sync
    idx = idx.index_select(0, kept)
    b = torch.div(kept, N * D * H * W, rounding_mode="floor")
    ranks_voxel = ((b * Z + idx[:, 2]) * Y + idx[:, 1]) * X + idx[:, 0]
    # point (b, n, d, h, w) is depth element `kept` itself; its feature pixel is (b, n, h, w)
    ranks_feat = torch.div(kept, D * H * W, rounding_mode="floor") * (H * W) + kept % (H * W)
    return VoxelPoolPlan(kept, ranks_feat, ranks_voxel, B, (Z, Y, X))


def voxel_pool(depth: torch.Tensor, feat: torch.Tensor, plan: VoxelPoolPlan) -> torch.Tensor:
    """Sum depth x feature per voxel: depth (B, N, D, H, W), feat (B, N, C, H, W) -> (B, C, Z, Y, X).

    The result is a permuted view laid out channels_last_3d in memory (call .contiguous() if needed).
    """
    B, N, D, H, W = depth.shape
    C = feat.shape[2]
    if feat.shape[:2] != (B, N) or feat.shape[3:] != (H, W):
        raise ValueError(f"voxel_pool: feat {tuple(feat.shape)} does not match depth {tuple(depth.shape)}")
    if plan.batch != B:
        raise ValueError(f"voxel_pool: plan was made for batch {plan.batch}, got {B}")
    Z, Y, X = plan.grid_zyx
    feat_rows = feat.permute(0, 1, 3, 4, 2).reshape(B * N * H * W, C)  # (B*N*H*W, C)
    # index_select, not feat_rows[idx]: its backward (index_add_) is deterministic on CPU, unlike index_put_
    contrib = depth.reshape(-1).index_select(0, plan.ranks_depth).unsqueeze(1) * feat_rows.index_select(0, plan.ranks_feat)  # (P, C)
    out = feat.new_zeros(B * Z * Y * X, C).index_add_(0, plan.ranks_voxel, contrib.to(feat.dtype))
    return out.view(B, Z, Y, X, C).permute(0, 4, 1, 2, 3)  # (B, C, Z, Y, X), channels_last_3d in memory


def geometry_key(*tensors: torch.Tensor) -> str:
    """Exact-value key of the geometry tensors (shapes, dtypes, device and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach()
        h.update(f"{tuple(t.shape)}|{t.dtype}|{t.device}|".encode())
        h.update(t.to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


class VoxelPoolPlanCache:
    """A small LRU of plans keyed by `geometry_key` (calibration + image aug + BEV aug)."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._plans: OrderedDict[str, VoxelPoolPlan] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> VoxelPoolPlan | None:
        plan = self._plans.get(key)
        if plan is None:
            self.misses += 1
            return None
        self.hits += 1
        self._plans.move_to_end(key)
        return plan

    def put(self, key: str, plan: VoxelPoolPlan) -> None:
        self._plans[key] = plan
        self._plans.move_to_end(key)
        while len(self._plans) > self.capacity:
            self._plans.popitem(last=False)

    def clear(self) -> None:
        self._plans.clear()

"""The LiDAR branch (`lidar_encoder`): dynamic voxel mean + sparse 3D conv encoder -> dense volume.

Official CustomSparseEncoder (reference/fusionocc-architecture.md §1.7): the raw 5-d point
features (x y z intensity ring) are averaged per lidar_voxel_size voxel in (x, y, z) order,
then `conv_input` (SubM k1, no norm), four `encoder_layerN` stages (SubM k3 x2, then a k3
conv to the next width; BN1d eps 1e-3 momentum 0.01 + ReLU after every k3 conv), `conv_out`
(SubM k1, no norm), scattered to a dense grid and permuted to the image volume's (C, Z, Y, X).

The official grid (0.05 m -> 1600x1600x128) needs three stride-2 convs to reach 200x200x16;
in general the first log2(grid voxel / lidar voxel) stage-final convs are stride 2 and the rest
are submanifold k3 convs with the same parameter shapes (tiny: 0.2 m, one stride-2 conv).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from fusionocc_core.config import Config
from fusionocc_core.ops.scatter import voxel_mean
from fusionocc_core.ops.sparse_conv import SparseBatchNorm1d, SparseConv3d, SparseSequential, SparseTensor, SubMConv3d
from fusionocc_core.transfer import device_constant, upload

POINT_DIMS = 5  # x y z intensity ring


def _conv_bn_relu(conv: nn.Module, channels: int) -> SparseSequential:
    """mmdet3d `make_sparse_convmodule`: conv (index 0), BN1d (index 1), ReLU (index 2)."""
    return SparseSequential(conv, SparseBatchNorm1d(channels, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True))


class CustomSparseEncoder(nn.Module):
    """Points in the ego frame -> dense LiDAR feature volume (B, lidar_out_channels, Z, Y, X)."""

    def __init__(self, cfg: Config):
        super().__init__()
        m, g = cfg.model, cfg.grid
        self.voxel_size = float(m.lidar_voxel_size)
        self.lower = tuple(float(v) for v in g.lower)
        extent = [hi - lo for lo, hi in zip(g.lower, g.upper)]
        sparse_shape = tuple(int(round(e / self.voxel_size)) for e in extent)
        if any(abs(n * self.voxel_size - e) > 1e-6 * max(e, 1.0) for n, e in zip(sparse_shape, extent)):
            raise ValueError(f"model.lidar_voxel_size {self.voxel_size} does not tile the grid extent {extent}")
        self.sparse_shape: tuple[int, int, int] = sparse_shape  # type: ignore[assignment]  # (X, Y, Z)
        self.grid_shape = tuple(g.shape)  # (X, Y, Z) of the occupancy grid
        ratios = {s / o for s, o in zip(sparse_shape, self.grid_shape)}
        channels = tuple(int(c) for c in m.lidar_channels)
        num_down = math.log2(next(iter(ratios))) if len(ratios) == 1 else -1.0
        if len(ratios) != 1 or num_down != int(num_down) or not 0 <= num_down <= len(channels) - 1:
            raise ValueError(
                f"model.lidar_voxel_size {self.voxel_size}: the LiDAR grid {sparse_shape} must be the occupancy grid "
                f"{self.grid_shape} times 2**n with n <= {len(channels) - 1} (one stride-2 conv per stage)"
            )
        self.num_down = int(num_down)

        self.conv_input = SparseSequential(SubMConv3d(POINT_DIMS, channels[0], 1, bias=False, indice_key="subm1"))
        stages = SparseSequential()
        for i, c in enumerate(channels):
            blocks = [_conv_bn_relu(SubMConv3d(c, c, 3, bias=False, indice_key=f"subm{i + 1}"), c) for _ in range(2)]
            if i < len(channels) - 1:
                c_next = channels[i + 1]
                if i < self.num_down:
                    conv = SparseConv3d(c, c_next, 3, stride=2, padding=1, bias=False, indice_key=f"spconv{i + 2}")
                else:
                    conv = SubMConv3d(c, c_next, 3, bias=False, indice_key=f"subm{i + 1}")
                blocks.append(_conv_bn_relu(conv, c_next))
            stages.add_module(f"encoder_layer{i + 1}", SparseSequential(*blocks))
        self.encoder_layers = stages
        self.conv_out = SparseSequential(SubMConv3d(channels[-1], int(m.lidar_out_channels), 1, bias=False, indice_key="subm_out"))
        self.out_channels = int(m.lidar_out_channels)

    @torch.no_grad()
    def scatter_voxelize(self, points: Sequence[torch.Tensor]) -> SparseTensor:
        """Dynamic voxel mean of the raw point features. The points are expected finite and inside the
        grid box (the input path's eval_points filtered them); a row that is not (a hand-built batch) is
        dropped by the bounds guard below, never indexed: one mask, one compaction per sample."""
        if isinstance(points, torch.Tensor) or not isinstance(points, (list, tuple)):
            raise TypeError(f"points must be a list of B tensors (P_b, {POINT_DIMS}), got {type(points).__name__}")
        device, dtype = self.conv_input[0].weight.device, self.conv_input[0].weight.dtype
        lower = device_constant(tuple(self.lower), device, dtype)
        shape = device_constant(tuple(self.sparse_shape), device, torch.long)
        feats, coords = [], []
        for b, pts in enumerate(points):
            pts = torch.as_tensor(pts)
            if pts.ndim != 2 or pts.shape[1] != POINT_DIMS:
                raise ValueError(f"points[{b}] must be (P, {POINT_DIMS}) x y z intensity ring, got {tuple(pts.shape)}")
            pts = upload(pts, device, dtype)  # no stream sync on CUDA
            xyz = torch.floor((pts[:, :3] - lower) / self.voxel_size)  # (P, 3) voxel coords, (x, y, z)
            # bounds guard (memory safety): NaN/Inf coordinates fail every comparison; non-finite
            # features would poison their voxel's mean
            ok = (xyz >= 0).all(1) & (xyz < shape).all(1) & torch.isfinite(pts[:, 3:]).all(1)
            rows = ok.nonzero().squeeze(1)  # (P',)
            batch_col = torch.full((rows.shape[0], 1), b, device=device, dtype=torch.long)
            coords.append(torch.cat([batch_col, xyz.index_select(0, rows).long()], 1))  # (P', 4) [b, x, y, z]
            feats.append(pts.index_select(0, rows))
        batch_size = len(points)
        all_feats = torch.cat(feats) if feats else torch.zeros(0, POINT_DIMS, device=device, dtype=dtype)
        all_coords = torch.cat(coords) if coords else torch.zeros(0, 4, device=device, dtype=torch.long)
        voxel_feats, voxel_coords = voxel_mean(all_feats, all_coords, (max(batch_size, 1),) + self.sparse_shape)  # (V, 5), (V, 4)
        return SparseTensor(voxel_feats, voxel_coords, self.sparse_shape, batch_size, check=False)

    def forward(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        """list of B (P_b, 5) ego-frame points -> (B, C_out, Z, Y, X); a sample with no points gives zeros."""
        x = self.scatter_voxelize(points)  # (V, 5) at sparse_shape
        X, Y, Z = self.grid_shape
        if x.features.shape[0] == 0:
            w = self.conv_out[0].weight
            return w.new_zeros(len(points), self.out_channels, Z, Y, X)
        x = self.conv_input(x)  # (V, c0)
        x = self.encoder_layers(x)  # (V', c_last) at grid_shape
        x = self.conv_out(x)  # (V', C_out)
        dense = x.dense()  # (B, C_out, X, Y, Z)
        return dense.permute(0, 1, 4, 3, 2).contiguous()  # (B, C_out, Z, Y, X)

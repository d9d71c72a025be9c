"""Pure-PyTorch replacements for the official custom ops (no compiled extensions).

`scatter`: voxel means via index_add_ + counts (torch_scatter.scatter_mean replacement).
`sparse_conv`: submanifold and strided sparse 3D convolution (mmcv/spconv replacement).
`voxel_pool`: LSS voxel pooling (BEVPoolv2 replacement).
"""
from __future__ import annotations

from fusionocc_core.ops.scatter import scatter_mean, voxel_mean
from fusionocc_core.ops.sparse_conv import SparseConv3d, SparseSequential, SparseTensor, SubMConv3d

__all__ = ["scatter_mean", "voxel_mean", "SparseTensor", "SparseSequential", "SubMConv3d", "SparseConv3d"]

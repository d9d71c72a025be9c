"""index_add_-based scatter means equal a naive per-group mean (forward and gradient)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionocc_core.ops.scatter import scatter_mean, voxel_mean


def test_scatter_mean_equals_naive_group_mean_and_empty_rows_are_zero() -> None:
    g = torch.Generator().manual_seed(0)
    src = torch.randn(50, 3, generator=g, dtype=torch.float64)
    index = torch.randint(0, 7, (50,), generator=g)
    index[index == 4] = 5  # group 4 stays empty
    out = scatter_mean(src, index, 8)
    for v in range(8):
        rows = src[index == v]
        expect = rows.mean(0) if len(rows) else torch.zeros(3, dtype=torch.float64)
        torch.testing.assert_close(out[v], expect)


def test_scatter_mean_gradient_is_one_over_group_size() -> None:
    src = torch.ones(5, 2, requires_grad=True)
    index = torch.tensor([0, 0, 0, 2, 2])
    scatter_mean(src, index, 3).sum().backward()
    torch.testing.assert_close(src.grad[:, 0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.5, 0.5]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 200), size=st.integers(1, 5))
def test_voxel_mean_matches_a_dict_reference(seed: int, n: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (2, size, size + 1, 3)
    coords = np.stack([rng.integers(0, s, n) for s in shape], 1)
    feats = rng.normal(size=(n, 4))
    got_feats, got_coords = voxel_mean(torch.from_numpy(feats), torch.from_numpy(coords), shape)
    groups: dict[tuple, list] = {}
    for c, f in zip(map(tuple, coords), feats):
        groups.setdefault(c, []).append(f)
    keys = sorted(groups)  # C-order linear index == lexicographic order of in-range coords
    assert [tuple(c) for c in got_coords.tolist()] == keys
    expect = np.array([np.mean(groups[k], 0) for k in keys]).reshape(-1, 4)
    np.testing.assert_allclose(got_feats.numpy(), expect, rtol=1e-12, atol=1e-12)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="scatter_mean"):
        scatter_mean(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="voxel_mean"):
        voxel_mean(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long), (4, 4, 4))

"""Sparse conv (gather-GEMM-scatter) equals a dense Conv3d on the same active sites, forward and backward.

Every test runs with both rulebook forms: "pairs" (the CPU default) and "table" (the sync-free CUDA
default), so the GPU algorithm is checked on the CPU in CI against the same oracles; the pairs form
twice: neighbours found in a dense cell grid (small grids) and by searching the sorted keys (grids over
DENSE_LOOKUP_MAX_CELLS, such as the official LiDAR grid)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionocc_core.ops import sparse_conv
from fusionocc_core.ops.sparse_conv import (
    SparseBatchNorm1d,
    SparseConv3d,
    SparseSequential,
    SparseTensor,
    SubMConv3d,
    build_strided_rulebook,
    build_strided_table,
    build_subm_rulebook,
    build_subm_table,
    sparse_conv_algorithm,
)


@pytest.fixture(autouse=True, params=["pairs", "pairs-sorted-keys", "table"])
def algorithm(request, monkeypatch):
    if request.param == "pairs-sorted-keys":
        monkeypatch.setattr(sparse_conv, "DENSE_LOOKUP_MAX_CELLS", 0)
    name = request.param.split("-")[0]
    with sparse_conv_algorithm(name):
        yield name


def _random_sparse(seed: int, B: int, C: int, shape: tuple[int, int, int], density: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((B,) + shape, generator=g) < density
    dense = torch.randn((B, C) + shape, generator=g, dtype=torch.float64) * mask[:, None]
    return dense, mask


def _dense_reference(conv, dense: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense Conv3d with the sparse weights, restricted to the sparse conv's output sites."""
    weight = conv.weight.permute(4, 3, 0, 1, 2)  # (C_out, C_in, kx, ky, kz)
    if conv.subm:
        pad = tuple(d * (k // 2) for k, d in zip(conv.kernel_size, conv.dilation))
        out = F.conv3d(dense, weight, conv.bias, padding=pad, dilation=conv.dilation)
        return out * mask[:, None], mask
    ones = torch.ones((1, 1) + conv.kernel_size, dtype=dense.dtype)
    hit = F.conv3d(mask[:, None].to(dense.dtype), ones, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)[:, 0] > 0
    out = F.conv3d(dense, weight, conv.bias, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    return out * hit[:, None], hit


def _check_against_dense(conv, dense: torch.Tensor, mask: torch.Tensor) -> None:
    conv = conv.double()
    dense = dense.clone().requires_grad_(True)
    x = SparseTensor.from_dense(dense, mask)  # features are a differentiable gather of `dense`
    y = conv(x)
    ref, ref_sites = _dense_reference(conv, dense, mask)
    got = y.dense()
    assert got.shape == ref.shape
    sites = torch.zeros_like(ref_sites)
    sites[y.indices[:, 0], y.indices[:, 1], y.indices[:, 2], y.indices[:, 3]] = True
    assert torch.equal(sites, ref_sites), "active output sites differ from the dense receptive-field rule"
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    # backward: same upstream gradient through both paths
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = [dense, conv.weight] + ([conv.bias] if conv.bias is not None else [])
    grads_sparse = torch.autograd.grad((got * g).sum(), params)
    grads_dense = torch.autograd.grad((ref * g).sum(), params)
    # inactive input sites carry no feature in the sparse tensor, so their gradient is zero there
    grads_dense = (grads_dense[0] * mask[:, None],) + tuple(grads_dense[1:])
    assert grads_sparse[0].abs().sum() > 0 or not mask.any()
    for a, b in zip(grads_sparse, grads_dense):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


CASES = [
    ("subm k3", lambda: SubMConv3d(3, 4, 3, bias=True)),
    ("subm k1", lambda: SubMConv3d(3, 5, 1, bias=False)),
    ("subm k(3,1,5)", lambda: SubMConv3d(3, 2, (3, 1, 5), bias=False)),
    ("subm dilation 2", lambda: SubMConv3d(3, 4, 3, dilation=2, bias=True)),
    ("strided k3 s2 p1", lambda: SparseConv3d(3, 4, 3, stride=2, padding=1, bias=False)),
    ("strided k2 s2 p0", lambda: SparseConv3d(3, 4, 2, stride=2, padding=0, bias=True)),
    ("regular k3 s1 p0", lambda: SparseConv3d(3, 4, 3, stride=1, padding=0, bias=False)),
    ("anisotropic s(2,1,2) p(1,0,1)", lambda: SparseConv3d(3, 4, (3, 1, 3), stride=(2, 1, 2), padding=(1, 0, 1), bias=False)),
]


def test_every_conv_type_equals_dense_conv3d_forward_and_backward() -> None:
    for seed, (name, make) in enumerate(CASES):
        torch.manual_seed(seed)
        dense, mask = _random_sparse(seed, B=2, C=3, shape=(7, 6, 5), density=0.3)
        try:
            _check_against_dense(make(), dense, mask)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    density=st.floats(0.0, 1.0),
    strided=st.booleans(),
)
def test_random_grids_match_dense(seed: int, shape: tuple[int, int, int], density: float, strided: bool) -> None:
    torch.manual_seed(seed)
    dense, mask = _random_sparse(seed, B=2, C=2, shape=shape, density=density)
    conv = SparseConv3d(2, 3, 3, stride=2, padding=1) if strided else SubMConv3d(2, 3, 3)
    _check_against_dense(conv, dense, mask)


def test_neighbours_never_wrap_across_grid_edges() -> None:
    # z = Z-1 and the next y row's z = 0 have adjacent linear keys; they are not neighbours
    idx = torch.tensor([[0, 0, 0, 3], [0, 0, 1, 0], [0, 4, 2, 1], [1, 0, 2, 1]])  # last: other batch entry
    x = SparseTensor(torch.ones(4, 1, dtype=torch.float64), idx, (5, 3, 4), 2)
    rb = build_subm_rulebook(x, (3, 3, 3), (1, 1, 1))
    assert rb.num_pairs == 4, "only the centre taps: these sites have no neighbours"


def test_hashing_handles_the_official_grid_without_dense_tensors() -> None:
    # A patch of sites near the far corner of the 1600x1600x128 grid equals the same patch on a
    # small grid (translation by an even offset; the corner clips the kernel like zero padding).
    dense, mask = _random_sparse(3, B=1, C=2, shape=(6, 6, 6), density=0.5)
    small = SparseTensor.from_dense(dense, mask)
    shift = torch.tensor([0, 1594, 1594, 122])
    big = SparseTensor(small.features, small.indices + shift, (1600, 1600, 128), 1)
    torch.manual_seed(0)
    subm, down = SubMConv3d(2, 3, 3).double(), SparseConv3d(3, 4, 3, stride=2, padding=1).double()
    y_small, y_big = down(subm(small)), down(subm(big))
    assert y_big.spatial_shape == (800, 800, 64)
    torch.testing.assert_close(y_big.indices, y_small.indices + torch.tensor([0, 797, 797, 61]))
    torch.testing.assert_close(y_big.features, y_small.features)


def test_empty_input_gives_empty_output_and_zero_dense() -> None:
    x = SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.long), (8, 8, 8), 2)
    y = SparseConv3d(3, 4, 3, stride=2, padding=1)(SubMConv3d(3, 3, 3)(x))
    assert y.features.shape == (0, 4) and y.spatial_shape == (4, 4, 4)
    assert torch.count_nonzero(y.dense()) == 0 and y.dense().shape == (2, 4, 4, 4, 4)


def test_submanifold_rulebook_is_built_once_per_site_set() -> None:
    dense, mask = _random_sparse(0, B=1, C=4, shape=(5, 5, 5), density=0.4)
    x = SparseTensor.from_dense(dense.float(), mask)
    net = SparseSequential(SubMConv3d(4, 4, 3), SparseBatchNorm1d(4), torch.nn.ReLU(), SubMConv3d(4, 4, 3))
    y = net(x)
    assert y.cache is x.cache and sum(1 for k in x.cache if k[0] in ("subm", "subm_table")) == 1


def test_weight_layout_is_mmcv_and_gradient_reaches_it() -> None:
    conv = SubMConv3d(5, 16, 3, bias=False)
    assert tuple(conv.weight.shape) == (3, 3, 3, 5, 16) and conv.bias is None
    dense, mask = _random_sparse(2, B=1, C=5, shape=(4, 4, 4), density=0.5)
    conv(SparseTensor.from_dense(dense.float(), mask)).features.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_batchnorm_with_one_site_in_training_does_not_crash() -> None:
    bn = SparseBatchNorm1d(4).train()
    out = bn(torch.randn(1, 4))
    assert out.shape == (1, 4) and torch.isfinite(out).all()


def test_bf16_autocast_runs_in_bf16_and_stays_close() -> None:
    dense, mask = _random_sparse(4, B=1, C=8, shape=(6, 6, 6), density=0.4)
    x = SparseTensor.from_dense(dense.float(), mask)
    conv = SubMConv3d(8, 8, 3)
    ref = conv(x).features
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv(x).features
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=0.05, atol=0.05)


def test_table_and_pairs_rulebooks_hold_the_same_neighbours() -> None:
    # an independent check of the two forms: expand the table into (input, output) pairs per offset
    dense, mask = _random_sparse(5, B=2, C=1, shape=(9, 7, 6), density=0.35)
    x = SparseTensor.from_dense(dense, mask)
    for pairs_rb, table in [(build_subm_rulebook(x, (3, 3, 3), (1, 1, 1)), build_subm_table(x, (3, 3, 3), (1, 1, 1))),
                            (build_strided_rulebook(x, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
                             build_strided_table(x, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)))]:
        if isinstance(pairs_rb, tuple):
            (pairs_rb, idx_p, shape_p), (table, idx_t, shape_t) = pairs_rb, table
            assert shape_p == shape_t and torch.equal(idx_p, idx_t)
        assert pairs_rb.num_out == table.num_out
        for k, (i, o) in enumerate(pairs_rb.pairs):
            if i is None:
                i = o = torch.arange(pairs_rb.num_out)
            col = table.table[:, k]
            hit = (col < table.num_in).nonzero()[:, 0]
            got = sorted(zip(col[hit].tolist(), hit.tolist()))
            assert got == sorted(zip(i.tolist(), o.tolist())), f"offset {k}"


def test_table_path_runs_in_chunks(monkeypatch) -> None:
    from fusionocc_core.ops import sparse_conv

    dense, mask = _random_sparse(6, B=1, C=4, shape=(6, 6, 6), density=0.5)
    x = SparseTensor.from_dense(dense.float(), mask)
    conv = SubMConv3d(4, 5, 3)
    with sparse_conv_algorithm("table"):
        whole = conv(x).features
        monkeypatch.setattr(sparse_conv, "TABLE_CHUNK_ELEMENTS", 27 * 4 * 7)  # 7 rows per chunk
        chunked = conv(SparseTensor.from_dense(dense.float(), mask)).features
    torch.testing.assert_close(chunked, whole)


def test_bad_inputs_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="outside"):
        SparseTensor(torch.zeros(1, 2), torch.tensor([[0, 8, 0, 0]]), (8, 8, 8), 1)
    with pytest.raises(ValueError, match="input channels"):
        SubMConv3d(3, 4, 3)(SparseTensor(torch.zeros(1, 2), torch.tensor([[0, 1, 1, 1]]), (8, 8, 8), 1))
    with pytest.raises(ValueError, match="odd"):
        SubMConv3d(2, 4, 2)(SparseTensor(torch.zeros(1, 2), torch.tensor([[0, 1, 1, 1]]), (8, 8, 8), 1))
    with pytest.raises(ValueError, match="algorithm"):
        with sparse_conv_algorithm("spconv"):
            pass


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [3, 5, 16, 48])
def test_inference_gather_equals_the_autograd_gather(dtype: torch.dtype, channels: int) -> None:
    # inference gathers rows as machine words on CUDA (int64/int32/int16 views), with index_select on the
    # CPU; training uses advanced indexing
    from fusionocc_core.ops.sparse_conv import _gather_rows

    rows = torch.randn(40, channels).to(dtype)
    index = torch.randint(0, 40, (300,))
    assert torch.equal(_gather_rows(rows, index, by_words=True), rows.index_select(0, index))  # CUDA's way, bit-exact
    dense, mask = _random_sparse(8, B=2, C=channels, shape=(7, 6, 5), density=0.4)
    for conv in (SubMConv3d(channels, 4, 3), SparseConv3d(channels, 4, 3, stride=2, padding=1)):
        conv = conv.to(dtype)
        with sparse_conv_algorithm("table"):
            x = SparseTensor.from_dense(dense.to(dtype), mask)
            with torch.no_grad():
                inference = conv(x).features
            trained = conv(SparseTensor.from_dense(dense.to(dtype).requires_grad_(True), mask)).features
        with sparse_conv_algorithm("pairs"), torch.no_grad():
            pairs = conv(SparseTensor.from_dense(dense.to(dtype), mask)).features
        assert inference.dtype == dtype and torch.equal(inference, trained.detach())
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(inference.float(), pairs.float(), rtol=tol, atol=tol)


def test_the_chosen_form_stays_in_the_thread_that_chose_it() -> None:
    # contextvars: a benchmark or test choosing a form never changes the node worker's convs
    from concurrent.futures import ThreadPoolExecutor

    from fusionocc_core.ops import sparse_conv as sc

    cpu = torch.device("cpu")
    before = sc._use_table(cpu)  # this module's fixture chose a form for the test
    with ThreadPoolExecutor(1) as other:
        with sparse_conv_algorithm("table"):
            assert sc._use_table(cpu)
            assert not other.submit(sc._use_table, cpu).result()  # "auto" on the CPU: pairs
        assert sc._use_table(cpu) == before

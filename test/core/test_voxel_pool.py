"""LSS voxel pooling equals a naive per-point loop (forward and backward); plans, cache and frustum geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionocc_core.config import GridConfig, load_config
from fusionocc_core.model.view_transformer import CrossModalLSS, camera_mlp_input, sparse_depth_onehot
from fusionocc_core.ops.voxel_pool import VoxelPoolPlanCache, geometry_key, plan_voxel_pool, voxel_pool

LOWER = (-2.0, -2.0, -1.0)
STEP = (0.5, 0.5, 0.5)
GRID = (8, 6, 4)  # X, Y, Z


def naive_pool(depth, feat, coords, lower, step, grid_xyz):
    """Per-point reference: int() truncation, bounds check, out[b, :, z, y, x] += depth * feat."""
    B, N, D, H, W = depth.shape
    C = feat.shape[2]
    X, Y, Z = grid_xyz
    out = torch.zeros(B, C, Z, Y, X, dtype=depth.dtype)
    for b in range(B):
        for n in range(N):
            for d in range(D):
                for h in range(H):
                    for w in range(W):
                        idx = [int((float(coords[b, n, d, h, w, a]) - lower[a]) / step[a]) for a in range(3)]
                        if all(0 <= idx[a] < (X, Y, Z)[a] for a in range(3)):
                            x, y, z = idx
                            out[b, :, z, y, x] += depth[b, n, d, h, w] * feat[b, n, :, h, w]
    return out


def random_case(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, N, D, H, W, C = 2, 2, 3, 2, 3, 4
    # coordinates spread over the grid and up to one voxel beyond each side (truncation edge cases)
    lo = torch.tensor(LOWER, dtype=dtype) - 0.75
    hi = torch.tensor(LOWER, dtype=dtype) + torch.tensor(GRID, dtype=dtype) * torch.tensor(STEP, dtype=dtype) + 0.75
    coords = lo + (hi - lo) * torch.rand(B, N, D, H, W, 3, generator=g, dtype=dtype)
    depth = torch.rand(B, N, D, H, W, generator=g, dtype=dtype)
    feat = torch.randn(B, N, C, H, W, generator=g, dtype=dtype)
    return depth, feat, coords


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_equals_naive_reference(seed):
    depth, feat, coords = random_case(seed)
    plan = plan_voxel_pool(coords, LOWER, STEP, GRID)
    ours = voxel_pool(depth, feat, plan)
    ref = naive_pool(depth, feat, coords, LOWER, STEP, GRID)
    assert ours.shape == (2, 4, GRID[2], GRID[1], GRID[0])
    assert torch.allclose(ours, ref, atol=1e-12)
    # some points were dropped and some voxels got several points: the case is not trivial
    assert 0 < plan.ranks_voxel.numel() < coords[..., 0].numel()
    assert plan.ranks_voxel.unique().numel() < plan.ranks_voxel.numel()


def test_pool_gradients_equal_naive_reference():
    depth, feat, coords = random_case(3)
    plan = plan_voxel_pool(coords, LOWER, STEP, GRID)
    w = torch.randn(2, 4, GRID[2], GRID[1], GRID[0], dtype=torch.float64)
    d1, f1 = depth.clone().requires_grad_(), feat.clone().requires_grad_()
    (voxel_pool(d1, f1, plan) * w).sum().backward()
    d2, f2 = depth.clone().requires_grad_(), feat.clone().requires_grad_()
    (naive_pool(d2, f2, coords, LOWER, STEP, GRID) * w).sum().backward()
    assert torch.allclose(d1.grad, d2.grad, atol=1e-12)
    assert torch.allclose(f1.grad, f2.grad, atol=1e-12)
    assert torch.autograd.gradcheck(lambda d, f: voxel_pool(d, f, plan), (d1.detach().requires_grad_(), f1.detach().requires_grad_()))


def test_truncation_toward_zero_keeps_points_just_below_the_lower_bound():
    pts = torch.tensor([
        [LOWER[0] - 0.25, 0.1, 0.1],  # (-0.5 voxel) -> int() = 0: kept in voxel x = 0 (official quirk)
        [LOWER[0] - 0.51, 0.1, 0.1],  # (-1.02 voxel) -> -1: dropped
        [LOWER[0] + 8 * 0.5, 0.1, 0.1],  # x index 8 == X: dropped
        [LOWER[0] + 8 * 0.5 - 1e-3, 0.1, 0.1],  # x index 7: kept
    ], dtype=torch.float64).view(1, 1, 4, 1, 1, 3)
    plan = plan_voxel_pool(pts, LOWER, STEP, GRID)
    assert plan.ranks_depth.tolist() == [0, 3]
    x = plan.ranks_voxel % GRID[0]
    assert x.tolist() == [0, 7]


def test_pool_rejects_mismatched_shapes():
    depth, feat, coords = random_case(0)
    plan = plan_voxel_pool(coords, LOWER, STEP, GRID)
    with pytest.raises(ValueError, match="does not match depth"):
        voxel_pool(depth, feat[:, :, :, :1], plan)
    with pytest.raises(ValueError, match="plan was made for batch 2"):
        voxel_pool(depth[:1], feat[:1], plan)
    with pytest.raises(ValueError, match=r"\(B, N, D, H, W, 3\)"):
        plan_voxel_pool(coords[..., :2], LOWER, STEP, GRID)


def test_plan_cache_is_keyed_by_exact_geometry():
    cache = VoxelPoolPlanCache(capacity=2)
    a, b = torch.eye(4), torch.eye(4)
    b[0, 3] = 1e-6
    ka, kb = geometry_key(a), geometry_key(b)
    assert ka != kb and ka == geometry_key(a.clone())
    plan = plan_voxel_pool(random_case(0)[2], LOWER, STEP, GRID)
    assert cache.get(ka) is None
    cache.put(ka, plan)
    assert cache.get(ka) is plan and cache.get(kb) is None
    cache.put(kb, plan)
    cache.put(geometry_key(a * 2), plan)  # evicts the least recently used (ka was used before kb)
    assert cache.get(ka) is None and cache.get(kb) is plan
    assert (cache.hits, cache.misses) == (2, 3)


def _transformer(cfg):
    return CrossModalLSS(cfg)


def test_frustum_points_project_back_to_their_pixels():
    """Un-projection inverts K, the image transform, the extrinsics and bda."""
    cfg = load_config("tiny")
    vt = _transformer(cfg)
    c, s = math.cos(0.3), math.sin(0.3)
    s2e = torch.tensor([[[[s, 0, c, 1.0], [-c, 0, s, 2.0], [0, -1, 0, 1.5], [0, 0, 0, 1]]]])  # (1, 1, 4, 4)
    K = torch.tensor([[[[500.0, 0, 640], [0, 510.0, 360], [0, 0, 1]]]])
    prot = torch.tensor([[[[0.3, 0.02, 0], [-0.01, 0.29, 0], [0, 0, 1]]]])
    ptran = torch.tensor([[[-5.0, -70.0, 0.0]]])
    bda = torch.diag(torch.tensor([-1.0, 1.0, 1.0])).view(1, 3, 3)
    pts = vt.frustum_points(s2e, K, prot, ptran, bda)  # (1, 1, D, h, w, 3)
    assert pts.shape == (1, 1, 88, 8, 22, 3)
    ego = pts.reshape(-1, 3) @ torch.linalg.inv(bda[0]).T
    cam = (ego - s2e[0, 0, :3, 3]) @ s2e[0, 0, :3, :3]  # inverse rigid transform
    uvw = cam @ K[0, 0].T
    uv = uvw[:, :2] / uvw[:, 2:]
    uv_aug = uv @ prot[0, 0, :2, :2].T + ptran[0, 0, :2]
    fr = vt.frustum.reshape(-1, 3)
    assert torch.allclose(uv_aug, fr[:, :2], atol=2e-3)
    assert torch.allclose(cam[:, 2], fr[:, 2], atol=1e-4)  # depth = bin lower edge (1.0, 1.5, ...)
    assert fr[:, 2].min() == 1.0 and fr[:, 2].max() == 44.5
    assert fr[:, 0].max() == 351 and fr[:, 1].max() == 127  # linspace(0, W_in - 1) / (0, H_in - 1)


def test_lift_reuses_the_plan_for_unchanged_geometry():
    from fusionocc_core.model.example_inputs import example_batch

    cfg = load_config("tiny")
    vt = _transformer(cfg)
    b = example_batch(cfg)
    geo = [b[k][:, 0] for k in ("sensor2ego", "intrins", "post_rots", "post_trans")] + [b["bda"]]
    depth = torch.rand(6, 88, 8, 22).softmax(1)
    feat = torch.rand(6, 8, 8, 22)
    feat[2:] = 0  # only the two left/front cameras see something: the volume is not x-symmetric
    v1 = vt.lift(depth, feat, *geo)
    v2 = vt.lift(depth, feat, *geo)
    assert (vt.plan_cache.misses, vt.plan_cache.hits) == (1, 1)
    assert torch.equal(v1, v2) and v1.shape == (1, 8, 16, 200, 200)
    # total mass: every kept frustum point contributes depth * feature once
    coords = vt.frustum_points(*geo)
    plan = plan_voxel_pool(coords, cfg.grid.lower, cfg.grid.voxel_size, cfg.grid.shape)
    expected = (depth.reshape(-1)[plan.ranks_depth, None] * feat.permute(0, 2, 3, 1).reshape(-1, 8)[plan.ranks_feat]).sum(0)
    assert torch.allclose(v1.sum(dim=(0, 2, 3, 4)), expected, rtol=1e-4)
    geo[4] = torch.diag(torch.tensor([-1.0, 1.0, 1.0])).view(1, 3, 3)  # a BEV flip is new geometry
    v3 = vt.lift(depth, feat, *geo)
    assert vt.plan_cache.misses == 2
    # an x flip mirrors the volume along X (up to points exactly on voxel borders, which truncation
    # sends one voxel apart): same mass, mirrored centre of mass
    def com_x(v):
        m = v.sum(dim=(0, 1, 2, 3))  # (X,)
        return float((m * torch.arange(m.numel())).sum() / m.sum())

    assert abs(float(v3.sum()) - float(v1.sum())) < 0.01 * float(v1.sum())
    assert abs(com_x(v3) - (199 - com_x(v1))) < 0.5
    assert abs(com_x(v1) - 99.5) > 5  # the rig is not symmetric in x, so the check has teeth


def test_sparse_depth_onehot_bins_and_patch_minimum():
    grid = GridConfig()
    sd = torch.zeros(1, 1, 32, 48)  # 2 x 3 patches of 16 x 16
    sd[0, 0, 0, 0] = 1.0  # patch (0,0): bin 0 (lower edge)
    sd[0, 0, 5, 5] = 7.3  # ignored: farther than 1.0 in the same patch
    sd[0, 0, 1, 17] = 1.49  # patch (0,1): bin 0
    sd[0, 0, 2, 40] = 44.99  # patch (0,2): bin 87
    sd[0, 0, 20, 3] = 45.0  # patch (1,0): out of range -> no bin
    sd[0, 0, 20, 20] = 0.99  # patch (1,1): below range -> no bin
    sd[0, 0, 30, 40] = 1.5  # patch (1,2): bin 1
    oh = sparse_depth_onehot(sd, 16, grid.depth)
    assert oh.shape == (1, 88, 2, 3)
    bins = torch.where(oh.sum(1) > 0, oh.argmax(1), torch.full((1, 2, 3), -1))
    assert bins.tolist() == [[[0, 0, 87], [-1, -1, 1]]]
    assert oh.sum() == 4
    with pytest.raises(ValueError, match="not a multiple of the feature stride"):
        sparse_depth_onehot(torch.zeros(1, 1, 30, 48), 16, grid.depth)


def test_sparse_depth_onehot_agrees_with_the_depth_loss_target():
    from fusionocc_core.losses import depth_target

    rng = np.random.default_rng(0)
    sd = torch.from_numpy(rng.uniform(0.0, 50.0, (2, 3, 64, 96)).astype(np.float32))
    sd[sd < 20] = 0  # sparse
    ours = sparse_depth_onehot(sd, 16, GridConfig().depth).permute(0, 2, 3, 1).reshape(-1, 88)
    assert torch.equal(ours, depth_target(sd, 16, GridConfig().depth))


def test_camera_mlp_input_order():
    B, N = 1, 2
    K = torch.arange(9.0).view(1, 1, 3, 3).expand(B, N, 3, 3) + 100
    prot = torch.arange(9.0).view(1, 1, 3, 3).expand(B, N, 3, 3) + 200
    ptran = torch.arange(3.0).view(1, 1, 3).expand(B, N, 3) + 300
    bda = torch.arange(9.0).view(1, 3, 3) + 400
    s2e = torch.arange(16.0).view(1, 1, 4, 4).expand(B, N, 4, 4) + 500
    v = camera_mlp_input(K, prot, ptran, bda, s2e)
    assert v.shape == (1, 2, 27)
    assert v[0, 0].tolist() == [100, 104, 102, 105, 200, 201, 300, 203, 204, 301, 400, 401, 403, 404, 408,
                                *range(500, 512)]

"""LiDAR branch: dynamic voxel mean on the lidar grid, sparse encoder, dense (B, C, Z, Y, X) output."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fusionocc_core import load_config
from fusionocc_core.model.lidar_encoder import CustomSparseEncoder

# the repository's copy of shared/reference/official-fusionocc-parameters.tsv (official training log)
TSV = Path(__file__).resolve().parent / "official-fusionocc-parameters.tsv"


def _official_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        if name.startswith(prefix + "."):
            shapes[name[len(prefix) + 1:]] = tuple(int(v) for v in shape.split(","))
    return shapes


def _cloud(n: int, seed: int = 0) -> torch.Tensor:
    """A LiDAR-like cloud in the ego frame: rings hitting the ground and a wall, x y z intensity ring."""
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * math.pi
    ring = torch.randint(0, 32, (n,), generator=g)
    el = torch.deg2rad(-30 + 40 * ring / 31.0)
    r_ground = torch.where(el < 0, 1.8 / torch.tan(-el).clamp(min=1e-3), torch.full_like(el, 1e9))
    r = torch.minimum(r_ground, 12 + 4 * torch.sin(3 * az))
    z = r * torch.tan(el) + 0.03 * torch.randn(n, generator=g)
    return torch.stack([r * torch.cos(az), r * torch.sin(az), z, torch.rand(n, generator=g) * 255, ring.float()], 1)


@pytest.fixture(scope="module")
def tiny_encoder() -> CustomSparseEncoder:
    torch.manual_seed(0)
    return CustomSparseEncoder(load_config("tiny"))


def test_official_parameter_names_and_shapes_match_the_released_model() -> None:
    enc = CustomSparseEncoder(load_config("official"))
    ours = {n: tuple(p.shape) for n, p in enc.named_parameters()}
    expected = _official_shapes("lidar_encoder")
    assert len(expected) == 35
    assert list(ours.items()) == list(expected.items())
    assert enc.sparse_shape == (1600, 1600, 128) and enc.num_down == 3


def test_voxelize_averages_raw_features_per_voxel_in_xyz_order(tiny_encoder: CustomSparseEncoder) -> None:
    vs = tiny_encoder.voxel_size  # 0.2 m on a 400 x 400 x 32 grid
    pts = torch.tensor([
        [-39.99, 0.05, -0.95, 10.0, 1.0],  # voxel (0, 200, 0)
        [-39.85, 0.15, -0.85, 30.0, 3.0],  # same voxel
        [39.99, -39.99, 5.39, 7.0, 2.0],  # voxel (399, 0, 31)
        [40.0, 0.0, 0.0, 1.0, 1.0],  # x at the exclusive upper bound: dropped
        [0.0, 0.0, -1.01, 1.0, 1.0],  # below z range: dropped
        [float("nan"), 0.0, 0.0, 1.0, 1.0],  # NaN: dropped
        [1.0, 1.0, 1.0, float("inf"), 1.0],  # Inf feature: dropped
        [1e9, -1e9, 0.0, 1.0, 1.0],  # far outside: dropped
    ])
    x = tiny_encoder.scatter_voxelize([pts, pts[2:3]])
    assert x.spatial_shape == (400, 400, 32) and vs == pytest.approx(0.2)
    assert x.indices.tolist() == [[0, 0, 200, 0], [0, 399, 0, 31], [1, 399, 0, 31]]
    torch.testing.assert_close(x.features[0], torch.tensor([-39.92, 0.10, -0.90, 20.0, 2.0]))
    torch.testing.assert_close(x.features[1], pts[2])


def test_output_is_the_image_volume_layout(tiny_encoder: CustomSparseEncoder) -> None:
    tiny_encoder.eval()
    point = torch.tensor([[10.1, -5.1, 0.5, 50.0, 20.0]])  # occupancy voxel x 125, y 87, z 3
    with torch.no_grad():
        out = tiny_encoder([point])
    assert out.shape == (1, tiny_encoder.out_channels, 16, 200, 200)  # (B, C, Z, Y, X)
    z, y, x = torch.nonzero(out[0].abs().sum(0)).unbind(1)
    assert len(x) > 0
    assert set(x.tolist()) == {125} and set(y.tolist()) == {87}
    assert set(z.tolist()) <= {3, 4}  # the k3 s2 p1 conv spreads z = 7 (0.2 m) onto outputs 3 and 4


def test_empty_clouds_give_zeros_and_do_not_leak_between_samples(tiny_encoder: CustomSparseEncoder) -> None:
    tiny_encoder.eval()
    empty = torch.zeros(0, 5)
    with torch.no_grad():
        both_empty = tiny_encoder([empty, empty])
        mixed = tiny_encoder([_cloud(2000), empty])
        alone = tiny_encoder([_cloud(2000)])
    assert both_empty.shape == (2, tiny_encoder.out_channels, 16, 200, 200) and torch.count_nonzero(both_empty) == 0
    assert torch.count_nonzero(mixed[1]) == 0 and torch.count_nonzero(mixed[0]) > 0
    torch.testing.assert_close(mixed[0], alone[0])
    outside = torch.tensor([[100.0, 0.0, 0.0, 1.0, 1.0], [float("nan")] * 5])
    with torch.no_grad():
        assert torch.count_nonzero(tiny_encoder([outside])) == 0


def test_gradients_reach_every_parameter_in_training() -> None:
    torch.manual_seed(1)
    enc = CustomSparseEncoder(load_config("tiny")).train()
    out = enc([_cloud(1500, seed=1), _cloud(800, seed=2)])
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_points_are_refused_with_the_sample_named(tiny_encoder: CustomSparseEncoder) -> None:
    with pytest.raises(ValueError, match=r"points\[1\]"):
        tiny_encoder([torch.zeros(3, 5), torch.zeros(3, 4)])
    with pytest.raises(TypeError, match="list"):
        tiny_encoder(torch.zeros(1, 3, 5))


def test_a_voxel_size_that_does_not_reach_the_occupancy_grid_is_refused() -> None:
    from fusionocc_core.config import config_from_dict

    with pytest.raises(ValueError, match="lidar_voxel_size"):
        CustomSparseEncoder(config_from_dict({"model": {"lidar_voxel_size": 0.3}}))
    with pytest.raises(ValueError, match="lidar_voxel_size"):
        CustomSparseEncoder(config_from_dict({"model": {"lidar_voxel_size": 0.025}}))  # needs 4 stride-2 convs


@pytest.mark.slow
def test_official_encoder_runs_a_lidar_sized_cloud_on_cpu() -> None:
    torch.manual_seed(0)
    enc = CustomSparseEncoder(load_config("official")).eval()
    with torch.no_grad():
        out = enc([_cloud(60000)])
    assert out.shape == (1, 32, 16, 200, 200)
    assert torch.isfinite(out).all() and torch.count_nonzero(out) > 0

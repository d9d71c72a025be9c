"""Losses: occupancy CE (plain / camera-masked), depth BCE on LiDAR pixels, 2D seg CE ignoring 17."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusionocc_core.config import config_from_dict
from fusionocc_core.losses import (compute_losses, depth_loss, depth_target, enet_class_weights, occupancy_loss,
                                   resolve_class_weights, seg_loss)

DEPTH = (1.0, 45.0, 0.5)  # 88 bins


def _naive_depth_target(sparse: np.ndarray, ds: int) -> np.ndarray:
    """Per patch: nearest positive depth d, bin floor((d - 1) / 0.5) if 1 <= d < 45, else no target."""
    B, N, H, W = sparse.shape
    rows = []
    for b in range(B):
        for n in range(N):
            for i in range(H // ds):
                for j in range(W // ds):
                    patch = sparse[b, n, i * ds:(i + 1) * ds, j * ds:(j + 1) * ds]
                    valid = patch[np.isfinite(patch) & (patch > 0)]
                    row = np.zeros(88, np.float32)
                    if valid.size:
                        d = np.float32(valid.min())
                        k = int(math.floor((d - np.float32(0.5)) / np.float32(0.5))) - 1  # float32 like the model
                        if 0 <= k < 88:
                            row[k] = 1
                    rows.append(row)
    return np.stack(rows)


def test_depth_target_keeps_the_nearest_return_per_patch_with_lower_edge_bins() -> None:
    sparse = np.zeros((1, 2, 4, 8), np.float32)  # ds = 4 -> 1 x 2 patches per camera
    sparse[0, 0, 0, 0], sparse[0, 0, 3, 3] = 3.2, 2.7  # patch (0,0): min 2.7 -> bin 3 ([2.5, 3.0))
    sparse[0, 0, 1, 5] = 0.9  # patch (0,1): closer than 1 m -> no target
    sparse[0, 1, 0, 0] = 1.0  # exactly the lower edge -> bin 0
    sparse[0, 1, 2, 6], sparse[0, 1, 0, 4] = 44.99, float("nan")  # NaN ignored; 44.99 -> bin 87
    got = depth_target(torch.from_numpy(sparse), 4, DEPTH).numpy()
    assert got.shape == (4, 88)
    assert [int(r.argmax()) if r.any() else None for r in got] == [3, None, 0, 87]
    np.testing.assert_array_equal(got, _naive_depth_target(sparse, 4))
    rng = np.random.default_rng(0)
    rand = np.where(rng.random((2, 3, 8, 16)) < 0.2, rng.uniform(-2, 50, (2, 3, 8, 16)), 0).astype(np.float32)
    rand[0, 0, 0, 0] = 45.0  # the exclusive upper edge
    np.testing.assert_array_equal(depth_target(torch.from_numpy(rand), 4, DEPTH).numpy(), _naive_depth_target(rand, 4))


def test_depth_loss_is_bce_summed_over_bins_and_averaged_over_lidar_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 88, 2, 3, generator=g), 1).requires_grad_(True)  # B*N = 2, h 2, w 3
    sparse = torch.zeros(1, 2, 8, 12)
    sparse[0, 0, 0, 0] = 5.1  # pixel (0, 0) of camera 0 -> bin 8
    sparse[0, 1, 7, 11] = 30.0  # pixel (1, 2) of camera 1 -> bin 58
    loss = depth_loss(probs, sparse, DEPTH)
    t0, t1 = torch.zeros(88), torch.zeros(88)
    t0[8], t1[58] = 1, 1
    expect = (F.binary_cross_entropy(probs[0, :, 0, 0], t0, reduction="sum") + F.binary_cross_entropy(probs[1, :, 1, 2], t1, reduction="sum")) / 2
    torch.testing.assert_close(loss, expect)
    loss.backward()
    assert probs.grad[0, :, 0, 1].abs().sum() == 0 and probs.grad[0, :, 0, 0].abs().sum() > 0
    assert depth_loss(probs.detach(), torch.zeros(1, 2, 8, 12), DEPTH).item() == 0.0  # no return at all


def test_occupancy_loss_plain_mean_and_camera_masked_mean() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 2, 18, generator=g)
    labels = torch.randint(0, 18, (2, 4, 3, 2), generator=g)
    mask = torch.rand(2, 4, 3, 2, generator=g) < 0.3
    per_voxel = F.cross_entropy(logits.reshape(-1, 18), labels.reshape(-1), reduction="none")
    torch.testing.assert_close(occupancy_loss(logits, labels), per_voxel.mean())
    torch.testing.assert_close(occupancy_loss(logits, labels, mask), per_voxel[mask.reshape(-1)].mean())
    assert occupancy_loss(logits, labels, torch.zeros_like(mask)).item() == 0.0  # nothing visible: 0, not NaN
    with pytest.raises(ValueError, match="voxel_semantics"):
        occupancy_loss(logits, torch.full_like(labels, 18))


def test_class_weighted_occupancy_loss_scales_each_voxel_by_its_label_weight() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 5, 4, 3, 18, generator=g)
    labels = torch.randint(0, 18, (1, 5, 4, 3), generator=g)
    mask = torch.rand(1, 5, 4, 3, generator=g) < 0.5
    w = torch.rand(18, generator=g) * 10
    flat_logits, flat_labels = logits.reshape(-1, 18), labels.reshape(-1)
    # by hand: -log softmax at the label, times the label's weight; mean over voxels (mmdet), not over weights
    nll = -torch.log_softmax(flat_logits, -1).gather(1, flat_labels[:, None])[:, 0]
    weighted = nll * w[flat_labels]
    torch.testing.assert_close(occupancy_loss(logits, labels, class_weight=w), weighted.mean())
    torch.testing.assert_close(occupancy_loss(logits, labels, mask, w), weighted[mask.reshape(-1)].mean())
    torch.testing.assert_close(occupancy_loss(logits, labels, mask, torch.ones(18)), occupancy_loss(logits, labels, mask))
    with pytest.raises(ValueError, match="class_weight"):
        occupancy_loss(logits, labels, class_weight=torch.ones(17))


def test_enet_weights_and_their_resolution_from_the_config() -> None:
    counts = np.array([0, 10, 90] + [0] * 15, np.int64)
    w = enet_class_weights(counts)
    np.testing.assert_allclose(w[:3], [1 / math.log(1.02), 1 / math.log(1.12), 1 / math.log(1.92)], rtol=1e-6)
    assert w[0] > w[1] > w[2]  # rarer classes weigh more; an absent class gets the largest weight
    calls = []
    got = resolve_class_weights("enet", 18, lambda: calls.append(1) or counts)
    assert calls == [1] and torch.allclose(got, torch.from_numpy(w))
    assert resolve_class_weights(None, 18, lambda: calls.append(1)) is None and calls == [1]  # counts never read
    assert resolve_class_weights([2] * 18, 18).tolist() == [2.0] * 18
    for bad, match in (("focal", "null, 'enet'"), ([1.0] * 17, "18 finite"), ([1.0] * 17 + [-1.0], "non-negative"),
                       ([True] * 18, "null, 'enet'")):
        with pytest.raises(ValueError, match=match):
            resolve_class_weights(bad, 18, lambda: counts)
    with pytest.raises(ValueError, match="positive sum"):
        enet_class_weights(np.zeros(18))


def test_seg_loss_subsamples_by_the_stride_and_ignores_17() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 18, 2, 3, generator=g, requires_grad=True)  # B*N = 2 at stride 4
    labels = torch.full((1, 2, 8, 12), 17)
    labels[0, 0, 0, 0] = 4  # picked (pixel (0, 0))
    labels[0, 1, 4, 8] = 11  # picked (pixel (1, 2))
    labels[0, 0, 1, 1] = 3  # not on the stride grid: ignored
    expect = (F.cross_entropy(logits[0:1, :, 0, 0], torch.tensor([4])) + F.cross_entropy(logits[1:2, :, 1, 2], torch.tensor([11]))) / 2
    torch.testing.assert_close(seg_loss(logits, labels), expect)
    empty = seg_loss(logits, torch.full((1, 2, 8, 12), 17))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="seg_labels"):
        seg_loss(logits, torch.full((1, 2, 8, 12), 255))


def _outputs_and_batch(B: int = 1, N: int = 2) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(3)
    outputs = {
        "occ_logits": torch.randn(B, 200, 200, 16, 18, generator=g, requires_grad=True),
        "depth_probs": torch.softmax(torch.randn(B * N, 88, 2, 4, generator=g), 1).requires_grad_(True),
        "seg_logits": torch.randn(B * N, 18, 2, 4, generator=g, requires_grad=True),
    }
    sparse = torch.zeros(B, N, 32, 64)
    sparse[:, :, ::7, ::9] = torch.rand(B, N, 5, 8, generator=g) * 40 + 2
    batch = {
        "voxel_semantics": torch.randint(0, 18, (B, 200, 200, 16), generator=g),
        "mask_camera": torch.rand(B, 200, 200, 16, generator=g) < 0.5,
        "sparse_depth": sparse,
        "seg_labels": torch.randint(0, 18, (B, N, 32, 64), generator=g),
    }
    return outputs, batch


def test_compute_losses_applies_the_config_weights_and_the_mask_switch() -> None:
    outputs, batch = _outputs_and_batch()
    cfg = config_from_dict({"train": {"loss_occ_weight": 2.0, "loss_depth_weight": 0.1, "loss_seg_weight": 0.5}})
    losses = compute_losses(outputs, batch, cfg)
    assert sorted(losses) == ["loss_depth", "loss_occ", "loss_seg"]
    torch.testing.assert_close(losses["loss_occ"], 2.0 * occupancy_loss(outputs["occ_logits"], batch["voxel_semantics"]))
    torch.testing.assert_close(losses["loss_depth"], 0.1 * depth_loss(outputs["depth_probs"], batch["sparse_depth"], DEPTH))
    torch.testing.assert_close(losses["loss_seg"], 0.5 * seg_loss(outputs["seg_logits"], batch["seg_labels"]))
    masked = compute_losses(outputs, batch, config_from_dict({"data": {"use_mask": True}}))
    torch.testing.assert_close(masked["loss_occ"], occupancy_loss(outputs["occ_logits"], batch["voxel_semantics"], batch["mask_camera"]))
    assert not torch.isclose(masked["loss_occ"], losses["loss_occ"] / 2.0)
    sum(losses.values()).backward()
    assert all(outputs[k].grad is not None and outputs[k].grad.abs().sum() > 0 for k in outputs)


def test_missing_keys_and_mismatched_shapes_are_named() -> None:
    outputs, batch = _outputs_and_batch()
    cfg = config_from_dict({})
    with pytest.raises(KeyError, match="seg_labels"):
        compute_losses(outputs, {k: v for k, v in batch.items() if k != "seg_labels"}, cfg)
    with pytest.raises(KeyError, match="mask_camera"):
        compute_losses(outputs, {k: v for k, v in batch.items() if k != "mask_camera"}, config_from_dict({"data": {"use_mask": True}}))
    with pytest.raises(ValueError, match="sparse_depth"):
        depth_loss(outputs["depth_probs"], torch.zeros(1, 2, 30, 64), DEPTH)
    with pytest.raises(ValueError, match="bins"):
        depth_loss(outputs["depth_probs"], batch["sparse_depth"], (1.0, 45.0, 1.0))
    with pytest.raises(ValueError, match=r"batch\['sparse_depth'\] 30x64 is not an integer multiple"):
        depth_loss(outputs["depth_probs"], torch.zeros(1, 2, 30, 64), DEPTH)
    with pytest.raises(ValueError, match=r"batch\['seg_labels'\] \(1, 3, 32, 64\) does not match seg_logits"):
        seg_loss(outputs["seg_logits"], torch.zeros(1, 3, 32, 64, dtype=torch.long))
    with pytest.raises(ValueError, match=r"batch\['seg_labels'\] 32x60 is not an integer multiple"):
        seg_loss(outputs["seg_logits"], torch.zeros(1, 2, 32, 60, dtype=torch.long))

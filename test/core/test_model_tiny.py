"""The tiny preset end to end: shapes, forward + backward, gradient coverage, temporal no_grad, bad input."""
from __future__ import annotations

import copy

import pytest
import torch

from fusionocc_core.config import load_config
from fusionocc_core.losses import compute_losses
from fusionocc_core.model import build_model
from fusionocc_core.model.example_inputs import example_batch


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


@pytest.fixture(scope="module")
def eval_outputs(model, cfg):
    """One eval forward of the example batch (shared by the input-handling tests)."""
    batch = example_batch(cfg, seed=1)
    model.eval()
    with torch.inference_mode():
        return batch, model(batch)


def test_forward_backward_reaches_every_trainable_tensor(model, cfg):
    torch.manual_seed(0)
    model.train()
    model.zero_grad(set_to_none=True)
    batch = example_batch(cfg, seed=0)
    batch["imgs"].requires_grad_(True)
    out = model(batch)
    assert tuple(out["occ_logits"].shape) == (1, 200, 200, 16, 18)
    assert tuple(out["depth_probs"].shape) == (6, 88, 8, 22)
    assert tuple(out["seg_logits"].shape) == (6, 18, 8, 22)
    assert torch.allclose(out["depth_probs"].sum(1), torch.ones(6, 8, 22), atol=1e-5)
    losses = compute_losses(out, batch, cfg)
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"no gradient reached {no_grad}"
    zero = [n for n, p in model.named_parameters() if not torch.any(p.grad != 0)]
    assert not zero, f"all-zero gradient for {zero}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # the previous frame runs under no_grad: only the key frame's pixels get a gradient
    g = batch["imgs"].grad
    assert g[:, 0].abs().sum() > 0 and g[:, 1].abs().sum() == 0


def test_eval_forward_is_deterministic_and_uses_both_frames_and_lidar(model, cfg, eval_outputs):
    batch, out = eval_outputs
    with torch.inference_mode():
        again = model(batch)["occ_logits"]
        assert torch.equal(out["occ_logits"], again)
        other = dict(batch, imgs=batch["imgs"].clone())
        other["imgs"][:, 1] += 1.0  # change only the previous frame
        assert not torch.equal(model(other)["occ_logits"], again)
        no_lidar = dict(batch, points=[torch.zeros(0, 5)])
        assert not torch.equal(model(no_lidar)["occ_logits"], again)


def test_record_stages_times_every_stage_only_inside_the_block(model, eval_outputs):
    from fusionocc_core.model.fusionocc import STAGES

    batch, out = eval_outputs
    with torch.inference_mode():
        with model.record_stages() as times:
            res = model(batch)["occ_logits"]
            lidar_ms = times["lidar_encoder"]
            with model.record_stages(enabled=False) as off:
                model.lidar_volume(batch["points"], res)  # not recorded anywhere
            with model.record_stages() as inner:
                model.lidar_volume(batch["points"], res)
        assert off is None and set(inner) == {"lidar_encoder"}
        assert set(times) == set(STAGES) and all(v > 0 for v in times.values())
        assert times["lidar_encoder"] == lidar_ms  # the inner blocks did not add to the outer dict
        model(batch)
        assert set(times) == set(STAGES) and times["lidar_encoder"] == lidar_ms  # nothing after the block
    assert torch.equal(res, out["occ_logits"])


def test_channels_last_3d_layout_gives_the_same_result(model, eval_outputs):
    batch, out = eval_outputs
    model.set_channels_last_3d(True)
    try:
        assert model.final_conv.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            res = model(batch)["occ_logits"]
    finally:
        model.set_channels_last_3d(False)
    assert model.final_conv.conv.weight.is_contiguous()
    assert torch.allclose(res, out["occ_logits"], atol=1e-4)


def test_empty_and_garbage_point_clouds_give_the_image_only_result(model, cfg, eval_outputs):
    batch, _ = eval_outputs
    nan_rows = torch.tensor([[float("nan"), 0, 0, 1, 1], [0, float("inf"), 0, 1, 1], [1e6, 0, 0, 1, 1],
                             [0, 0, -30.0, 1, 1]])
    with torch.inference_mode():
        empty = model(dict(batch, points=[torch.zeros(0, 5)]))["occ_logits"]
        garbage = model(dict(batch, points=[nan_rows]))["occ_logits"]
        assert torch.equal(empty, garbage)
        vol = model.lidar_volume([torch.zeros(0, 5), nan_rows], torch.zeros(1))
        assert tuple(vol.shape) == (2, 8, 16, 200, 200) and not vol.any()


def test_non_finite_and_far_points_are_dropped_not_propagated(model, cfg, eval_outputs):
    batch, out = eval_outputs
    pts = batch["points"][0]
    bad = torch.tensor([[float("nan"), 1, 1, 1, 1], [1, 1, float("-inf"), 1, 1], [2, 2, 2, float("nan"), 3],
                        [500.0, 0, 0, 1, 1], [0, -41.0, 0, 1, 1], [0, 0, 5.4, 1, 1]])
    dirty = torch.cat([pts[:100], bad, pts[100:]])
    with torch.inference_mode():
        res = model(dict(batch, points=[dirty]))["occ_logits"]
    assert torch.isfinite(res).all()
    assert torch.equal(res, out["occ_logits"])


def test_batch_of_two_with_one_empty_cloud(model, cfg):
    batch = example_batch(cfg, batch_size=2, seed=3)
    batch["points"][1] = torch.zeros(0, 5)
    model.eval()
    with torch.inference_mode():
        out = model(batch)["occ_logits"]
        single = model({k: (v[1:] if torch.is_tensor(v) else v[1:]) for k, v in batch.items()})["occ_logits"]
    assert tuple(out.shape) == (2, 200, 200, 16, 18)
    assert torch.allclose(out[1:], single, atol=1e-4)


@pytest.mark.parametrize("key, mutate, message", [
    ("imgs", lambda v: v[:, :, :5], r"batch\['imgs'\]: expected \(B, T=2, N=6, 3, 128, 352\)"),
    ("imgs", lambda v: v[..., :100], r"batch\['imgs'\]: expected"),
    ("imgs", lambda v: v[:, :1], r"T=2"),
    ("imgs", lambda v: v[0], r"batch\['imgs'\]: expected a tensor"),
    ("intrins", lambda v: v[:, :, :5], r"batch\['intrins'\]: expected shape \(1, 2, 6, 3, 3\)"),
    ("sparse_depth", lambda v: v[..., :64, :], r"batch\['sparse_depth'\]"),
    ("sensor2ego", lambda v: v.clone().fill_(float("nan")), r"batch\['sensor2ego'\] contains NaN"),
    ("points", lambda v: v + v, r"batch\['points'\]: expected a list of 1"),
    ("points", lambda v: [torch.zeros(10)], r"batch\['points'\]: each entry must be \(P, 5\)"),
    ("bda", None, r"batch is missing 'bda'"),
])
def test_bad_input_gives_a_clear_error(model, cfg, eval_outputs, key, mutate, message):
    batch = copy.copy(eval_outputs[0])
    if mutate is None:
        del batch[key]
    else:
        batch[key] = mutate(batch[key])
    with torch.inference_mode(), pytest.raises(ValueError, match=message):
        model(batch)


def test_config_mismatch_is_rejected(cfg):
    bad = copy.deepcopy(cfg)
    bad.data.input_size = (120, 352)
    with pytest.raises(ValueError, match="multiple of model.img_downsample"):
        build_model(bad)
    bad = copy.deepcopy(cfg)
    bad.model.img_backbone = "vit"
    with pytest.raises(ValueError, match="'swin' or 'resnet'"):
        build_model(bad)

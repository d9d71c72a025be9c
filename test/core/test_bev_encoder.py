"""Dense 3D encoders: official names/shapes, BasicBlock3D/LSSFPN3D arithmetic, shapes and gradients."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusionocc_core.model.bev_encoder import BasicBlock3D, ConvModule3d, CustomResNet3D, LSSFPN3D, conv3d

# the repository's copy of shared/reference/official-fusionocc-parameters.tsv (official training log)
TSV = Path(__file__).resolve().parent / "official-fusionocc-parameters.tsv"


def _official_shapes(prefix: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        if name.startswith(prefix + "."):
            rows.append((name[len(prefix) + 1:], tuple(int(v) for v in shape.split(","))))
    return rows


@pytest.mark.parametrize(
    "prefix, make, count",
    [
        ("img_bev_encoder_backbone", lambda: CustomResNet3D(96, [1, 2, 3], [64, 128, 256], [1, 2, 2]), 45),
        ("img_bev_encoder_neck", lambda: LSSFPN3D(448, 64), 3),
        ("pre_process_net", lambda: CustomResNet3D(32, [1], [32], [1]), 9),
    ],
)
def test_official_parameter_names_and_shapes(prefix: str, make, count: int) -> None:
    ours = [(n, tuple(p.shape)) for n, p in make().named_parameters()]
    expected = _official_shapes(prefix)
    assert len(expected) == count and ours == expected


def _bn_eval(x: torch.Tensor, bn: nn.BatchNorm3d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise_bn(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_basic_block_computes_conv_bn_relu_conv_bn_plus_projection_then_relu() -> None:
    torch.manual_seed(0)
    shortcut = ConvModule3d(4, 6, 3, stride=2, padding=1, relu=False)
    block = BasicBlock3D(4, 6, stride=2, downsample=shortcut).eval()
    _randomise_bn(block, 1)
    x = torch.randn(2, 4, 6, 8, 10)
    y1 = F.relu(_bn_eval(F.conv3d(x, block.conv1.conv.weight, stride=2, padding=1), block.conv1.bn))
    y2 = _bn_eval(F.conv3d(y1, block.conv2.conv.weight, padding=1), block.conv2.bn)
    ident = _bn_eval(F.conv3d(x, shortcut.conv.weight, stride=2, padding=1), shortcut.bn)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(y2 + ident))
    assert block.conv1.conv.bias is None and block.conv2.relu is None


def test_resnet3d_stage_shapes_and_every_first_block_has_a_projection() -> None:
    net = CustomResNet3D(24, [1, 2, 1], [8, 16, 32], [1, 2, 2])
    feats = net(torch.randn(1, 24, 16, 20, 20))
    assert [tuple(f.shape) for f in feats] == [(1, 8, 16, 20, 20), (1, 16, 8, 10, 10), (1, 32, 4, 5, 5)]
    assert all(stage[0].downsample is not None for stage in net.layers)
    assert all(b.downsample is None for stage in net.layers for b in list(stage)[1:])
    only_first = CustomResNet3D(32, [1], [32], [1])(torch.randn(1, 32, 4, 6, 6))
    assert len(only_first) == 1 and only_first[0].shape == (1, 32, 4, 6, 6)


def test_lssfpn3d_equals_the_official_scale_factor_upsampling() -> None:
    torch.manual_seed(0)
    neck = LSSFPN3D(8 + 16 + 32, 8).eval()
    _randomise_bn(neck, 2)
    feats = [torch.randn(1, 8, 16, 20, 20), torch.randn(1, 16, 8, 10, 10), torch.randn(1, 32, 4, 5, 5)]
    up1 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
    up2 = nn.Upsample(scale_factor=4, mode="trilinear", align_corners=True)
    cat = torch.cat([feats[0], up1(feats[1]), up2(feats[2])], 1)
    expect = F.relu(_bn_eval(F.conv3d(cat, neck.conv.conv.weight), neck.conv.bn))
    with torch.no_grad():
        torch.testing.assert_close(neck(feats), expect)


def test_gradients_reach_every_parameter_and_checkpointing_changes_nothing() -> None:
    torch.manual_seed(0)
    plain = nn.ModuleDict({"bb": CustomResNet3D(12, [1, 1, 1], [8, 16, 32], [1, 2, 2]), "neck": LSSFPN3D(56, 8)})
    cp = nn.ModuleDict({"bb": CustomResNet3D(12, [1, 1, 1], [8, 16, 32], [1, 2, 2], with_cp=True), "neck": LSSFPN3D(56, 8, with_cp=True)})
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 12, 8, 12, 12, requires_grad=True)
    outs = []
    for net in (plain, cp):
        out = net["neck"](net["bb"](x))
        out.square().mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p), (_, q) in zip(plain.named_parameters(), cp.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_inconsistent_stage_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="num_layer"):
        CustomResNet3D(8, [1, 1], [8, 16, 32], [1, 2])
    with pytest.raises(ValueError, match="stride"):
        CustomResNet3D(8, [1, 1, 1], [8, 16, 32], [1, 2])
    with pytest.raises(ValueError, match="3 levels"):
        LSSFPN3D(8, 8)([torch.zeros(1, 8, 2, 2, 2)])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_conv3d_equals_torch_conv3d_forward_and_backward(layout: torch.memory_format) -> None:
    # the shapes PyTorch's heuristic sent to its slow path: batch 1, few channels, a 1x1x1 kernel too;
    # the 1x1x1 weight is a channel slice, as in LSSFPN3D
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 8, 20, 20, generator=g).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(16, 16, 3, 3, 3, generator=g).contiguous(memory_format=layout).requires_grad_()
    b = torch.randn(16, generator=g).requires_grad_()
    w1 = torch.randn(8, 24, 1, 1, 1, generator=g)[:, :16].requires_grad_()
    for args, kwargs in (((x, w, b), {"stride": 2, "padding": 1}), ((x, w1), {})):
        got = conv3d(*args, **kwargs)
        want = F.conv3d(*args, **kwargs)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        upstream = torch.randn(want.shape, generator=g)
        grads_got = torch.autograd.grad((got * upstream).sum(), args)
        grads_want = torch.autograd.grad((want * upstream).sum(), args)
        for a, c in zip(grads_got, grads_want):
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-3)

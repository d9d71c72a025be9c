"""Image side: Swin (window attention, shift masks, mmseg index/merge layouts), ResNet, FPN_LSS, fusion."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fusionocc_core.model.fpn_lss import FPN_LSS
from fusionocc_core.model.resnet import ResNet
from fusionocc_core.model.swin import PatchMerging, ShiftWindowMSA, SwinTransformer, WindowMSA
from fusionocc_core.model.view_transformer import CrossModalFusion


def test_relative_position_index_matches_mmseg_construction():
    """mmseg: double_step_seq(2w-1, w, 1, w), plus its transpose, flipped along dim 1."""
    w = 5
    seq = (torch.arange(0, (2 * w - 1) * w, 2 * w - 1)[:, None] + torch.arange(w)[None, :]).reshape(1, -1)
    mmseg = (seq + seq.T).flip(1)
    assert torch.equal(WindowMSA(8, 2, w).relative_position_index, mmseg)


def test_window_attention_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    attn = WindowMSA(8, 2, 3)
    nn.init.normal_(attn.relative_position_bias_table)
    x = torch.randn(4, 9, 8)
    mask = torch.where(torch.rand(2, 9, 9) > 0.7, -100.0, 0.0)
    qkv = attn.qkv(x).view(4, 9, 3, 2, 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * 4 ** -0.5, qkv[1], qkv[2]
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(9, 9, 2).permute(2, 0, 1)
    logits = q @ k.transpose(-1, -2) + bias  # (4, 2, 9, 9)
    logits = logits + mask.repeat(2, 1, 1).unsqueeze(1)  # window i of image b uses mask[i % nW]
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(4, 9, 8))
    assert torch.allclose(attn(x, mask), ref, atol=1e-5)


def _receptive_tokens(module: ShiftWindowMSA, H: int, W: int, token: tuple[int, int]) -> set[tuple[int, int]]:
    x = torch.randn(1, H * W, 8, requires_grad=True)
    out = module(x, (H, W)).view(H, W, 8)
    out[token].sum().backward()
    g = x.grad.view(H, W, 8).abs().sum(-1)
    # the mask is -100 (mmseg), not -inf: masked tokens keep a ~1e-44 weight, hence the threshold
    return {tuple(ij) for ij in (g > 1e-12 * g.max()).nonzero().tolist()}


def test_plain_windows_only_mix_tokens_of_the_same_window():
    torch.manual_seed(0)
    m = ShiftWindowMSA(8, 2, window=4, shift=0)
    assert _receptive_tokens(m, 8, 8, (5, 2)) == {(i, j) for i in range(4, 8) for j in range(0, 4)}


def test_shifted_windows_are_masked_by_region():
    """Shift 2, window 4 on 8x8: the wrapped windows must not mix tokens from opposite borders."""
    torch.manual_seed(0)
    m = ShiftWindowMSA(8, 2, window=4, shift=2)
    assert _receptive_tokens(m, 8, 8, (3, 3)) == {(i, j) for i in range(2, 6) for j in range(2, 6)}
    assert _receptive_tokens(m, 8, 8, (7, 7)) == {(i, j) for i in (6, 7) for j in (6, 7)}
    assert _receptive_tokens(m, 8, 8, (0, 7)) == {(i, j) for i in (0, 1) for j in (6, 7)}
    assert _receptive_tokens(m, 8, 8, (6, 3)) == {(i, j) for i in (6, 7) for j in range(2, 6)}


def test_patch_merging_uses_unfold_channel_order():
    """mmseg's PatchMerging is nn.Unfold(2, stride 2): the 4C vector is ordered (c, ki, kj)."""
    torch.manual_seed(0)
    pm = PatchMerging(3)
    x = torch.randn(2, 4 * 6, 3)
    ours, hw = pm(x, (4, 6))
    unfolded = nn.Unfold(2, stride=2)(x.view(2, 4, 6, 3).permute(0, 3, 1, 2)).transpose(1, 2)  # (2, 6, 12)
    assert hw == (2, 3)
    assert torch.allclose(ours, pm.reduction(pm.norm(unfolded)), atol=1e-6)


def test_swin_outputs_stride_16_and_32_maps_and_handles_odd_sizes():
    torch.manual_seed(0)
    swin = SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7).eval()
    outs = swin(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 4, 6), (2, 128, 2, 3)]
    assert swin.out_channels == [64, 128] and swin.out_strides == [16, 32]
    # sizes that are not multiples of the patch / window / merge stride are padded, not rejected
    outs = swin(torch.randn(1, 3, 70, 90))
    assert [tuple(o.shape[2:]) for o in outs] == [(5, 6), (3, 3)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_resnet_and_neck_give_the_stride_16_feature_map():
    net = ResNet((8, 16, 32, 64), (1, 2, 1, 1)).eval()
    neck = FPN_LSS(sum(net.out_channels), 24).eval()
    feats = net(torch.randn(3, 3, 128, 352))
    assert [tuple(f.shape) for f in feats] == [(3, 32, 8, 22), (3, 64, 4, 11)]
    assert tuple(neck(feats).shape) == (3, 24, 8, 22)
    with pytest.raises(ValueError, match="4 stage widths"):
        ResNet((8, 16, 32))


def test_fpn_upsamples_the_coarse_map_with_align_corners():
    neck = FPN_LSS(3, 2)
    fine, coarse = torch.randn(1, 1, 4, 6), torch.randn(1, 2, 2, 3)
    captured = {}
    neck.conv[0].register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    neck(feats=[fine, coarse])
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)(coarse)  # the official module
    assert torch.equal(captured["x"], torch.cat([fine, up], 1))


def test_cross_modal_fusion_is_a_residual_cross_gating():
    torch.manual_seed(0)
    fusion = CrossModalFusion(8).eval()
    for spatial in (fusion.spatial_c, fusion.spatial_d):  # make sure the ReLU gates are open somewhere
        nn.init.constant_(spatial[2].bias, 0.5)
    fc, fd = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    out_c, out_d = fusion(fc, fd)
    # reference written out from the description (reference/fusionocc-architecture.md §1.5)
    w_c = torch.sigmoid(fusion.channel_mlp_c[0](fc.mean((2, 3))))[..., None, None]
    w_d = torch.sigmoid(fusion.channel_mlp_d[0](fd.mean((2, 3))))[..., None, None]
    fused = fusion.fuse_conv(torch.cat([fc * w_d, fd * w_c], 1))
    z_c = fusion.spatial_c(fused[:, :8].mean(1, keepdim=True))
    z_d = fusion.spatial_d(fused[:, 8:].mean(1, keepdim=True))
    assert torch.allclose(out_c, fc * (1 + z_d), atol=1e-6)
    assert torch.allclose(out_d, fd * (1 + z_c), atol=1e-6)
    assert (z_c >= 0).all() and (z_d >= 0).all()
    assert not torch.allclose(out_c, fc) and not torch.allclose(out_d, fd)

"""Dense 3D encoders: CustomResNet3D (`img_bev_encoder_backbone`, `pre_process_net`) and LSSFPN3D.

BEVDet's 3D ResNet (reference/fusionocc-architecture.md §1.8), with the official parameter names:
`layers.{i}.{j}.conv1.conv/bn`, `conv2.conv/bn`, `downsample.conv/bn`; neck `conv.conv/bn`.
Every stage's first block has a projection shortcut (k3 conv + BN, same stride), even at stride 1.
Volumes are (B, C, Z, Y, X).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _triple
from torch.utils.checkpoint import checkpoint


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1) -> torch.Tensor:
    """F.conv3d, with float32 CPU convolutions always through oneDNN: PyTorch's heuristic sends batch-1
    volumes with few channels (and 1x1x1 kernels on one thread) to its im2col path, 7-14x slower for
    this model's 3D encoder (BENCHMARKS.md). Same arithmetic library as F.conv3d's fast path, autograd
    included."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, _triple(padding), _triple(stride), _triple(dilation),
                                                 groups)
    return F.conv3d(x, weight, bias, stride, padding, dilation, groups)


class ConvModule3d(nn.Module):
    """mmcv ConvModule for 3D: bias-free Conv3d (`conv`) + BatchNorm3d (`bn`) + optional ReLU."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, stride: int = 1, padding: int = 0, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(channels_in, channels_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(channels_out)
        self.relu = nn.ReLU(inplace=True) if relu else None
        # the conv with the BN folded in (fold_batchnorm); buffers so that .to() moves them, not saved
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)

    def fold_batchnorm(self, dtype: torch.dtype | None = None) -> None:
        """Inference: fold the BN's running statistics into one conv (weight * s, beta - mean * s with
        s = gamma / sqrt(var + eps)), computed in float64 and kept in `dtype` (default the conv's) and
        the conv weight's memory format; the parameters (and the state_dict) stay unchanged, and
        training mode ignores the fold. Call again after loading other weights."""
        with torch.no_grad():
            w = self.conv.weight
            scale = self.bn.weight.double() / torch.sqrt(self.bn.running_var.double() + self.bn.eps)
            weight = torch.empty_like(w, dtype=dtype or w.dtype)  # same layout (channels_last_3d or not)
            weight.copy_(w.double() * scale.view(-1, 1, 1, 1, 1))
            bias = (self.bn.bias.double() - self.bn.running_mean.double() * scale).to(dtype or w.dtype)
        self.folded_weight, self.folded_bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if self.folded_weight is not None and not self.training:
            x = conv3d(x, self.folded_weight, self.folded_bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        else:
            x = self.bn(conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups))
        return self.relu(x) if self.relu is not None else x


class BasicBlock3D(nn.Module):
    """k3 conv-BN-ReLU, k3 conv-BN, plus identity (or `downsample` projection), then ReLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = ConvModule3d(channels_in, channels_out, 3, stride=stride, padding=1, relu=True)
        self.conv2 = ConvModule3d(channels_out, channels_out, 3, stride=1, padding=1, relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample(x) if self.downsample is not None else x  # (B, C_out, Z/s, Y/s, X/s)
        x = self.conv2(self.conv1(x))  # (B, C_out, Z/s, Y/s, X/s)
        return self.relu(x + identity)


class CustomResNet3D(nn.Module):
    """Stages of BasicBlock3D; returns the output of every stage listed in backbone_output_ids."""

    def __init__(
        self,
        numC_input: int,
        num_layer: Sequence[int] = (2, 2, 2),
        num_channels: Optional[Sequence[int]] = None,
        stride: Sequence[int] = (2, 2, 2),
        backbone_output_ids: Optional[Sequence[int]] = None,
        with_cp: bool = False,
    ):
        super().__init__()
        if len(num_layer) != len(stride):
            raise ValueError(f"CustomResNet3D: num_layer {tuple(num_layer)} and stride {tuple(stride)} differ in length")
        num_channels = list(num_channels) if num_channels is not None else [numC_input * 2 ** (i + 1) for i in range(len(num_layer))]
        if len(num_channels) != len(num_layer):
            raise ValueError(f"CustomResNet3D: num_channels {tuple(num_channels)} and num_layer {tuple(num_layer)} differ in length")
        self.backbone_output_ids = tuple(range(len(num_layer))) if backbone_output_ids is None else tuple(backbone_output_ids)
        self.with_cp = with_cp
        stages, c_in = [], numC_input
        for n, c_out, s in zip(num_layer, num_channels, stride):
            shortcut = ConvModule3d(c_in, c_out, 3, stride=s, padding=1, relu=False)
            blocks = [BasicBlock3D(c_in, c_out, stride=s, downsample=shortcut)]
            blocks += [BasicBlock3D(c_out, c_out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layers = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, Z, Y, X) -> [stage outputs], e.g. official: (B,64,16,200,200), (B,128,8,100,100), (B,256,4,50,50)."""
        feats = []
        for i, stage in enumerate(self.layers):
            if self.with_cp and x.requires_grad:
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            if i in self.backbone_output_ids:
                feats.append(x)
        return feats


class LSSFPN3D(nn.Module):
    """Upsample the 1/2 and 1/4 levels to full size (trilinear, align_corners), concat, 1x1x1 conv.

    Computed in the equivalent factorised order: the 1x1x1 conv is split by input channels and each
    part is applied at its own level before upsampling (conv and per-channel trilinear upsampling
    are both linear, so they commute). Same weights and numbers as the official concat-then-conv,
    without the (C0+C1+C2)-channel full-resolution volume: 2-4x less work in this block.
    """

    def __init__(self, in_channels: int, out_channels: int, with_cp: bool = False):
        super().__init__()
        self.conv = ConvModule3d(in_channels, out_channels, 1, relu=True)
        self.with_cp = with_cp

    def _fuse(self, x_8: torch.Tensor, x_16: torch.Tensor, x_32: torch.Tensor) -> torch.Tensor:
        weight = self.conv.conv.weight  # (out, C0+C1+C2, 1, 1, 1)
        c0, c1 = x_8.shape[1], x_16.shape[1]
        if weight.shape[1] != c0 + c1 + x_32.shape[1]:
            raise ValueError(f"LSSFPN3D expects {weight.shape[1]} input channels in all, got "
                             f"{c0}+{c1}+{x_32.shape[1]}")
        size = x_8.shape[2:]
        y = conv3d(x_8, weight[:, :c0])
        for x, w in ((x_16, weight[:, c0:c0 + c1]), (x_32, weight[:, c0 + c1:])):
            y = y + F.interpolate(conv3d(x, w), size=size, mode="trilinear", align_corners=True)
        y = self.conv.bn(y)
        return self.conv.relu(y) if self.conv.relu is not None else y

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """[(B,C0,Z,Y,X), (B,C1,Z/2,Y/2,X/2), (B,C2,Z/4,Y/4,X/4)] -> (B, out_channels, Z, Y, X)."""
        if len(feats) != 3:
            raise ValueError(f"LSSFPN3D takes 3 levels, got {len(feats)}")
        if self.with_cp and any(f.requires_grad for f in feats):
            return checkpoint(self._fuse, *feats, use_reentrant=False)
        return self._fuse(*feats)

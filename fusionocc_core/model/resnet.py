"""Small ResNet image backbone for the `tiny` preset (and the 2D BasicBlock used across the model).

Same output contract as the Swin backbone with out_indices (2, 3): a list of two feature maps at
strides 16 and 32, so the neck and view transformer do not care which backbone is used.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionocc_core.config import ModelConfig


class BasicBlock(nn.Module):
    """mmdet ResNet BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU (names conv1/bn1/conv2/bn2)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` BasicBlocks; the first one changes stride/width through a 1x1 projection."""
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride, down)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Stem (stride 4) + 4 stages at strides 4/8/16/32; returns the stages in `out_indices`."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (1, 1, 1, 1),
                 out_indices: tuple[int, ...] = (2, 3)):
        super().__init__()
        if len(channels) != 4 or len(blocks) != 4:
            raise ValueError(f"ResNet needs 4 stage widths and 4 block counts, got {channels} and {blocks}")
        stem = channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
        )
        self.layers = nn.ModuleList()
        in_ch = stem
        for i, (ch, nb) in enumerate(zip(channels, blocks)):
            self.layers.append(_stage(in_ch, ch, nb, 1 if i == 0 else 2))
            in_ch = ch
        self.out_indices = tuple(out_indices)
        self.out_channels = [channels[i] for i in self.out_indices]
        self.out_strides = [4 * 2**i for i in self.out_indices]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, out_indices: tuple[int, ...] = (2, 3)) -> "ResNet":
        """The backbone that model_cfg.resnet_* describe (the tiny preset's image backbone)."""
        return cls(tuple(model_cfg.resnet_channels), tuple(model_cfg.resnet_blocks), out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # (B, C0, H/4, W/4)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)  # (B, C_i, H/2^(i+2), W/2^(i+2))
            if i in self.out_indices:
                outs.append(x)
        return outs

"""FPN_LSS image neck (`img_neck`): fuse the stride-16 and stride-32 maps into one stride-16 map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN_LSS(nn.Module):
    """Upsample the coarse map x2 (bilinear, align_corners), concat [fine, coarse], two conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fine, coarse = feats[0], feats[1]  # (B, C2, h, w), (B, C3, h/2, w/2)
        # channels_last: the NHWC kernel spreads threads over channels too; the NCHW one gives each
        # thread all 6 x 1024 channels of one pixel (2.2 ms vs ~0.1 ms on an H200), same values
        coarse = F.interpolate(coarse.contiguous(memory_format=torch.channels_last), size=fine.shape[-2:],
                               mode="bilinear", align_corners=True)
        return self.conv(torch.cat([fine, coarse], dim=1))  # (B, out, h, w)

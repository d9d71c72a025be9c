"""Swin Transformer image backbone with mmseg-style parameter names (the official `img_backbone`).

Same computation and state-dict keys as the mmseg 0.x SwinTransformer that FusionOcc vendors:
windows padded with zeros (the padding takes part in attention), cyclic shift with the -100
mask, PatchMerging in nn.Unfold channel order (c, ki, kj), LayerNorm on the returned stages.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionocc_core.config import ModelConfig


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class WindowMSA(nn.Module):
    """Multi-head self-attention inside square windows, with a relative position bias table."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        ij = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)  # (2, w*w)
        rel = ij[:, :, None] - ij[:, None, :] + (window - 1)  # (2, w*w, w*w), each in [0, 2w-2]
        self.register_buffer("relative_position_index", rel[0] * (2 * window - 1) + rel[1])  # persistent, as in mmseg
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        Bw, L, C = x.shape  # (B*nW, w*w, C)
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(Bw, L, 3, h, C // h).permute(2, 0, 3, 1, 4)  # 3 x (Bw, h, L, C/h)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (L*L, h)
        # contiguous: a mask whose last dim is strided sends SDPA to its math kernel (6x slower on an H200)
        bias = bias.view(L, L, h).permute(2, 0, 1).contiguous().unsqueeze(0)  # (1, h, L, L)
        if mask is not None:  # (nW, L, L) -> broadcast over batch
            nW = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).unsqueeze(0).expand(Bw // nW, -1, -1, -1, -1).reshape(Bw, h, L, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)  # (Bw, h, L, C/h)
        return self.proj(out.transpose(1, 2).reshape(Bw, L, C))


def _window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*nW, w*w, C) with H, W multiples of w."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def _window_reverse(x: torch.Tensor, w: int, B: int, H: int, W: int) -> torch.Tensor:
    """(B*nW, w*w, C) -> (B, H, W, C)."""
    C = x.shape[-1]
    x = x.view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


_MASK_CACHE: dict[tuple, torch.Tensor] = {}


def _shift_mask(H: int, W: int, w: int, s: int, device: torch.device) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask (0 / -100) separating regions mixed by the cyclic shift."""
    key = (H, W, w, s, str(device))
    if key not in _MASK_CACHE:
        region = torch.zeros(1, H, W, 1, device=device)
        cuts = (slice(0, -w), slice(-w, -s), slice(-s, None))
        for i, hs in enumerate(cuts):
            for j, ws in enumerate(cuts):
                region[:, hs, ws, :] = i * 3 + j
        win = _window_partition(region, w).squeeze(-1)  # (nW, w*w)
        diff = win.unsqueeze(1) - win.unsqueeze(2)
        _MASK_CACHE[key] = torch.where(diff != 0, -100.0, 0.0)
    return _MASK_CACHE[key]


class ShiftWindowMSA(nn.Module):
    """(Shifted-)window attention on a token map, padding it to whole windows first."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.w_msa = WindowMSA(dim, num_heads, window)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, L, C = x.shape
        H, W = hw
        w, s = self.window, self.shift
        x = x.view(B, H, W, C)
        x = F.pad(x, (0, 0, 0, (w - W % w) % w, 0, (w - H % w) % w))  # zeros join the attention (mmseg)
        Hp, Wp = x.shape[1], x.shape[2]
        mask = None
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            mask = _shift_mask(Hp, Wp, w, s, x.device)
        x = _window_reverse(self.w_msa(_window_partition(x, w), mask), w, B, Hp, Wp)  # (B, Hp, Wp, C)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x[:, :H, :W, :].reshape(B, H * W, C)


class FFN(nn.Module):
    """MLP with mmcv's layout: layers = [Sequential(fc1, GELU, Dropout), fc2, Dropout]."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SwinBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: bool, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(dim, num_heads, window, window // 2 if shift else 0)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.ffn(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 token merge: (B, H*W, C) -> (B, H/2*W/2, 2C), 4C ordered like nn.Unfold (c, ki, kj)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        B, L, C = x.shape
        H, W = hw
        x = x.view(B, H, W, C)
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        Ho, Wo = x.shape[1] // 2, x.shape[2] // 2
        x = x.view(B, Ho, 2, Wo, 2, C).permute(0, 1, 3, 5, 2, 4).reshape(B, Ho * Wo, 4 * C)  # (B, L/4, 4C)
        return self.reduction(self.norm(x)), (Ho, Wo)


class SwinStage(nn.Module):
    """`depth` blocks alternating plain/shifted windows, then an optional PatchMerging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_paths: list[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, i % 2 == 1, mlp_ratio, drop_paths[i]) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        for blk in self.blocks:
            x = blk(x, hw)
        out, out_hw = x, hw
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        return x, hw, out, out_hw


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch conv + LayerNorm: (B, 3, H, W) -> (B, H/p*W/p, C)."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch
        x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0, (p - x.shape[2] % p) % p))
        x = self.projection(x)  # (B, C, H/p, W/p)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class SwinTransformer(nn.Module):
    """Swin backbone returning the normed feature maps of `out_indices` as (B, C_i, H_i, W_i)."""

    def __init__(self, embed_dims: int = 128, depths: tuple[int, ...] = (2, 2, 18, 2),
                 num_heads: tuple[int, ...] = (4, 8, 16, 32), window_size: int = 12, patch_size: int = 4,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.1, out_indices: tuple[int, ...] = (2, 3)):
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(embed_dims, patch_size)
        n = sum(depths)
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear stochastic-depth ramp
        self.stages = nn.ModuleList()
        self.num_features = [embed_dims * 2**i for i in range(len(depths))]
        for i, depth in enumerate(depths):
            self.stages.append(SwinStage(
                self.num_features[i], depth, num_heads[i], window_size, mlp_ratio,
                dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample=i < len(depths) - 1,
            ))
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.out_channels = [self.num_features[i] for i in self.out_indices]
        self.out_strides = [patch_size * 2**i for i in self.out_indices]
        self.apply(self._init_weights)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, out_indices: tuple[int, ...] = (2, 3)) -> "SwinTransformer":
        """The backbone that model_cfg.swin_* describe (the official image backbone)."""
        m = model_cfg
        return cls(m.swin_embed_dims, tuple(m.swin_depths), tuple(m.swin_num_heads), m.swin_window_size,
                   m.swin_patch_size, m.swin_mlp_ratio, m.swin_drop_path_rate, out_indices)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, hw = self.patch_embed(x)  # (B, H/4*W/4, C0)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw, out, out_hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(-1, *out_hw, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            if i >= max(self.out_indices):
                break
        return outs

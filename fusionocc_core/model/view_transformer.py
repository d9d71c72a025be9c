"""CrossModalLSS (`img_view_transformer`): LiDAR-depth / image fusion in 2D, then LSS lifting to 3D.

Per frame: the key sweep's sparse depth becomes an 88-bin one-hot per feature pixel; image and
depth features gate each other (CrossModalFusion); DepthSegNet predicts a depth distribution,
2D semantic logits and a 32-ch feature; depth x feature is pooled into the 200x200x16 volume.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionocc_core.config import Config, ModelConfig
from fusionocc_core.model.resnet import BasicBlock
from fusionocc_core.ops.voxel_pool import VoxelPoolPlan, VoxelPoolPlanCache, geometry_key, plan_voxel_pool, voxel_pool


def sparse_depth_onehot(sparse_depth: torch.Tensor, downsample: int,
                        depth_cfg: tuple[float, float, float]) -> torch.Tensor:
    """Sparse depth (B, N, H, W) metres (0 = none) -> one-hot bins (B*N, D, H/ds, W/ds).

    Each ds x ds patch keeps its nearest non-zero depth; bin k covers [lo + k*st, lo + (k+1)*st);
    patches with no return or a depth outside [lo, hi) get an all-zero vector (official rule).
    """
    B, N, H, W = sparse_depth.shape
    lo, hi, st = depth_cfg
    D = int(round((hi - lo) / st))
    if H % downsample or W % downsample:
        raise ValueError(f"sparse_depth {H}x{W} is not a multiple of the feature stride {downsample}")
    h, w = H // downsample, W // downsample
    d = sparse_depth.float().reshape(B * N, h, downsample, w, downsample)
    d = torch.where(d > 0, d, torch.full_like(d, 1e5)).amin(dim=(2, 4))  # (B*N, h, w) nearest per patch
    k = ((d - (lo - st)) / st).long()  # bin + 1; 0 and > D are invalid
    k = torch.where((k >= 1) & (k <= D), k, torch.zeros_like(k))
    onehot = F.one_hot(k, num_classes=D + 1)[..., 1:]  # (B*N, h, w, D)
    return onehot.permute(0, 3, 1, 2).float().contiguous()  # (B*N, D, h, w)


def camera_mlp_input(intrins: torch.Tensor, post_rots: torch.Tensor, post_trans: torch.Tensor,
                     bda: torch.Tensor, sensor2ego: torch.Tensor) -> torch.Tensor:
    """The 27-d camera-aware vector per camera, in the official order: (B, N, 27)."""
    B, N = intrins.shape[:2]
    bda = bda.view(B, 1, 3, 3).expand(B, N, 3, 3)
    cols = [
        intrins[..., 0, 0], intrins[..., 1, 1], intrins[..., 0, 2], intrins[..., 1, 2],
        post_rots[..., 0, 0], post_rots[..., 0, 1], post_trans[..., 0],
        post_rots[..., 1, 0], post_rots[..., 1, 1], post_trans[..., 1],
        bda[..., 0, 0], bda[..., 0, 1], bda[..., 1, 0], bda[..., 1, 1], bda[..., 2, 2],
    ]
    return torch.cat([torch.stack(cols, dim=-1), sensor2ego[..., :3, :].reshape(B, N, 12)], dim=-1)


class Mlp(nn.Module):
    """fc1 -> ReLU -> fc2 (dropout 0 in the official model)."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int):
        super().__init__()
        self.fc1 = nn.Linear(in_ch, hidden)
        self.fc2 = nn.Linear(hidden, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class SELayer(nn.Module):
    """Gate x by sigmoid(conv_expand(relu(conv_reduce(camera embedding))))."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(ch, ch, 1)
        self.conv_expand = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, x_se: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv_expand(F.relu(self.conv_reduce(x_se))))


class _ASPPModule(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int):
        super().__init__()
        pad = 0 if kernel == 1 else dilation
        self.atrous_conv = nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Atrous spatial pyramid (dilations 1/6/12/18 + image pooling) -> 1x1 back to `in_ch`."""

    def __init__(self, in_ch: int, mid_ch: int):
        super().__init__()
        self.aspp1 = _ASPPModule(in_ch, mid_ch, 1, 1)
        self.aspp2 = _ASPPModule(in_ch, mid_ch, 3, 6)
        self.aspp3 = _ASPPModule(in_ch, mid_ch, 3, 12)
        self.aspp4 = _ASPPModule(in_ch, mid_ch, 3, 18)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(in_ch, mid_ch, 1, bias=False), nn.BatchNorm2d(mid_ch), nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(mid_ch * 5, in_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)  # (B, 5*mid, h, w)
        return self.dropout(F.relu(self.bn1(self.conv1(x))))


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DepthSegNet(nn.Module):
    """Three camera-aware branches on the fused map: depth bins, 2D semantics and context."""

    def __init__(self, model_cfg: ModelConfig, depth_bins: int):
        super().__init__()
        in_ch, mid_ch = 2 * model_cfg.mid_channels, model_cfg.mid_channels
        feature_ch, aspp_mid = model_cfg.feature_channels, model_cfg.aspp_mid_channels
        seg_ch = feature_ch // 2
        context_ch = feature_ch - seg_ch
        # registration order = the official state-dict order
        self.reduce_conv_depth = _conv_bn_relu(in_ch, mid_ch)
        self.reduce_conv_seg = _conv_bn_relu(in_ch, mid_ch)
        self.reduce_conv_context = _conv_bn_relu(in_ch, mid_ch)
        self.depth_mlp = Mlp(27, mid_ch, mid_ch)
        self.bn = nn.BatchNorm1d(27)
        self.depth_se = SELayer(mid_ch)
        self.depth_conv = nn.Sequential(
            BasicBlock(mid_ch, mid_ch), BasicBlock(mid_ch, mid_ch), ASPP(mid_ch, aspp_mid), nn.Conv2d(mid_ch, depth_bins, 1),
        )
        self.context_mlp = Mlp(27, mid_ch, mid_ch)
        self.context_se = SELayer(mid_ch)
        self.context_conv = nn.Conv2d(mid_ch, context_ch, 3, padding=1)
        self.seg_mlp = Mlp(27, mid_ch, mid_ch)
        self.seg_se = SELayer(mid_ch)
        self.seg_conv = nn.Sequential(nn.Conv2d(mid_ch, seg_ch, 3, padding=1), BasicBlock(seg_ch, seg_ch))
        self.seg_out = nn.Conv2d(seg_ch, model_cfg.num_classes, 1)

    def forward(self, x: torch.Tensor, mlp_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (BN, in, h, w), mlp_input (BN, 27) -> depth logits (BN, D, h, w), feature (BN, F, h, w), seg logits."""
        cam = self.bn(mlp_input)  # (BN, 27) normalised camera vector
        seg = self.seg_se(self.reduce_conv_seg(x), self.seg_mlp(cam)[..., None, None])
        seg_feature = self.seg_conv(seg)  # (BN, F/2, h, w)
        seg_logits = self.seg_out(seg_feature)  # (BN, classes, h, w)
        context = self.context_se(self.reduce_conv_context(x), self.context_mlp(cam)[..., None, None])
        context_feature = self.context_conv(context)  # (BN, F/2, h, w)
        depth = self.depth_se(self.reduce_conv_depth(x), self.depth_mlp(cam)[..., None, None])
        depth_logits = self.depth_conv(depth)  # (BN, D, h, w)
        return depth_logits, torch.cat([seg_feature, context_feature], dim=1), seg_logits


class CrossModalFusion(nn.Module):
    """Channel cross re-weighting, then residual spatial cross-gating of image and depth features."""

    def __init__(self, ch: int, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha
        self.channel_mlp_c = nn.Sequential(nn.Linear(ch, ch), nn.Sigmoid())
        self.channel_mlp_d = nn.Sequential(nn.Linear(ch, ch), nn.Sigmoid())
        self.spatial_c = nn.Sequential(nn.Conv2d(1, ch // 2, 1), nn.ReLU(inplace=True), nn.Conv2d(ch // 2, 1, 1), nn.ReLU(inplace=True))
        self.spatial_d = nn.Sequential(nn.Conv2d(1, ch // 2, 1), nn.ReLU(inplace=True), nn.Conv2d(ch // 2, 1, 1), nn.ReLU(inplace=True))
        self.fuse_conv = _conv_bn_relu(2 * ch, 2 * ch)
        # Init only (weights load over it): the official gate ends in a ReLU and with PyTorch's default
        # init it is often dead everywhere from the start (z = 0, no gradient ever reaches it). A
        # non-negative last layer starts it open: z > 0 wherever a hidden unit fires.
        for spatial in (self.spatial_c, self.spatial_d):
            with torch.no_grad():
                spatial[2].weight.abs_()
                spatial[2].bias.zero_()

    def forward(self, fc: torch.Tensor, fd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C = fc.shape[1]
        w_c = self.channel_mlp_c(fc.mean(dim=(2, 3)))[..., None, None]  # (BN, C, 1, 1) from the image
        w_d = self.channel_mlp_d(fd.mean(dim=(2, 3)))[..., None, None]  # (BN, C, 1, 1) from the depth
        fused = self.fuse_conv(torch.cat([w_d * fc, w_c * fd], dim=1))  # (BN, 2C, h, w)
        z_c = self.spatial_c(fused[:, :C].mean(dim=1, keepdim=True))  # (BN, 1, h, w) >= 0
        z_d = self.spatial_d(fused[:, C:].mean(dim=1, keepdim=True))
        return fc + self.alpha * z_d * fc, fd + self.alpha * z_c * fd


class CrossModalLSS(nn.Module):
    """2D fusion + depth/seg heads + LSS lifting of one frame's six cameras into a 3D volume; sized by
    cfg.model (widths, stride), cfg.grid (volume, depth bins) and cfg.data.input_size (frustum)."""

    def __init__(self, cfg: Config):
        super().__init__()
        m = cfg.model
        self.grid = cfg.grid
        self.downsample = m.img_downsample
        self.depth_bins = self.grid.num_depth_bins
        self.depth_dropout_prob = m.depth_dropout_prob
        D, mid = self.depth_bins, m.mid_channels
        # registration order = the official state-dict order
        self.depth_encoder = nn.Sequential(*_conv_bn_relu(D, mid), *_conv_bn_relu(mid, mid))
        self.img_reduce_conv = _conv_bn_relu(m.neck_out_channels, mid)
        self.cross_model_fusion = CrossModalFusion(mid)
        self.further_fuse = BasicBlock(2 * mid, 2 * mid)
        self.depth_seg_net = DepthSegNet(m, D)
        frustum = self._frustum(tuple(cfg.data.input_size), self.downsample)  # (D, h, w, 3)
        self.register_buffer("frustum", frustum, persistent=False)
        self.plan_cache = VoxelPoolPlanCache()

    def _frustum(self, input_size: tuple[int, int], downsample: int) -> torch.Tensor:
        """(D, h, w, 3) of (u, v, depth): pixel centres spread over the input image, bin lower edges."""
        H, W = input_size
        h, w = H // downsample, W // downsample
        lo, hi, st = self.grid.depth
        d = lo + st * torch.arange(self.depth_bins, dtype=torch.float32)
        u = torch.linspace(0, W - 1, w)
        v = torch.linspace(0, H - 1, h)
        return torch.stack(torch.broadcast_tensors(u.view(1, 1, w), v.view(1, h, 1), d.view(-1, 1, 1)), dim=-1)

    def fuse(self, feats: torch.Tensor, depth_onehot: torch.Tensor, mlp_input: torch.Tensor):
        """feats (BN, C, h, w), one-hot (BN, D, h, w), mlp (BN, 27) -> depth probs, lift feature, seg logits."""
        if self.training and self.depth_dropout_prob > 0:  # official: each pixel's one-hot dropped w.p. 0.49
            keep = torch.rand(depth_onehot.shape[0], 1, *depth_onehot.shape[2:], device=depth_onehot.device) >= self.depth_dropout_prob
            depth_onehot = depth_onehot * keep
        fc = self.img_reduce_conv(feats)  # (BN, mid, h, w)
        fd = self.depth_encoder(depth_onehot.to(fc.dtype))  # (BN, mid, h, w)
        fc, fd = self.cross_model_fusion(fc, fd)
        x = self.further_fuse(torch.cat([fc, fd], dim=1))  # (BN, 2*mid, h, w)
        depth_logits, feature, seg_logits = self.depth_seg_net(x, mlp_input)
        return depth_logits.softmax(dim=1), feature, seg_logits

    def frustum_points(self, sensor2ego: torch.Tensor, intrins: torch.Tensor, post_rots: torch.Tensor,
                       post_trans: torch.Tensor, bda: torch.Tensor) -> torch.Tensor:
        """Ego (x, y, z) of every frustum point: (B, N, D, h, w, 3), in float32."""
        B, N = sensor2ego.shape[:2]
        f32 = dict(dtype=torch.float32)
        s2e, K, prot, ptran, bda = (t.to(**f32) for t in (sensor2ego, intrins, post_rots, post_trans, bda))
        pts = self.frustum.view(1, 1, *self.frustum.shape) - ptran.view(B, N, 1, 1, 1, 3)  # undo image aug
        pts = (torch.linalg.inv(prot).view(B, N, 1, 1, 1, 3, 3) @ pts.unsqueeze(-1)).squeeze(-1)
        pts = torch.cat([pts[..., :2] * pts[..., 2:3], pts[..., 2:3]], dim=-1)  # (u*d, v*d, d)
        combine = s2e[..., :3, :3] @ torch.linalg.inv(K)  # (B, N, 3, 3)
        pts = (combine.view(B, N, 1, 1, 1, 3, 3) @ pts.unsqueeze(-1)).squeeze(-1) + s2e[..., :3, 3].view(B, N, 1, 1, 1, 3)
        return (bda.view(B, 1, 1, 1, 1, 3, 3) @ pts.unsqueeze(-1)).squeeze(-1)

    def plan(self, sensor2ego: torch.Tensor, intrins: torch.Tensor, post_rots: torch.Tensor, post_trans: torch.Tensor,
             bda: torch.Tensor, key: str | None = None) -> VoxelPoolPlan:
        """The voxel-pooling plan of this geometry, from the plan cache or made (and cached) here on the
        matrices' device; key as in `lift`."""
        # the frustum is fixed per module (input size, downsample, depth bins): not part of the key
        if key is None:
            key = geometry_key(sensor2ego, intrins, post_rots, post_trans, bda)
        plan = self.plan_cache.get(key)
        if plan is None:
            with torch.no_grad():
                coords = self.frustum_points(sensor2ego, intrins, post_rots, post_trans, bda)
                plan = plan_voxel_pool(coords, self.grid.lower, self.grid.voxel_size, self.grid.shape)
            self.plan_cache.put(key, plan)
        return plan

    def lift(self, depth_probs: torch.Tensor, feature: torch.Tensor, sensor2ego: torch.Tensor, intrins: torch.Tensor,
             post_rots: torch.Tensor, post_trans: torch.Tensor, bda: torch.Tensor, key: str | None = None
             ) -> torch.Tensor:
        """Pool depth (BN, D, h, w) x feature (BN, F, h, w) into the volume (B, F, Z, Y, X). key: the
        geometry's plan-cache key when the caller made it from host copies of the same matrices
        (`geometry_key` of CUDA tensors copies them to the host: a device sync)."""
        B, N = sensor2ego.shape[:2]
        plan = self.plan(sensor2ego, intrins, post_rots, post_trans, bda, key)
        depth = depth_probs.view(B, N, *depth_probs.shape[1:])
        feat = feature.view(B, N, *feature.shape[1:])
        return voxel_pool(depth.float(), feat.float(), plan)  # pooled in fp32 even under autocast

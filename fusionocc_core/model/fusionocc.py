"""FusionOcc: the whole network, wiring the image, LiDAR and 3D stages (official module names).

forward(batch) -> {occ_logits (B, X, Y, Z, 18), depth_probs / seg_logits (B*N, ., h, w) of the key
frame}. Image frames are processed oldest first, every previous frame under no_grad, and the 3D
input is the concatenation [previous frames' volumes..., key-frame volume, LiDAR volume].

Input contract: batch["points"] holds each sample's (P, 5) cloud already filtered by the one input
path (fusionocc_core.data.transforms.eval_points: finite, inside the grid box). The model does not
filter again; the voxeliser only guards memory safety (rows it cannot place are dropped).
`with model.record_stages() as times:` collects per-stage wall times (ms).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn

from fusionocc_core.config import Config
from fusionocc_core.model.bev_encoder import ConvModule3d, CustomResNet3D, LSSFPN3D, conv3d
from fusionocc_core.model.fpn_lss import FPN_LSS
from fusionocc_core.model.lidar_encoder import POINT_DIMS, CustomSparseEncoder
from fusionocc_core.model.resnet import ResNet
from fusionocc_core.model.swin import SwinTransformer
from fusionocc_core.model.view_transformer import CrossModalLSS, camera_mlp_input, sparse_depth_onehot
from fusionocc_core.ops.voxel_pool import geometry_key

STAGES = ("backbone", "fusion", "lift", "lidar_encoder", "encoder_3d", "head")


class ConvReLU3d(nn.Module):
    """mmcv ConvModule(Conv3d, bias, no norm) + ReLU; the parameters live under `conv`."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.relu(conv3d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups))


IMAGE_BACKBONES = {"swin": SwinTransformer.from_config, "resnet": ResNet.from_config}


def build_image_backbone(cfg: Config) -> nn.Module:
    """Swin (official) or the small ResNet (tiny); both return [stride-16, stride-32] maps."""
    m = cfg.model
    if m.img_backbone not in IMAGE_BACKBONES:
        raise ValueError(f"model.img_backbone must be 'swin' or 'resnet', got {m.img_backbone!r}")
    net = IMAGE_BACKBONES[m.img_backbone](m, out_indices=(2, 3))
    if net.out_strides[0] != m.img_downsample:
        raise ValueError(f"model.img_downsample={m.img_downsample} but the {m.img_backbone} backbone's "
                         f"finer output has stride {net.out_strides[0]}")
    return net


class FusionOcc(nn.Module):
    """LiDAR + multi-frame camera 3D semantic occupancy network (the released FusionOcc layout)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        m, d = cfg.model, cfg.data
        self.num_frames = 1 + d.num_adj_img_frames
        self.num_cams = len(d.cameras)
        self.input_size = tuple(d.input_size)
        H, W = self.input_size
        if H % m.img_downsample or W % m.img_downsample:
            raise ValueError(f"data.input_size {H}x{W} must be a multiple of model.img_downsample={m.img_downsample}")
        head_ch = m.bev_channels[0]
        # registration order = the official state-dict order
        self.img_backbone = build_image_backbone(cfg)
        self.img_neck = FPN_LSS(sum(self.img_backbone.out_channels), m.neck_out_channels)
        self.img_view_transformer = CrossModalLSS(cfg)
        bev_in = m.feature_channels * self.num_frames + m.lidar_out_channels
        self.img_bev_encoder_backbone = CustomResNet3D(bev_in, list(m.bev_layers), list(m.bev_channels), list(m.bev_strides))
        self.img_bev_encoder_neck = LSSFPN3D(sum(m.bev_channels), head_ch)
        self.pre_process_net = CustomResNet3D(m.feature_channels, [1], [m.feature_channels], [1])
        self.lidar_encoder = CustomSparseEncoder(cfg)
        self.final_conv = ConvReLU3d(head_ch, head_ch)
        self.predicter = nn.Sequential(nn.Linear(head_ch, m.head_hidden), nn.Softplus(), nn.Linear(m.head_hidden, m.num_classes))
        self._stage_times: dict[str, float] | None = None  # the dict record_stages() fills, else None
        self.volume_format = torch.contiguous_format  # memory layout of the dense 3D stages

    def fold_batchnorm(self, dtype: torch.dtype | None = None) -> int:
        """Inference: fold every 3D conv's BatchNorm into the conv (ConvModule3d.fold_batchnorm; ~60 BN
        kernels less per frame on the official model); returns how many were folded."""
        folded = [m for m in self.modules() if isinstance(m, ConvModule3d)]
        for m in folded:
            m.fold_batchnorm(dtype)
        return len(folded)

    def compile_targets(self) -> list[nn.Module]:
        """The dense modules of fixed input shape that `torch.compile` fuses: the image backbone and neck,
        the 2D fusion and depth/seg heads (run for every time step: many small, launch-bound kernels),
        the volume's pre-process net, the 3D encoder and the head. The lift and the sparse LiDAR encoder
        (data-dependent sizes) stay eager."""
        vt = self.img_view_transformer
        return [self.img_backbone, self.img_neck, vt.img_reduce_conv, vt.depth_encoder, vt.cross_model_fusion,
                vt.further_fuse, vt.depth_seg_net, self.pre_process_net, self.img_bev_encoder_backbone,
                self.img_bev_encoder_neck, self.final_conv, self.predicter]

    def set_channels_last_3d(self, enabled: bool = True) -> None:
        """Run the dense 3D stages in channels_last_3d (NDHWC) layout: same numbers; on CPU inference
        ~20 % faster for the tiny preset's narrow volumes (no gain for training; BENCHMARKS.md)."""
        fmt = torch.channels_last_3d if enabled else torch.contiguous_format
        for module in (self.pre_process_net, self.img_bev_encoder_backbone, self.img_bev_encoder_neck, self.final_conv):
            for p in module.parameters():
                if p.ndim == 5:
                    p.data = p.data.contiguous(memory_format=fmt)
        self.volume_format = fmt

    # ---------------------------------------------------------------- timing
    @contextlib.contextmanager
    def record_stages(self, enabled: bool = True) -> Iterator[dict[str, float] | None]:
        """Within the block, every stage (STAGES) run adds its wall time in ms to the yielded dict; on
        CUDA each stage boundary synchronises the device. enabled=False yields None and records
        nothing (no synchronisation), so callers can pass their own switch. Blocks nest: an inner
        block records on its own and the outer one resumes after it."""
        outer = self._stage_times
        times: dict[str, float] | None = {} if enabled else None
        self._stage_times = times
        try:
            yield times
        finally:
            self._stage_times = outer

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the block to the recorded times[stage] (ms) inside record_stages()."""
        times = self._stage_times
        if times is None:
            yield
            return
        cuda = self.final_conv.conv.weight.is_cuda
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize()
        times[stage] = times.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3

    # ---------------------------------------------------------------- stages
    def encode_images(self, imgs: torch.Tensor) -> torch.Tensor:
        """Backbone + neck of one frame: (B, N, 3, H, W) -> (B, N, C_neck, H/16, W/16)."""
        B, N = imgs.shape[:2]
        with self.timed("backbone"):
            x = self.img_neck(self.img_backbone(imgs.flatten(0, 1)))  # (B*N, C, h, w)
        return x.view(B, N, *x.shape[1:])

    def image_volume(self, feats: torch.Tensor, depth_onehot: torch.Tensor, frame: dict[str, torch.Tensor],
                     sensor2ego_key: torch.Tensor, lift_key: str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame's neck features (B, N, C, h, w) -> lifted + pre-processed volume (B, F, Z, Y, X),
        depth probs (B*N, D, h, w), seg logits (B*N, classes, h, w). lift_key: see `lift_keys`."""
        B, N = feats.shape[:2]
        vt = self.img_view_transformer
        with self.timed("fusion"):
            # the camera MLP uses the key frame's extrinsics for every frame (official)
            mlp = camera_mlp_input(frame["intrins"], frame["post_rots"], frame["post_trans"], frame["bda"], sensor2ego_key)
            depth_probs, feature, seg_logits = vt.fuse(feats.flatten(0, 1), depth_onehot, mlp.flatten(0, 1))
        with self.timed("lift"):
            volume = vt.lift(depth_probs, feature, frame["sensor2ego"], frame["intrins"], frame["post_rots"],
                             frame["post_trans"], frame["bda"], key=lift_key)  # (B, F, Z, Y, X)
            volume = self.pre_process_net(volume.to(feature.dtype).contiguous(memory_format=self.volume_format))[0]
        return volume, depth_probs, seg_logits

    def lidar_volume(self, points: list[torch.Tensor], ref: torch.Tensor) -> torch.Tensor:
        """LiDAR encoder on B (P, 5) clouds -> (B, C_lidar, Z, Y, X) in ref's dtype; an empty cloud gives
        zeros. The clouds are expected finite and inside the grid box (eval_points); rows that are not
        are dropped by the voxeliser's bounds guard, never indexed."""
        with self.timed("lidar_encoder"):
            X, Y, Z = self.cfg.grid.shape
            out = ref.new_zeros(len(points), self.cfg.model.lidar_out_channels, Z, Y, X)
            nonempty = [i for i, p in enumerate(points) if p.shape[0] > 0]
            if nonempty:
                vol = self.lidar_encoder([points[i] for i in nonempty])  # (B', C, Z, Y, X)
                if len(nonempty) == len(points):
                    out = vol.to(ref.dtype)
                else:
                    out = out.index_copy(0, torch.tensor(nonempty, device=out.device), vol.to(ref.dtype))
        return out

    def decode(self, volume: torch.Tensor) -> torch.Tensor:
        """3D encoder + head: fused volume (B, C_in, Z, Y, X) -> logits (B, X, Y, Z, classes)."""
        with self.timed("encoder_3d"):
            x = self.img_bev_encoder_neck(self.img_bev_encoder_backbone(volume))  # (B, C, Z, Y, X)
        with self.timed("head"):
            x = self.final_conv(x).permute(0, 4, 3, 2, 1)  # (B, X, Y, Z, C)
            logits = self.predicter(x)  # (B, X, Y, Z, classes)
        return logits

    # ---------------------------------------------------------------- forward
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The full network on a batch dict (fusionocc_core.frame) -> occ/depth/seg outputs."""
        self.check_batch(batch)
        imgs = batch["imgs"]
        feats: list[torch.Tensor | None] = [None] * self.num_frames
        for t in range(self.num_frames - 1, -1, -1):
            with torch.no_grad() if t > 0 else contextlib.nullcontext():
                feats[t] = self.encode_images(imgs[:, t])
        return self.forward_features(batch, feats)  # type: ignore[arg-type]

    @staticmethod
    def lift_keys(batch: dict[str, Any]) -> list[str]:
        """Each time step's lift-plan cache key (its camera matrices and the BEV augmentation). Made
        from the host copies before they go to the device, they spare the lift a device sync per step."""
        T = batch["sensor2ego"].shape[1]
        return [geometry_key(*(batch[k][:, t] for k in ("sensor2ego", "intrins", "post_rots", "post_trans")),
                             batch["bda"]) for t in range(T)]

    def forward_features(self, batch: dict[str, Any], feats: list[torch.Tensor], lift_keys: list[str] | None = None,
                         lidar_volume: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor] | None = None
                         ) -> dict[str, torch.Tensor]:
        """Everything after the image backbone, given each frame's neck features (B, N, C, h, w).
        lift_keys: `lift_keys(batch)` made before the batch went to the device (None: made here).
        lidar_volume: stands in for `self.lidar_volume` (same arguments and result); it is called once
        the image stages are queued (the Predictor runs it on a second CUDA stream)."""
        depth_cfg = self.cfg.grid.depth
        with self.timed("fusion"):
            # the key sweep's sparse depth serves every frame (official)
            onehot = sparse_depth_onehot(batch["sparse_depth"], self.cfg.model.img_downsample, depth_cfg)
        s2e_key = batch["sensor2ego"][:, 0]
        volumes = []
        depth_probs = seg_logits = None
        for t in range(self.num_frames - 1, -1, -1):  # oldest previous frame first, key frame last
            frame = {k: batch[k][:, t] for k in ("sensor2ego", "intrins", "post_rots", "post_trans")}
            frame["bda"] = batch["bda"]
            with torch.no_grad() if t > 0 else contextlib.nullcontext():
                vol, dp, seg = self.image_volume(feats[t], onehot, frame, s2e_key,
                                                 None if lift_keys is None else lift_keys[t])
            volumes.append(vol)
            if t == 0:
                depth_probs, seg_logits = dp, seg
        volumes.append((lidar_volume or self.lidar_volume)(batch["points"], volumes[-1]))
        fused = torch.cat(volumes, dim=1).contiguous(memory_format=self.volume_format)  # (B, F*T + C_lidar, Z, Y, X)
        return {"occ_logits": self.decode(fused), "depth_probs": depth_probs, "seg_logits": seg_logits}

    # ---------------------------------------------------------------- validation
    def check_batch(self, batch: dict[str, Any]) -> None:
        """Raise a one-line ValueError naming the first batch field with a wrong type or shape (or a
        non-finite camera matrix). Point values are not checked: see the module's input contract."""
        for key in ("imgs", "intrins", "sensor2ego", "post_rots", "post_trans", "bda", "points", "sparse_depth"):
            if key not in batch:
                raise ValueError(f"batch is missing '{key}'")
        imgs = batch["imgs"]
        T, N, (H, W) = self.num_frames, self.num_cams, self.input_size
        if not torch.is_tensor(imgs) or imgs.ndim != 6:
            raise ValueError(f"batch['imgs']: expected a tensor (B, T={T}, N={N}, 3, {H}, {W}), "
                             f"got {tuple(imgs.shape) if torch.is_tensor(imgs) else type(imgs).__name__}")
        B = imgs.shape[0]
        if tuple(imgs.shape[1:]) != (T, N, 3, H, W):
            raise ValueError(f"batch['imgs']: expected (B, T={T}, N={N}, 3, {H}, {W}), got {tuple(imgs.shape)}")
        expected = {
            "intrins": (B, T, N, 3, 3), "sensor2ego": (B, T, N, 4, 4), "post_rots": (B, T, N, 3, 3),
            "post_trans": (B, T, N, 3), "bda": (B, 3, 3), "sparse_depth": (B, N, H, W),
        }
        for key, shape in expected.items():
            v = batch[key]
            if not torch.is_tensor(v) or tuple(v.shape) != shape:
                got = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
                raise ValueError(f"batch['{key}']: expected shape {shape}, got {got}")
            if key != "sparse_depth" and not torch.isfinite(v).all():
                raise ValueError(f"batch['{key}'] contains NaN/Inf")
        if not isinstance(batch["points"], (list, tuple)) or len(batch["points"]) != B:
            raise ValueError(f"batch['points']: expected a list of {B} (P, {POINT_DIMS}) tensors")
        for p in batch["points"]:  # shapes only: the values were filtered by the input path (eval_points)
            if not torch.is_tensor(p) or p.ndim != 2 or p.shape[1] != POINT_DIMS:
                got = tuple(p.shape) if torch.is_tensor(p) else type(p).__name__
                raise ValueError(f"batch['points']: each entry must be (P, {POINT_DIMS}), got {got}")

"""Inference API for the node and the offline tools: FrameSet in, uint8 labels + confidence out.

`Predictor(cfg, checkpoint, device, precision, compile, sparse_conv=...).predict(frame_set)` applies the official
test transform (fusionocc_core.data.transforms: the same functions the dataset's test mode calls:
LiDAR thinning + range box, PIL-equivalent resize + crop + normalisation, sparse depth), builds the
batch, and runs the network under torch.inference_mode (bf16/fp16 autocast on CUDA only). On CUDA
the images travel as uint8 (pinned, asynchronous) and are transformed on the GPU, and the sparse
depth is projected there; the LiDAR encoder and new lift plans run on a second stream, beside the
image stages. The previous key-frame's backbone+neck features are cached by
CameraFrame.stamp_ns, so every camera image goes through the backbone once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusionocc_core.config import Config, load_config
from fusionocc_core.data.transforms import eval_image_matrices, eval_image_tensors, eval_points, sparse_depth_tensors
from fusionocc_core.frame import CameraFrame, FrameSet
from fusionocc_core.inference_options import PRECISION_NAMES, SPARSE_CONV_ALGORITHMS
from fusionocc_core.model import build_model
from fusionocc_core.ops.sparse_conv import sparse_conv_algorithm
from fusionocc_core.transfer import upload

PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16)))


@dataclass
class Prediction:
    """One occupancy result in the ego frame at the LiDAR stamp, [x][y][z] C-order."""

    labels: np.ndarray  # (X, Y, Z) uint8 class index, 17 = free
    confidence: np.ndarray  # (X, Y, Z) uint8: round(255 * max softmax probability)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> ms (see Predictor.predict)
    stamp_ns: int = 0


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device, with a one-line error for a CUDA device that this machine does not have."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a valid torch device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine (use 'cpu')")
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", index)
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r} is not supported (use 'cpu' or 'cuda[:N]')")
    return dev


def check_inference_options(device: str | torch.device, precision: str = "fp32", compile: bool = False,
                            sparse_conv: str = "auto") -> torch.device:
    """The torch.device for these Predictor options, or a one-line ValueError naming what this machine
    or device cannot do (callers such as the node check before loading a checkpoint)."""
    dev = resolve_device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and dev.type != "cuda":
        raise ValueError(f"precision {precision!r} uses CUDA autocast; on {dev} use 'fp32'")
    if compile and dev.type != "cuda":
        raise ValueError("compile=True is supported on CUDA devices only")
    if sparse_conv not in SPARSE_CONV_ALGORITHMS:
        raise ValueError(f"sparse_conv must be one of {', '.join(SPARSE_CONV_ALGORITHMS)}, got {sparse_conv!r}")
    if sparse_conv == "triton":
        from fusionocc_core.ops import sparse_conv_triton

        if dev.type != "cuda":
            raise ValueError("sparse_conv 'triton' runs on CUDA devices only")
        if sparse_conv_triton.triton is None:
            raise ValueError("sparse_conv 'triton' needs the triton package (PyTorch's CUDA wheels include it)")
    return dev


def _store_gemm_weights_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keep Linear/conv weights in the autocast dtype: autocast would cast them again on every call
    (~1000 copy kernels per frame for the official model on an H200) and yields the same values.
    Norm layers and everything outside autocast keep fp32."""
    gemm = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d,
            torch.nn.ConvTranspose3d)
    for module in model.modules():
        if isinstance(module, gemm):
            module.to(dtype)


class Predictor:
    """A FusionOcc model ready for inference, with the previous key-frame's image features cached."""

    def __init__(self, cfg: Config | str | Path, checkpoint: str | Path | None = None, device: str = "cpu",
                 precision: str = "fp32", compile: bool = False, seed: int | None = None,
                 stage_timings: bool | None = None, sparse_conv: str = "auto"):
        self.cfg = load_config(cfg)
        # per-stage times synchronise the device at every stage boundary, which stops the host from
        # preparing the next stage while the GPU works: on by default on the CPU only (free there)
        self.seed = seed  # LiDAR thinning: None seeds each frame by its stamp (reproducible per frame)
        self.device = check_inference_options(device, precision, compile, sparse_conv)
        self.sparse_conv = sparse_conv  # the LiDAR encoder's rulebook form in predict() (sparse_conv_algorithm)
        self.precision = precision
        self.stage_timings = self.device.type == "cpu" if stage_timings is None else bool(stage_timings)
        self.model = build_model(self.cfg)
        self.checkpoint_kind = "random-init"
        if checkpoint is not None:
            path = Path(checkpoint)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint not found: {path}")
            from fusionocc_core.checkpoint import load_model_weights

            self.checkpoint_kind = load_model_weights(self.model, path)
        self.model.eval().to(self.device)
        if self.device.type == "cuda":
            # the dense convs see fixed shapes (input size, grid): cuDNN times its algorithms once per
            # shape (in warmup()) instead of choosing by heuristics. A process-wide switch.
            torch.backends.cudnn.benchmark = True
        if self.device.type == "cpu":
            self.model.set_channels_last_3d(True)  # measured faster on CPU; CUDA keeps cuDNN's default
        # the 3D convs' BNs folded into them, from the fp32 weights, in the layout chosen above
        self.model.fold_batchnorm(PRECISIONS[precision])
        if self.device.type == "cuda" and precision != "fp32":
            _store_gemm_weights_in(self.model, PRECISIONS[precision])
        self._encode = self.model.encode_images
        if compile:  # in place (nn.Module.compile): parameter names and state_dict keys stay unchanged
            for module in self.model.compile_targets():
                module.compile()
        self.num_frames = self.model.num_frames
        # CUDA: the LiDAR encoder and new lift plans run on this stream, beside the image stages (main
        # stream); high priority: its host-synchronising path gets free SMs first, the main stream the rest
        self._side_stream = torch.cuda.Stream(self.device, priority=-1) if self.device.type == "cuda" else None
        self._features: dict[int, torch.Tensor] = {}  # stamp_ns -> (1, N, C, h, w)
        self._reset_pending = False  # reset() from another thread: the next predict() drops the cache
        self.backbone_runs = 0  # frames that went through the backbone
        self.cache_hits = 0  # frames whose features came from the cache
        self.last_num_points = (0, 0)  # LiDAR points of the last frame: (received, fed to the encoder)

    # ------------------------------------------------------------------ inputs
    def _camera_inputs(self, cams: CameraFrame, what: str, with_images: bool = True
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One frame's matrices (intrins, sensor2ego, post_rots, post_trans as (N, ...) CPU tensors) and
        its normalised images (N, 3, H, W) on the device under the test transform. with_images=False
        checks the images but returns None for them: a frame whose features are cached needs only the
        matrices."""
        n = len(self.cfg.data.cameras)
        if len(cams.images) != n:
            raise ValueError(f"{what}.images: expected {n} camera images, got {len(cams.images)}")
        K = np.asarray(cams.intrinsics, np.float32)
        s2e = np.asarray(cams.sensor2ego, np.float32)
        if K.shape != (n, 3, 3) or not np.isfinite(K).all():
            raise ValueError(f"{what}.intrinsics: expected finite ({n}, 3, 3), got {K.shape}")
        if s2e.shape != (n, 4, 4) or not np.isfinite(s2e).all():
            raise ValueError(f"{what}.sensor2ego: expected finite ({n}, 4, 4), got {s2e.shape}")
        try:
            post_rots, post_trans = eval_image_matrices(cams.images, self.cfg)
        except ValueError as exc:
            raise ValueError(f"{what}.images: {exc}") from None
        imgs = eval_image_tensors(cams.images, self.cfg, self.device, pin_memory=True) if with_images else None
        return {"intrins": torch.from_numpy(K), "sensor2ego": torch.from_numpy(s2e),
                "post_rots": post_rots, "post_trans": post_trans}, imgs

    def _points(self, pts: np.ndarray, what: str) -> np.ndarray:
        pts = np.asarray(pts, np.float32)
        if pts.ndim != 2 or pts.shape[1] != 5:
            raise ValueError(f"frame_set.{what}: expected (P, 5) x y z intensity ring, got {pts.shape}")
        return pts

    def make_batch(self, frame_set: FrameSet) -> tuple[dict, list[CameraFrame]]:
        """The model batch (B = 1) of a FrameSet, and the CameraFrame used for every time step
        (imgs and sparse_depth on the Predictor's device, the rest on the CPU)."""
        batch, frames, _ = self._camera_batch(frame_set, skip_cached=False)
        batch.update(self._lidar_batch(frame_set, batch))
        return batch, frames

    def _camera_batch(self, frame_set: FrameSet, skip_cached: bool) -> tuple[dict, list[CameraFrame], list[torch.Tensor | None]]:
        """The camera part of the batch (matrices (1, T, N, ...) on the CPU, imgs), the CameraFrame of
        every time step and each time step's image tensor (N, 3, H, W). With skip_cached, frames whose
        features are in the cache (or repeat an earlier time step) get None and batch["imgs"] is a
        zero-stride placeholder of the right shape: their images are never transformed."""
        frames = [frame_set.cameras] + list(frame_set.previous[: self.num_frames - 1])
        # too little history (start-up): repeat the current frame, as the dataset does at a scene start
        frames += [frame_set.cameras] * (self.num_frames - len(frames))
        per_t, frame_imgs, seen = [], [], set()
        for t, f in enumerate(frames):
            cached = skip_cached and (id(f) in seen or (f.stamp_ns and int(f.stamp_ns) in self._features))
            mats, imgs = self._camera_inputs(f, "frame_set.cameras" if t == 0 else f"frame_set.previous[{t - 1}]",
                                             with_images=not cached)
            per_t.append(mats)
            frame_imgs.append(imgs)
            seen.add(id(f))
        batch = {k: torch.stack([p[k] for p in per_t]).unsqueeze(0) for k in per_t[0]}  # (1, T, N, ...)
        if all(img is not None for img in frame_imgs):
            batch["imgs"] = torch.stack(frame_imgs).unsqueeze(0)  # (1, T, N, 3, H, W)
        else:
            H, W = self.cfg.data.input_size
            batch["imgs"] = torch.zeros(()).expand(1, len(frames), len(self.cfg.data.cameras), 3, H, W)
        batch["bda"] = torch.eye(3).unsqueeze(0)
        return batch, frames, frame_imgs

    def _lidar_batch(self, frame_set: FrameSet, camera_batch: dict) -> dict:
        """The LiDAR part of the batch: the key sweep's sparse depth (1, N, H, W) on the device, and the
        merged sweeps through eval_points (a list of one (P, 5) CPU tensor: thinned, finite, inside the
        grid box, the model's input contract)."""
        key_points = upload(torch.from_numpy(self._points(frame_set.key_points, "key_points")), self.device)
        lo, hi, _ = self.cfg.grid.depth
        cur = {k: camera_batch[k][0, 0] for k in ("sensor2ego", "intrins", "post_rots", "post_trans")}
        # the key points live in the ego frame at the LiDAR stamp, the cameras in ego at the first camera's
        cams_lidarego = torch.from_numpy(frame_set.sensor2lidarego(cur["sensor2ego"].numpy()))
        sparse = sparse_depth_tensors(key_points, cams_lidarego, cur["intrins"], cur["post_rots"], cur["post_trans"],
                                      tuple(self.cfg.data.input_size), (lo, hi))  # (N, H, W) on the device
        seed = int(frame_set.stamp_ns) if self.seed is None else self.seed
        points = eval_points(self._points(frame_set.points, "points"), self.cfg, np.random.default_rng(seed))
        self.last_num_points = (len(frame_set.points), len(points))  # (received, after thinning + range box)
        return {"sparse_depth": sparse.unsqueeze(0), "points": [torch.from_numpy(points)]}

    # ------------------------------------------------------------------ features
    def _frame_features(self, imgs: torch.Tensor | None, stamp_ns: int) -> torch.Tensor:
        """Backbone+neck features (1, N, C, h, w) of one frame, from the cache when its stamp is known.
        imgs (N, 3, H, W) may be None only for a cached stamp."""
        if stamp_ns and stamp_ns in self._features:
            self.cache_hits += 1
            return self._features[stamp_ns]
        if imgs is None:
            raise RuntimeError(f"no images for frame {stamp_ns} and no cached features")  # a bug, not bad input
        feats = self._encode(imgs.unsqueeze(0))
        self.backbone_runs += 1
        if stamp_ns:
            self._features[stamp_ns] = feats
            while len(self._features) > self.num_frames:  # keep the newest stamps: the next call's history
                del self._features[min(self._features)]
        return feats

    def reset(self) -> None:
        """Forget the cached features (time jumped back: a new timeline may reuse the stamps). Safe
        while predict() runs in another thread (the node's worker): the next predict() drops them."""
        self._reset_pending = True

    def warmup(self, iterations: int = 3, image_hw: tuple[int, int] = (900, 1600), num_points: int = 250_000) -> float:
        """Run `predict` on synthetic frames shaped like real ones (six image_hw cameras, num_points
        LiDAR points, the previous frame cached) so that compilation, cuDNN autotuning and the
        allocator's first growth happen before the first real frame; returns the seconds it took.
        The feature cache and the lift plans are cleared afterwards."""
        from fusionocc_core.model.example_inputs import rig_extrinsics, rig_intrinsics, scene_points

        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        scale = np.array([image_hw[1] / 1600.0, image_hw[0] / 900.0, 1.0], np.float32)[:, None]
        K, s2e = rig_intrinsics(len(self.cfg.data.cameras)) * scale, rig_extrinsics()
        images = [np.zeros((*image_hw, 3), np.uint8) for _ in self.cfg.data.cameras]
        pts, _ = scene_points(rng, num_points)
        previous: list[CameraFrame] = []
        for i in range(max(1, iterations)):
            cams = CameraFrame(images, K, s2e, stamp_ns=i + 1)  # the cache is cleared below
            self.predict(FrameSet(i + 1, cams, previous, pts, pts[: num_points // 8]))
            previous = [cams]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._features, self._reset_pending = {}, False
        self.model.img_view_transformer.plan_cache.clear()
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ CUDA streams
    # Both steps below synchronise with the host (nonzero/unique: output sizes). On the main stream
    # each would wait for the backbone queued before it and leave the GPU idle while the host queues
    # the next kernels; on the side stream they wait for their own work only, and the LiDAR encoder's
    # kernels run beside the image stages'. The main stream waits for the side stream's results.
    def _plan_lifts_on_side_stream(self, batch: dict, lift_keys: list[str], ready: torch.cuda.Event) -> None:
        """Make the lift plans that are not cached (a moving rig: every frame) on the side stream."""
        side, main = self._side_stream, torch.cuda.current_stream(self.device)
        vt = self.model.img_view_transformer
        with torch.cuda.stream(side):
            side.wait_event(ready)
            mats = {k: upload(batch[k], self.device) for k in ("sensor2ego", "intrins", "post_rots", "post_trans", "bda")}
            plans = [vt.plan(*(mats[k][:, t] for k in ("sensor2ego", "intrins", "post_rots", "post_trans")),
                             mats["bda"], key) for t, key in enumerate(lift_keys)]
        main.wait_stream(side)
        for plan in plans:  # cached and used on the main stream: its memory is not reused before that work ends
            for tensor in (plan.ranks_depth, plan.ranks_feat, plan.ranks_voxel):
                tensor.record_stream(main)

    def _lidar_volume_on_side_stream(self, points: list[torch.Tensor], ref: torch.Tensor) -> torch.Tensor:
        """model.lidar_volume on the side stream (called by forward_features once the image stages are
        queued on the main stream); the main stream waits for it."""
        side, main = self._side_stream, torch.cuda.current_stream(self.device)
        with torch.cuda.stream(side):
            volume = self.model.lidar_volume(points, ref)
        main.wait_stream(side)
        volume.record_stream(main)
        return volume

    # ------------------------------------------------------------------ predict
    def predict(self, frame_set: FrameSet) -> Prediction:
        """Occupancy for one FrameSet. timings (ms): preprocess, postprocess, total, and with stage
        timings on: backbone, fusion, lift, lidar_encoder, encoder_3d, head."""
        t_start = time.perf_counter()
        if self._reset_pending:
            self._features, self._reset_pending = {}, False
        timings: dict[str, float] = {}
        ready = None
        if self._side_stream is not None:  # the side stream's work may start once the main stream's earlier work is done
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
        batch, frames, frame_imgs = self._camera_batch(frame_set, skip_cached=True)
        preprocess_s = time.perf_counter() - t_start
        dev = self.device
        autocast = torch.autocast("cuda", dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32") \
            if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
        with self.model.record_stages(self.stage_timings) as stage_ms, torch.inference_mode(), autocast, \
                sparse_conv_algorithm(self.sparse_conv):
            if stage_ms is not None:
                stage_ms["backbone"] = 0.0  # stays 0 when every frame's features come from the cache
            first: dict[int, int] = {}  # CameraFrame id -> its first time step
            for t, frame in enumerate(frames):
                first.setdefault(id(frame), t)
            computed: dict[int, torch.Tensor] = {}  # CameraFrame id -> features, within this call
            # cached frames first: encoding a new frame may evict the oldest stamps from the cache;
            # on CUDA the backbone's kernels are queued here and the host prepares the LiDAR input
            # below while they run
            for t in sorted(first.values(), key=lambda t: frame_imgs[t] is not None):
                computed[id(frames[t])] = self._frame_features(frame_imgs[t], int(frames[t].stamp_ns))
            feats = [computed[id(frame)] for frame in frames]
            t_lidar = time.perf_counter()
            batch.update(self._lidar_batch(frame_set, batch))
            self.model.check_batch(batch)  # on the host copies: no device synchronisation
            lift_keys = self.model.lift_keys(batch)  # likewise
            if ready is not None:
                self._plan_lifts_on_side_stream(batch, lift_keys, ready)
            # the points stay on the host here: the LiDAR encoder uploads them on its own stream
            batch = {k: v if k in ("points", "imgs") else upload(v, dev)
                     for k, v in batch.items()}  # images went to the device per frame, only when encoded
            preprocess_s += time.perf_counter() - t_lidar
            out = self.model.forward_features(batch, feats, lift_keys,
                                              None if ready is None else self._lidar_volume_on_side_stream)
            t_post = time.perf_counter()
            logits = out["occ_logits"][0].float()  # (X, Y, Z, classes)
            top, labels = logits.max(dim=-1)
            conf = torch.exp(logits - top.unsqueeze(-1)).sum(dim=-1).reciprocal_()  # = max softmax
            conf_u8 = (conf * 255.0).round_().to(torch.uint8)
            labels_np, conf_np = torch.stack([labels.to(torch.uint8), conf_u8]).cpu().numpy()  # one copy, one sync
        timings.update(stage_ms or {})
        timings["preprocess"] = preprocess_s * 1e3
        timings["postprocess"] = (time.perf_counter() - t_post) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return Prediction(labels_np, conf_np, timings, int(frame_set.stamp_ns))

"""The occupancy pipeline without a ROS graph: messages in, serialized output messages out.

One object holds the TF buffer, the LiDAR-anchored synchronizer, the frame assembler, the
predictor and the output encoders. The live node (`node.py`) feeds it from subscriptions and runs
`infer` on a worker thread; `fusionocc-replay` feeds it from a bag. Both therefore take the same
decisions for the same messages. Bad input never raises out of here: every rejected message or
frame is counted in `drops` under a short reason and reported once through `on_problem`.
"""
from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Collection, Protocol, Sequence

import numpy as np

from fusionocc_core.config import Config
from fusionocc_core.frame import FrameSet
from fusionocc_ros.assembler import AssemblyError, FrameAssembler
from fusionocc_ros.conversions import ConversionError, header_stamp_ns
from fusionocc_ros.encoders import Drawn, MarkerArrayEncoder, PointCloudEncoder, VoxelGridEncoder, occupied_voxels
from fusionocc_ros.gpu_decode import cuda_jpeg_decoder
from fusionocc_ros.params import OUTPUTS, PipelineSettings
from fusionocc_ros.sync import LidarAnchoredSync, SyncedSet
from fusionocc_ros.tf_buffer import TfBuffer

class PredictorLike(Protocol):
    def predict(self, frame_set: FrameSet) -> Any: ...


RECEIPTS_KEPT = 64  # receipt times remembered for sweeps not inferred yet


def freeze_startup_objects() -> int:
    """Move every object alive after start-up (model, modules, imports: ~190k) to the garbage
    collector's permanent generation and return how many: later full collections walk only newer
    objects (56 -> 9 ms per full collection, tiny preset on dev-2c; BENCHMARKS.md), a pause that
    otherwise lands in the middle of a frame now and then."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@dataclass
class PipelineResult:
    """One inferred frame: labels (X, Y, Z) uint8 and the CDR bytes of each output encoded for it
    (the enabled ones `infer` was asked for)."""

    stamp_ns: int
    labels: np.ndarray
    confidence: np.ndarray | None
    messages: dict[str, bytes]
    timings_ms: dict[str, float] = field(default_factory=dict)
    received_s: float | None = None  # when its LiDAR message arrived (add_lidar's received_s)


class OccupancyPipeline:
    """Sync + TF + assembly + inference + encoding (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        predictor: PredictorLike,
        settings: PipelineSettings,
        on_problem: Callable[[str, str], None] | None = None,
        gpu_jpeg: bool = True,
    ):
        """gpu_jpeg: decode JPEG sets with nvJPEG when the predictor runs on CUDA and torchvision is
        installed (False: always OpenCV on CPU threads)."""
        unknown = sorted(set(settings.outputs) - set(OUTPUTS))
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; choose from {list(OUTPUTS)}")
        self.cfg = cfg
        self.predictor = predictor
        self.settings = settings
        self.camera_names = tuple(cfg.data.cameras)
        self.on_problem = on_problem
        self.drops: Counter[str] = Counter()
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self.tf = TfBuffer(cache_time_s=settings.tf_cache_s)
        self._received: dict[int, float] = {}  # LiDAR stamp -> receipt time, for the newest sweeps
        self._received_lock = threading.Lock()  # add_lidar (callbacks) and infer (worker) both use it
        self.sync = LidarAnchoredSync(
            self.camera_names,
            window_before_s=settings.sync_window_before_s,
            window_after_s=settings.sync_window_after_s,
            max_wait_s=settings.sync_max_wait_s,
            camera_buffer_size=settings.camera_buffer_size,
            on_drop=lambda reason, stamp, detail: self._problem(f"sync_{reason}", detail),
        )
        device = getattr(predictor, "device", None)
        decode_jpegs = cuda_jpeg_decoder(device) if gpu_jpeg and device is not None else None
        self.jpeg_decoding = "GPU (nvJPEG)" if decode_jpegs is not None else "CPU (OpenCV threads)"
        self.assembler = FrameAssembler(
            cfg, self.tf, ego_frame=settings.ego_frame, fixed_frame=settings.fixed_frame or None,
            history_spacing_s=settings.history_spacing_s, history_tolerance_s=settings.history_tolerance_s,
            decode_jpegs=decode_jpegs,
        )
        self.rebuild_encoders()
        self._encode_pool: ThreadPoolExecutor | None = None  # created when two big outputs are wanted
        self.frames_in = 0
        self._held: list[SyncedSet] = []  # sets waiting for calibration / TF, oldest first
        self._clock = 0  # newest LiDAR stamp of a synchronized set
        self.frames_out = 0

    def rebuild_encoders(self) -> None:
        """(Re)create the output encoders from `settings` (after a runtime parameter change)."""
        s = self.settings
        grid = self.cfg.grid
        classes = s.class_filter or None
        self.encoders = {
            "markers": MarkerArrayEncoder(s.ego_frame, classes, s.marker_alpha, s.marker_lifetime_s, grid=grid),
            "voxels": VoxelGridEncoder(s.ego_frame, grid),
            "cloud": PointCloudEncoder(s.ego_frame, classes, grid),
        }

    # --- problems are counted, and logged once per reason ---------------------------------------

    def _problem(self, reason: str, detail: str) -> None:
        with self._lock:
            self.drops[reason] += 1
            first = reason not in self._reported
            self._reported.add(reason)
        if first and self.on_problem is not None:
            self.on_problem(reason, detail)

    # --- inputs (cheap: no decoding here) ---------------------------------------------------------

    def add_tf(self, msg: Any, static: bool = False) -> list[SyncedSet]:
        """A tf2_msgs/TFMessage from /tf or /tf_static; may release the set held at start-up."""
        for kind, reason in self.tf.add_tf_message(msg, static=static):
            self._problem(f"tf_{kind}", reason)  # tf2's reasons: old_data, repeated_data, ...
        return self._release_held()

    def time_jumped(self, detail: str) -> None:
        """The clock jumped back (the node's clock jump callback): clear TF histories as tf2_ros does,
        and forget the sets held on the old timeline."""
        self.tf.clear_dynamic()
        self._forget_timeline()
        self._problem("tf_time_jump", f"{detail}: TF history cleared")

    def _forget_timeline(self) -> None:
        """Time went back: drop what belongs to the old timeline: the sets held for TF and the
        predictor's cached features (keyed by stamp: the cache kept the old, newer stamps and evicted
        every new one). The assembler forgets its own history at the jump; its decode caches only
        hit for the very same message object."""
        self._held.clear()
        self._clock = 0  # the old timeline's newest set would expire every set held on the new one
        reset = getattr(self.predictor, "reset", None)
        if reset is not None:
            reset()

    def add_camera_info(self, camera: str, msg: Any) -> list[SyncedSet]:
        """A CameraInfo; may release the set held at start-up."""
        try:
            self.assembler.set_camera_info(camera, msg)
        except (ConversionError, ValueError, KeyError) as exc:
            self._problem("bad_camera_info", f"{camera}: {exc}")
        return self._release_held()

    def add_camera(self, camera: str, msg: Any) -> list[SyncedSet]:
        """An Image/CompressedImage; returns the synchronized sets this completes (oldest first)."""
        try:
            stamp = header_stamp_ns(msg)
        except ConversionError as exc:
            self._problem("bad_image", f"{camera}: {exc}")
            return []
        return self._observe(self.sync.add_camera(camera, stamp, msg))

    def add_lidar(self, msg: Any, received_s: float | None = None) -> list[SyncedSet]:
        """A PointCloud2 sweep; returns the synchronized sets this completes (oldest first).
        `received_s` (any monotonic clock) comes back as its result's `received_s`."""
        try:
            stamp = header_stamp_ns(msg)
        except ConversionError as exc:
            self._problem("bad_cloud", str(exc))
            return []
        if received_s is not None:
            with self._received_lock:
                self._received[stamp] = received_s
                while len(self._received) > RECEIPTS_KEPT:
                    self._received.pop(next(iter(self._received)))
        if self.tf.observe_time(stamp):  # replay has no clock: the sensor stamps jumped back
            self._forget_timeline()
            self._problem("tf_time_jump", f"LiDAR stamps jumped back to {stamp / 1e9:.3f} s: TF history cleared")
        sets = self.sync.add_lidar(stamp, msg)
        self.assembler.observe_lidar(stamp, msg)
        return self._observe(sets)

    def flush(self) -> list[SyncedSet]:
        """Decide every pending sweep now (end of a bag)."""
        return self._observe(self.sync.flush())

    def _observe(self, sets: list[SyncedSet]) -> list[SyncedSet]:
        """Remember every set as history; pass a set on once its calibration and TF have arrived.

        Like tf2's MessageFilter: a set whose transforms are not in the buffer yet (the start-up
        gate, or /tf arriving after the images it belongs to) is held and released by the
        CameraInfo/TF message that completes it, so arrival order across topics never decides
        whether a frame is inferred. Sets held longer than `tf_wait_s` of stream time are dropped
        (`tf_timeout`): the wait is bounded in seconds, so a /tf that lags the sensors by less than
        `tf_wait_s` loses no set, whatever the sensor rate."""
        for s in sets:  # every set is history, even those the worker skips (latest wins)
            self.assembler.observe_set(s)
            self.frames_in += 1
            self._held.append(s)
            self._clock = max(self._clock, s.lidar_stamp_ns)
        return self._release_held()

    def _release_held(self) -> list[SyncedSet]:
        """The held sets that are ready now (oldest first); expire the ones waited on too long."""
        ready: list[SyncedSet] = []
        keep: list[SyncedSet] = []
        for s in self._held:
            if self._ready(s):
                ready.append(s)
            elif self._clock - s.lidar_stamp_ns > self.settings.tf_wait_s * 1e9:
                self._problem("tf_timeout", f"no calibration/TF for the set at {s.lidar_stamp_ns / 1e9:.3f} s: "
                              + "; ".join(self.waiting_for() or [f"'{self.settings.fixed_frame}' -> "
                                                                 f"'{self.settings.ego_frame}' at its camera stamps"]))
            else:
                keep.append(s)
        self._held = keep
        return ready

    def _ready(self, s: SyncedSet) -> bool:
        if self.waiting_for():
            return False
        fixed, ego = self.settings.fixed_frame, self.settings.ego_frame
        if not fixed:
            return True
        return all(self.tf.can_transform(fixed, ego, t) for t in (s.lidar_stamp_ns, *s.camera_stamps_ns))

    def waiting_for(self) -> list[str]:
        """What the start-up gate still waits for (empty when inference can start)."""
        missing = [f"CameraInfo of {c}" for c in self.assembler.missing_intrinsics()]
        if self.settings.fixed_frame and self.settings.fixed_frame not in self.tf.frames:
            missing.append(f"TF frame '{self.settings.fixed_frame}'")
        return missing

    # --- inference --------------------------------------------------------------------------------

    def infer(self, synced: SyncedSet, outputs: Collection[str] | None = None) -> PipelineResult | None:
        """Assemble, predict and encode one set; None (counted) if the frame is unusable. `outputs`:
        the enabled outputs to encode this time (the node leaves out those nobody subscribes to);
        None = every enabled output."""
        t0 = time.perf_counter()
        try:
            frame_set = self.assembler.build(synced)
        except AssemblyError as exc:
            self._problem(f"frame_{exc.kind}", str(exc))
            return None
        t1 = time.perf_counter()
        try:
            prediction = self.predictor.predict(frame_set)
        except (ValueError, RuntimeError) as exc:  # bad shapes, NaN input, CUDA OOM...
            self._problem("inference_error", f"{type(exc).__name__}: {exc}")
            return None
        t2 = time.perf_counter()
        labels = np.ascontiguousarray(prediction.labels, dtype=np.uint8)
        confidence = getattr(prediction, "confidence", None)
        stamp = synced.lidar_stamp_ns
        wanted = self.settings.outputs if outputs is None else [n for n in self.settings.outputs if n in outputs]
        messages = self.encode(labels, confidence, stamp, wanted)
        t3 = time.perf_counter()
        timings = {f"model_{k}": float(v) for k, v in (getattr(prediction, "timings", None) or {}).items()}
        timings.update(assemble=(t1 - t0) * 1e3, predict=(t2 - t1) * 1e3, encode=(t3 - t2) * 1e3)
        self.frames_out += 1
        with self._received_lock:
            received = self._received.pop(stamp, None)
        return PipelineResult(stamp, labels, confidence, messages, timings, received)

    def encode(self, labels: np.ndarray, confidence: np.ndarray | None, stamp: int, wanted: Sequence[str]) -> dict[str, bytes]:
        """CDR bytes of each wanted output (names of OUTPUTS) for one prediction, in `wanted` order.
        The drawn voxels are found once for the markers and the cloud (same class filter); the two
        big messages (up to 15 MB each at full occupancy) are built at the same time on two threads:
        numpy's gathers release the GIL."""
        encoders = self.encoders  # a runtime parameter change swaps the dict, never edits it
        drawn: dict[bytes, Drawn] = {}
        jobs: dict[str, Callable[[], bytes]] = {}
        for name in wanted:
            encoder = encoders[name]
            if name == "voxels":
                conf = confidence if self.settings.publish_confidence else None
                jobs[name] = partial(encoder.encode, labels, stamp, conf)
            else:
                key = encoder.mask.tobytes()
                if key not in drawn:
                    drawn[key] = occupied_voxels(encoder.grid.check_labels(labels), encoder.mask)
                jobs[name] = partial(encoder.encode, labels, stamp, drawn[key])
        on_pool = [n for n in jobs if n != "voxels"][1:]  # every big message but one: the other runs here
        if on_pool and self._encode_pool is None:
            self._encode_pool = ThreadPoolExecutor(len(OUTPUTS) - 1, thread_name_prefix="encode")
        futures = {n: self._encode_pool.submit(jobs[n]) for n in on_pool}
        done = {n: job() for n, job in jobs.items() if n not in futures}
        done.update((n, f.result()) for n, f in futures.items())
        return {n: done[n] for n in jobs}

    def counters(self) -> dict[str, int]:
        """Drop counters of every stage (sync reasons included) for diagnostics."""
        out = {f"sync_{k}": int(v) for k, v in self.sync.drops.items()}
        with self._lock:
            out.update({k: int(v) for k, v in self.drops.items() if not k.startswith("sync_")})
        return out


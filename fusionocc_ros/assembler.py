"""Frame assembler: synchronized sensor messages + TF + intrinsics -> fusionocc_core FrameSet.

Contract: `build(synced)` turns one SyncedSet (payloads: ROS Image/CompressedImage and
PointCloud2 messages, or already decoded CameraImage/LidarSweep) into a FrameSet in the frames
of `fusionocc_core.frame` (BEVDet4D's convention), all through `fixed_frame` (map):
  * cameras: the six current images (RGB, source size), K from CameraInfo, and
    sensor2ego = camera (optical) at its own stamp -> ego (`ego_frame`, base_link) at t_key,
    the stamp of the set's first camera (cfg.data.cameras[0], CAM_FRONT_LEFT);
  * previous: up to cfg.data.num_adj_img_frames earlier synchronized sets, newest first, the
    k-th nearest to t - k * spacing (within tolerance), their cameras also expressed in ego at t_key;
  * points: the current sweep + up to cfg.data.num_lidar_sweeps - 1 earlier sweeps at the same
    spacing, each motion-compensated into ego at the LiDAR stamp t (the output's frame);
    key_points: the current sweep alone; keyego2lidarego = ego at t_key -> ego at t.
History is taken from what `observe_lidar` / `observe_set` (and `build`) have seen; at start-up
`previous` is empty and `points` holds only the current sweep; a stamp more than one spacing
older than the newest one (time jumped back, e.g. a looping bag) restarts the history. A history entry stops at the
first gap (or a missing transform). Messages are decoded lazily and cached, so the node can
observe every message cheaply and decode only the sets it infers on. Failures for the current
frame raise AssemblyError(kind, reason) with kind in ASSEMBLY_ERROR_KINDS.
"""
from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fusionocc_core.config import Config
from fusionocc_core.data.transforms import image_hw
from fusionocc_core.frame import CameraFrame, FrameSet
from fusionocc_ros.conversions import ConversionError, camera_info_to_k, header_stamp_ns, image_msg_to_rgb, pointcloud2_to_xyzir
from fusionocc_ros.rigid import merge_clouds
from fusionocc_ros.sync import SyncedSet
from fusionocc_ros.tf_buffer import TfBuffer, TfError

if TYPE_CHECKING:
    import torch

    from fusionocc_ros.gpu_decode import BatchDecoder

ASSEMBLY_ERROR_KINDS = ("missing_intrinsics", "missing_tf", "bad_input", "image_size")


class AssemblyError(RuntimeError):
    """The current frame cannot be built; `kind` is a short counter key, str(exc) the reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass
class LidarSweep:
    """One decoded sweep in its sensor frame."""

    stamp_ns: int
    frame_id: str
    points: np.ndarray  # (P, 5) float32 x y z intensity ring


@dataclass
class CameraImage:
    """One decoded camera image."""

    stamp_ns: int
    frame_id: str  # optical frame
    image: np.ndarray | torch.Tensor  # (H, W, 3) uint8 RGB, or (3, H, W) uint8 RGB decoded on the GPU


def decode_lidar(payload: Any) -> LidarSweep:
    """PointCloud2 message (or LidarSweep) -> LidarSweep; ConversionError on bad input."""
    if isinstance(payload, LidarSweep):
        return payload
    frame = str(getattr(getattr(payload, "header", None), "frame_id", "")).lstrip("/")
    if not frame:
        raise ConversionError("PointCloud2.header.frame_id is empty")
    return LidarSweep(header_stamp_ns(payload), frame, pointcloud2_to_xyzir(payload))


def camera_header(payload: Any) -> tuple[int, str]:
    """(stamp ns, optical frame) of an Image/CompressedImage message; ConversionError on bad input."""
    frame = str(getattr(getattr(payload, "header", None), "frame_id", "")).lstrip("/")
    if not frame:
        raise ConversionError("image header.frame_id is empty")
    return header_stamp_ns(payload), frame


def decode_camera(payload: Any) -> CameraImage:
    """Image/CompressedImage message (or CameraImage) -> CameraImage; ConversionError on bad input."""
    if isinstance(payload, CameraImage):
        return payload
    stamp, frame = camera_header(payload)
    return CameraImage(stamp, frame, image_msg_to_rgb(payload))


class _Lru:
    """A tiny LRU cache of decoded payloads keyed by (source, stamp); a hit also needs the very
    same payload object (a looping bag brings the same stamps back with new messages)."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[tuple[str, int], tuple[Any, Any]] = OrderedDict()

    def contains(self, key: tuple[str, int], payload: Any) -> bool:
        hit = self._data.get(key)
        return hit is not None and hit[0] is payload

    def put(self, key: tuple[str, int], payload: Any, value: Any) -> None:
        self._data[key] = (payload, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def get(self, key: tuple[str, int], payload: Any, decode: Callable[[Any], Any]) -> Any:
        hit = self._data.get(key)
        if hit is not None and hit[0] is payload:
            self._data.move_to_end(key)
            return hit[1]
        value = decode(payload)
        self.put(key, payload, value)
        return value

    def clear(self) -> None:
        self._data.clear()


class FrameAssembler:
    """Keeps the temporal history the model needs and builds FrameSets (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        tf: TfBuffer,
        ego_frame: str = "base_link",
        fixed_frame: str | None = "map",
        history_spacing_s: float = 0.5,
        history_tolerance_s: float = 0.25,
        decode_lidar: Callable[[Any], LidarSweep] = decode_lidar,
        decode_camera: Callable[[Any], CameraImage] = decode_camera,
        decode_jpegs: BatchDecoder | None = None,
    ):
        if not history_spacing_s > 0 or not 0 <= history_tolerance_s < history_spacing_s:
            raise ValueError(
                f"need history_spacing_s > 0 and 0 <= history_tolerance_s < spacing, got {history_spacing_s}, {history_tolerance_s}"
            )
        self.cfg = cfg
        self.tf = tf
        self.camera_names = tuple(cfg.data.cameras)
        self.num_prev_images = int(cfg.data.num_adj_img_frames)
        self.num_prev_sweeps = max(int(cfg.data.num_lidar_sweeps) - 1, 0)
        self.ego_frame = ego_frame
        self.fixed_frame = fixed_frame
        self.spacing_ns = int(round(history_spacing_s * 1e9))
        self.tolerance_ns = int(round(history_tolerance_s * 1e9))
        self._decode_lidar = decode_lidar
        self._decode_camera = decode_camera
        self._decode_jpegs = decode_jpegs  # a set's JPEGs in one batch (nvJPEG), else the CPU pool
        self._intrinsics: dict[str, tuple[np.ndarray, tuple[int, int] | None]] = {}
        self._lidar_stamps: list[int] = []
        self._lidar_payloads: list[Any] = []
        self._set_stamps: list[int] = []
        self._sets: list[SyncedSet] = []
        n_cams = len(self.camera_names)
        self._image_cache = _Lru(n_cams * (self.num_prev_images + 2))
        self._sweep_cache = _Lru(self.num_prev_sweeps + 2)
        self._lock = threading.Lock()  # guards the history lists (short critical sections)
        self._build_lock = threading.Lock()  # one build at a time (decode caches)
        # JPEG decoding releases the GIL: a set's images decode in parallel (55 -> ~12 ms for six
        # 1600x900 JPEGs on a 16-core host); created on first use
        self._decode_pool: ThreadPoolExecutor | None = None
        self.last_history = (0, 0)  # (previous image frames, previous sweeps) of the last build

    # --- calibration --------------------------------------------------------------------------

    def set_intrinsics(self, camera: str, K: np.ndarray, image_size: tuple[int, int] | None = None) -> None:
        """K (3, 3) of `camera`'s source images; image_size (H, W) if known (checked at build)."""
        if camera not in self.camera_names:
            raise KeyError(f"unknown camera '{camera}' (expected one of {', '.join(self.camera_names)})")
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all():
            raise ValueError(f"intrinsics of {camera} must be a finite (3, 3) matrix")
        self._intrinsics[camera] = (K.copy(), None if image_size is None else (int(image_size[0]), int(image_size[1])))

    def set_camera_info(self, camera: str, msg: Any) -> None:
        """Intrinsics and image size from a CameraInfo message (ConversionError if malformed)."""
        self.set_intrinsics(camera, camera_info_to_k(msg), (int(msg.height), int(msg.width)))

    def missing_intrinsics(self) -> list[str]:
        """Cameras whose CameraInfo has not arrived yet (the node's start-up gate)."""
        return [c for c in self.camera_names if c not in self._intrinsics]

    # --- history ------------------------------------------------------------------------------

    def _insert(self, stamps: list[int], items: list[Any], stamp: int, item: Any, horizon_ns: int) -> None:
        if stamps and stamp < stamps[-1] - self.spacing_ns:  # time jumped back (looping bag): start again
            stamps.clear()
            items.clear()
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            items[i] = item  # the same stamp again: the newest message wins
            return
        stamps.insert(i, stamp)
        items.insert(i, item)
        cut = bisect.bisect_left(stamps, stamps[-1] - horizon_ns)
        if cut:
            del stamps[:cut], items[:cut]

    def observe_lidar(self, stamp_ns: int, payload: Any) -> None:
        """Remember a sweep (raw message or LidarSweep) as a candidate previous sweep."""
        horizon = self.num_prev_sweeps * self.spacing_ns + self.tolerance_ns
        with self._lock:
            self._insert(self._lidar_stamps, self._lidar_payloads, int(stamp_ns), payload, horizon)

    def observe_set(self, synced: SyncedSet) -> None:
        """Remember a synchronized set as a candidate previous image frame (and its sweep)."""
        horizon = self.num_prev_images * self.spacing_ns + self.tolerance_ns
        with self._lock:
            self._insert(self._set_stamps, self._sets, synced.lidar_stamp_ns, synced, horizon)
        self.observe_lidar(synced.lidar_stamp_ns, synced.lidar)

    def _pick(self, stamps: list[int], t: int, count: int) -> list[int]:
        """Indices of the history entries nearest t - k*spacing, k = 1..count, newest first; stops at a gap."""
        picks: list[int] = []
        upper = len(stamps)  # only entries older than the previous pick
        for k in range(1, count + 1):
            target = t - k * self.spacing_ns
            j = bisect.bisect_left(stamps, target, 0, upper)
            best = None
            for cand in (j - 1, j):
                if 0 <= cand < upper and stamps[cand] < t and abs(stamps[cand] - target) <= self.tolerance_ns:
                    if best is None or abs(stamps[cand] - target) < abs(stamps[best] - target):
                        best = cand
            if best is None:
                break
            picks.append(best)
            upper = best
        return picks

    # --- building -----------------------------------------------------------------------------

    def _to_ego(self, frame: str, sensor_ns: int, ref_ns: int) -> np.ndarray:
        """T_ego(ref)_sensor(sensor_ns); TfError if unavailable."""
        if self.fixed_frame is None:
            return self.tf.lookup(self.ego_frame, frame, sensor_ns)
        return self.tf.lookup_full(self.ego_frame, ref_ns, frame, sensor_ns, self.fixed_frame)

    def _sweep(self, payload: Any, stamp: int) -> LidarSweep:
        return self._sweep_cache.get(("lidar", stamp), payload, self._decode_lidar)

    def _prefetch_images(self, synced: SyncedSet) -> None:
        """Decode a set's images that are not cached yet, in parallel, into the image cache; a
        failure is left for `_cameras` to raise (it decodes that image again, serially)."""
        todo = [((name, stamp), payload) for name, stamp, payload in
                zip(self.camera_names, synced.camera_stamps_ns, synced.cameras)
                if not self._image_cache.contains((name, stamp), payload)]
        if self._decode_jpegs is not None and todo and self._prefetch_on_gpu(todo):
            return
        if len(todo) < 2:
            return
        if self._decode_pool is None:
            self._decode_pool = ThreadPoolExecutor(max(1, min(len(self.camera_names), os.cpu_count() or 1)),
                                                   thread_name_prefix="decode")
        futures = [(key, payload, self._decode_pool.submit(self._decode_camera, payload)) for key, payload in todo]
        for key, payload, future in futures:
            if future.exception() is None:
                self._image_cache.put(key, payload, future.result())

    def _prefetch_on_gpu(self, todo: list[tuple[tuple[str, int], Any]]) -> bool:
        """Decode the payloads in one batch on the GPU into the image cache; False (nothing cached)
        when the batch decoder declines the set or a header is bad."""
        try:
            headers = [camera_header(p) for _, p in todo]
        except ConversionError:
            return False  # the CPU path raises it for the set
        images = self._decode_jpegs([p for _, p in todo])
        if images is None:
            return False
        for (key, payload), (stamp, frame), image in zip(todo, headers, images):
            self._image_cache.put(key, payload, CameraImage(stamp, frame, image))
        return True

    def _cameras(self, synced: SyncedSet, t: int) -> CameraFrame:
        """Decode a set's images and express its cameras in ego at t (the key camera stamp)."""
        images, intrinsics, sensor2ego = [], [], []
        for name, stamp, payload in zip(self.camera_names, synced.camera_stamps_ns, synced.cameras):
            cam = self._image_cache.get((name, stamp), payload, self._decode_camera)
            K, size = self._intrinsics[name]
            hw = image_hw(cam.image)
            if size is not None and hw != size:
                raise AssemblyError("image_size", f"{name}: image {hw} differs from CameraInfo size {size}")
            images.append(cam.image)
            intrinsics.append(K)
            sensor2ego.append(self._to_ego(cam.frame_id, cam.stamp_ns, t))
        n = len(synced.camera_stamps_ns)
        mean_stamp = (sum(synced.camera_stamps_ns) + n // 2) // n  # integer maths: ns stamps exceed float precision
        return CameraFrame(images, np.stack(intrinsics), np.stack(sensor2ego), stamp_ns=mean_stamp)

    def build(self, synced: SyncedSet) -> FrameSet:
        """The FrameSet for one synchronized set (also remembered as history)."""
        if len(synced.cameras) != len(self.camera_names):
            raise AssemblyError("bad_input", f"set has {len(synced.cameras)} cameras, expected {len(self.camera_names)}")
        missing = self.missing_intrinsics()
        if missing:
            raise AssemblyError("missing_intrinsics", f"no CameraInfo yet for {', '.join(missing)}")
        self.observe_set(synced)
        t = synced.lidar_stamp_ns
        t_key = int(synced.camera_stamps_ns[0])  # the key ego frame's stamp: the first camera's
        with self._lock:  # choose the history; decoding happens outside this lock
            prev_sets = [self._sets[i] for i in self._pick(self._set_stamps, t, self.num_prev_images)]
            prev_sweeps = [(self._lidar_stamps[i], self._lidar_payloads[i]) for i in self._pick(self._lidar_stamps, t, self.num_prev_sweeps)]
        with self._build_lock:
            self._prefetch_images(synced)
            try:
                current = self._cameras(synced, t_key)
                key = self._sweep(synced.lidar, t)
                clouds = [(self._to_ego(key.frame_id, key.stamp_ns, t), key.points)]  # (sensor -> ego at t, points)
                keyego2lidarego = self._to_ego(self.ego_frame, t_key, t)
            except ConversionError as exc:
                raise AssemblyError("bad_input", str(exc)) from None
            except TfError as exc:
                raise AssemblyError("missing_tf", str(exc)) from None

            previous: list[CameraFrame] = []
            for prev in prev_sets:
                try:
                    previous.append(self._cameras(prev, t_key))
                except (ConversionError, TfError, AssemblyError):
                    break  # history ends at the first unusable frame
            for stamp, payload in prev_sweeps:
                try:
                    sweep = self._sweep(payload, stamp)
                    clouds.append((self._to_ego(sweep.frame_id, sweep.stamp_ns, t), sweep.points))
                except (ConversionError, TfError):
                    break
            self.last_history = (len(previous), len(clouds) - 1)
        points = merge_clouds(clouds)  # (P, 5) x y z intensity ring in ego at t, the key sweep first
        key_points = points[: len(key.points)]
        return FrameSet(stamp_ns=t, cameras=current, previous=previous, points=points, key_points=key_points,
                        keyego2lidarego=keyego2lidarego)

"""fusionocc-convert: nuScenes (or the synthetic nuScenes-format world) -> one rosbag2 per scene.

Each bag is written under a temporary name next to its destination and renamed into place only
when complete, so an interrupted or failed run never leaves a half-written OUT/<scene>; a killed
run's hidden `.<scene>.partial-<pid>-...` folders are removed by the next run. Scene names come
from scene.json and must be plain file names (no separators, not '.'/'..').
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import rosbags.rosbag2.writer as rosbags_writer
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

from fusionocc_core.classes import CAMERA_NAMES, LIDAR_NAME
from fusionocc_core.cli import ToolError, ToolParser, UsageError, tool_main
from fusionocc_core.safe_paths import check_name, child_path
from fusionocc_core.tools.atomic import OutputExistsError, exists_message, install_output, remove_stale_partials
from fusionocc_ros import topics
from fusionocc_ros.encoders import VoxelGridEncoder
from rosbag_tools import messages as m
from rosbag_tools.plan import ScenePlan, load_nuscenes, plan_scene, select_scenes
from rosbag_tools.qos import offered_qos
from rosbag_tools.typestore import VOXEL_GRID_TYPE, get_store

PROG = "fusionocc-convert"
METADATA_VERSION = 8  # Humble reads v8 (QoS as a YAML string of ints); Jazzy reads v8 and v9
TOPIC_TF = topics.TF  # every topic name comes from the one topic table (fusionocc_ros.topics)
TOPIC_TF_STATIC = topics.TF_STATIC
TOPIC_LIDAR = topics.LIDAR
TOPIC_GT = topics.GROUND_TRUTH
Progress = Callable[[int, int], None]  # (messages written, bytes of payload) since the last call


_dump_qos_v8 = rosbags_writer.dump_qos_v8


@lru_cache(maxsize=64)
def _dump_qos_v8_cached(qos: tuple) -> str:
    return _dump_qos_v8(list(qos))


def _dump_qos_v8_memo(qos: Sequence) -> str:
    """rosbags' v8 QoS YAML string, memoized: a pure function of the profiles, and a bag repeats
    the same three (rosbags calls it twice per topic, ~10 ms each with pure-Python ruamel)."""
    return _dump_qos_v8_cached(tuple(qos))


class _LibYaml:
    """Stand-in for the ruamel `YAML(typ='safe')` dumper rosbags' writer builds metadata.yaml with:
    the same data emitted by libyaml (C) instead of pure-Python ruamel (~0.1 s per bag here)."""

    def __init__(self, typ: str | None = None, **_: Any) -> None:
        self.default_flow_style = False

    def dump(self, data: Any, stream: Any) -> None:
        yaml.dump(data, stream, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                  default_flow_style=self.default_flow_style, sort_keys=False)


@contextmanager
def _fast_rosbags_yaml() -> Iterator[None]:
    """Within the block, rosbags' writer dumps its YAML through libyaml and the QoS memo."""
    saved = rosbags_writer.YAML, rosbags_writer.dump_qos_v8
    rosbags_writer.YAML, rosbags_writer.dump_qos_v8 = _LibYaml, _dump_qos_v8_memo
    try:
        yield
    finally:
        rosbags_writer.YAML, rosbags_writer.dump_qos_v8 = saved


class ConvertError(ToolError):
    """A one-line, user-facing reason why a conversion cannot proceed."""


def image_topic(channel: str) -> str:
    """CompressedImage topic of a camera channel, e.g. /cam_front/image_rect/compressed (image_transport)."""
    return topics.image_topic(channel)


def info_topic(channel: str) -> str:
    """CameraInfo topic of a camera channel, e.g. /cam_front/camera_info."""
    return topics.camera_info_topic(channel)


def bag_topics(plan: ScenePlan) -> dict[str, str]:
    """Topic -> message type of every connection the scene's bag has, in creation order."""
    topics = {TOPIC_TF_STATIC: "tf2_msgs/msg/TFMessage", TOPIC_TF: "tf2_msgs/msg/TFMessage"}
    for cam in CAMERA_NAMES:
        topics[image_topic(cam)] = "sensor_msgs/msg/CompressedImage"
        topics[info_topic(cam)] = "sensor_msgs/msg/CameraInfo"
    topics[TOPIC_LIDAR] = "sensor_msgs/msg/PointCloud2"
    if plan.gts:
        topics[TOPIC_GT] = VOXEL_GRID_TYPE
    return topics


@dataclass(frozen=True)
class Event:
    """One message to write: sorted by (stamp, rank) so that TF precedes the data it serves."""

    stamp_ns: int
    rank: int  # 0 tf_static, 1 tf, 2 camera (info + image), 4 lidar, 5 gt
    kind: str
    index: int  # into plan.readings / plan.gts


def scene_events(plan: ScenePlan) -> list[Event]:
    """Every message of the scene's bag in write (time) order."""
    events: list[Event] = []
    first = min([r.stamp_ns for r in plan.readings] + [g.stamp_ns for g in plan.gts])
    events.append(Event(first, 0, "tf_static", 0))
    seen_stamps: set[int] = set()
    for i, r in enumerate(plan.readings):
        if r.stamp_ns not in seen_stamps:  # one map -> base_link per distinct sample_data stamp
            seen_stamps.add(r.stamp_ns)
            events.append(Event(r.stamp_ns, 1, "tf", i))
        if r.channel == LIDAR_NAME:
            events.append(Event(r.stamp_ns, 4, "lidar", i))
        else:
            events.append(Event(r.stamp_ns, 2, "camera", i))  # CameraInfo + CompressedImage
    events += [Event(g.stamp_ns, 5, "gt", i) for i, g in enumerate(plan.gts)]
    events.sort(key=lambda e: (e.stamp_ns, e.rank, e.index))
    return events


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@lru_cache(maxsize=1)
def _gt_encoder() -> VoxelGridEncoder:
    """Ground truth goes through the node's own voxel-message encoder (one layout, one grid)."""
    return VoxelGridEncoder(frame_id=m.BASE_FRAME)


def scene_messages(plan: ScenePlan) -> Iterator[tuple[str, int, Any]]:
    """Yield (topic, stamp_ns, message) for the scene in time order, reading files lazily; a
    message is a rosbags object, or CDR bytes already (ground truth)."""
    for ev in scene_events(plan):
        if ev.kind == "tf_static":  # every base_link -> sensor in ONE latched message
            statics = [
                m.transform(ev.stamp_ns, m.BASE_FRAME, m.frame_id(c.channel), c.translation, c.rotation)
                for c in plan.calibrations.values()
            ]
            yield TOPIC_TF_STATIC, ev.stamp_ns, m.tf_message(statics)
            continue
        if ev.kind == "gt":
            gt = plan.gts[ev.index]
            yield TOPIC_GT, ev.stamp_ns, _gt_encoder().encode(m.load_gt_labels(gt.path), ev.stamp_ns)
            continue
        r = plan.readings[ev.index]
        frame = m.frame_id(r.channel)
        if ev.kind == "tf":
            tf = m.transform(r.stamp_ns, m.MAP_FRAME, m.BASE_FRAME, r.ego_translation, r.ego_rotation)
            yield TOPIC_TF, r.stamp_ns, m.tf_message([tf])
        elif ev.kind == "lidar":
            yield TOPIC_LIDAR, r.stamp_ns, m.lidar_cloud(r.stamp_ns, frame, _read(r.path), r.path)
        else:  # camera: CameraInfo then CompressedImage, same stamp and frame
            jpeg = _read(r.path)
            height, width = m.jpeg_size(jpeg, r.path)
            intrinsic = plan.calibrations[r.channel].intrinsic
            yield info_topic(r.channel), r.stamp_ns, m.camera_info(r.stamp_ns, frame, intrinsic, width, height)
            yield image_topic(r.channel), r.stamp_ns, m.compressed_image(r.stamp_ns, frame, jpeg)


def count_messages(plan: ScenePlan) -> int:
    """Number of messages the scene's bag will hold."""
    return sum(2 if e.kind == "camera" else 1 for e in scene_events(plan))


def write_bag(plan: ScenePlan, bag_dir: Path, storage: str = "mcap", progress: Progress | None = None) -> int:
    """Write the scene's bag to `bag_dir` (must not exist); returns the number of messages."""
    store = get_store()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(bag_dir, version=METADATA_VERSION, storage_plugin=plugin)
    if plugin == StoragePlugin.MCAP:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)  # zstd chunks
    writer.set_custom_data("fusionocc.scene", plan.name)
    writer.set_custom_data("fusionocc.scene_token", plan.token)
    writer.set_custom_data("fusionocc.source", plan.source)
    writer.set_custom_data("fusionocc.sweeps", str(plan.sweeps).lower())
    count, pending_msgs, pending_bytes = 0, 0, 0
    with _fast_rosbags_yaml(), writer:
        conns = {
            topic: writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=offered_qos(topic))
            for topic, msgtype in bag_topics(plan).items()
        }
        types = {topic: conn.msgtype for topic, conn in conns.items()}
        for topic, stamp_ns, msg in scene_messages(plan):
            data = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, types[topic])
            writer.write(conns[topic], stamp_ns, data)
            count += 1
            pending_msgs += 1
            pending_bytes += len(data)
            if progress is not None and pending_msgs >= 32:
                progress(pending_msgs, pending_bytes)
                pending_msgs = pending_bytes = 0
    if progress is not None and pending_msgs:
        progress(pending_msgs, pending_bytes)
    return count


@dataclass(frozen=True)
class SceneResult:
    """What one converted scene produced."""

    name: str
    bag_dir: str
    messages: int
    keyframes: int
    bytes_written: int
    seconds: float


def dir_size(path: Path) -> int:
    """Total bytes of the regular files under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def partial_dir(out_root: Path, scene: str, tag: str) -> Path:
    """The temporary parent a scene's bag is written in before it is renamed to OUT/<scene>
    (`.<scene>.partial-<pid>-<ns>`: fusionocc_core.tools.atomic removes it once <pid> is gone)."""
    return out_root / f".{check_name(scene, 'scene name')}.partial-{tag}"


def convert_scene(
    plan: ScenePlan, out_root: Path, storage: str = "mcap", tag: str = "0", progress: Progress | None = None,
    overwrite: bool = False,
) -> SceneResult:
    """Write OUT/<scene> atomically: into a temporary directory, renamed when complete (replacing an
    existing OUT/<scene> only with `overwrite`)."""
    final = child_path(out_root, plan.name, "scene name")
    if final.exists() and not overwrite:
        raise OutputExistsError(exists_message(final))
    tmp_parent = partial_dir(out_root, plan.name, tag)
    t0 = time.perf_counter()
    try:
        tmp_parent.mkdir(parents=True)
        tmp_bag = tmp_parent / plan.name  # inner file names then match the final name
        n = write_bag(plan, tmp_bag, storage, progress)
        install_output(tmp_bag, final, overwrite)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return SceneResult(plan.name, str(final), n, plan.keyframes, dir_size(final), time.perf_counter() - t0)


# --- parallel driver ------------------------------------------------------------------------------

_progress_queue: Any = None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_init(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so the temporary bag is removed


def _worker_progress(n: int, nbytes: int) -> None:
    _progress_queue.put((n, nbytes))


def _worker_convert(plan: ScenePlan, out_root: Path, storage: str, tag: str, overwrite: bool) -> SceneResult:
    return convert_scene(plan, out_root, storage, tag, _worker_progress, overwrite)


def run_conversion(
    plans: Sequence[ScenePlan], out_root: Path, storage: str, jobs: int, tag: str, bar: Any, overwrite: bool = False
) -> list[SceneResult]:
    """Convert every plan, in this process (jobs=1) or in `jobs` worker processes."""
    def update(n: int, nbytes: int) -> None:
        bar.update(n)

    if jobs <= 1 or len(plans) <= 1:
        return [convert_scene(p, out_root, storage, tag, update, overwrite) for p in plans]

    # fork: workers start in milliseconds and inherit the imports; spawn where fork does not exist
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    progress_queue = ctx.Queue()
    results: list[SceneResult] = []
    pool = ProcessPoolExecutor(min(jobs, len(plans)), mp_context=ctx, initializer=_worker_init,
                               initargs=(progress_queue,))
    try:
        pending: set[Future] = {pool.submit(_worker_convert, p, out_root, storage, tag, overwrite) for p in plans}
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(progress_queue, update)
            for fut in done:
                results.append(fut.result())  # re-raises a worker's error here
        _drain(progress_queue, update)
    except BaseException:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # the worker removes its temporary bag
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    order = {p.name: i for i, p in enumerate(plans)}
    return sorted(results, key=lambda r: order[r.name])


def _drain(progress_queue: Any, update: Progress) -> None:
    while True:
        try:
            n, nbytes = progress_queue.get_nowait()
        except queue.Empty:
            return
        update(n, nbytes)


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> ToolParser:
    """The fusionocc-convert argument parser."""
    p = ToolParser(
        prog=PROG,
        description="Convert nuScenes-format scenes (real nuScenes or fusionocc-synth output) into "
        "rosbag2 directories, one per scene at OUT/<scene_name>/, playable with `ros2 bag play` "
        "(Humble and Jazzy) or fusionocc-play.",
    )
    p.add_argument("--data-root", required=True, help="nuScenes data root (holds samples/, sweeps/, "
                   "the <version>/ tables and, optionally, Occ3D gts/<scene>/<sample>/labels.npz)")
    p.add_argument("--version", required=True, help="nuScenes table version, e.g. v1.0-mini or v1.0-trainval")
    p.add_argument("--scenes", nargs="+", metavar="NAME", help="scene names to convert (default: every "
                   "scene of the version)")
    p.add_argument("--sweeps", action="store_true", help="write every sweep (cameras ~12 Hz, LiDAR 20 Hz) "
                   "instead of the 2 Hz key-frames only")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage: mcap "
                   "with zstd chunk compression (default) or sqlite3 (uncompressed; Humble's default plugin)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="convert N scenes in parallel "
                   "processes (default 1)")
    p.add_argument("--out", required=True, help="output directory; each scene becomes OUT/<scene_name>/, "
                   "which must not exist yet (unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/<scene_name>/ (each only once "
                   "its new bag is complete)")
    return p


def _print_summary(results: Sequence[SceneResult], out_root: Path, load_s: float, convert_s: float) -> None:
    for r in results:
        print(f"  {r.name}: {r.messages} messages, {r.keyframes} key-frames, "
              f"{r.bytes_written / 1e6:.1f} MB in {r.seconds:.2f} s -> {r.bag_dir}")
    mb = sum(r.bytes_written for r in results) / 1e6
    kf = sum(r.keyframes for r in results)
    msgs = sum(r.messages for r in results)
    rate = convert_s if convert_s > 0 else float("nan")
    print(f"{PROG}: {len(results)} scene(s), {kf} key-frames, {msgs} messages, {mb:.1f} MB written to "
          f"{out_root} in {convert_s:.2f} s ({mb / rate:.1f} MB/s, {kf / rate:.1f} key-frames/s; "
          f"dataset loading {load_s:.2f} s)")


@tool_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of fusionocc-convert; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    from tqdm import tqdm

    out_root = Path(args.out)
    tag = f"{os.getpid()}-{time.time_ns()}"
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    plans: list[ScenePlan] = []
    try:
        if out_root.exists() and not out_root.is_dir():
            raise ConvertError(f"output path {out_root} exists and is not a directory")
        t0 = time.perf_counter()
        nusc = load_nuscenes(args.data_root, args.version)
        scenes = select_scenes(nusc, args.scenes)
        table = Path(args.data_root) / args.version / "scene.json"
        for scene in scenes:  # names from scene.json become folder names: check them all first
            final = child_path(out_root, scene["name"], "scene name", source=table)
            remove_stale_partials(final)
            if final.exists() and not args.overwrite:
                raise OutputExistsError(exists_message(final))
        plans = [plan_scene(nusc, s, sweeps=args.sweeps) for s in scenes]
        del nusc
        load_s = time.perf_counter() - t0
        out_root.mkdir(parents=True, exist_ok=True)
        total = sum(count_messages(p) for p in plans)
        t1 = time.perf_counter()
        with tqdm(total=total, unit="msg", desc=PROG, file=sys.stderr, dynamic_ncols=True, disable=None) as bar:
            results = run_conversion(plans, out_root, args.storage, args.jobs, tag, bar, args.overwrite)
        _print_summary(results, out_root, load_s, time.perf_counter() - t1)
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial bag was left in {out_root}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        for plan in plans:  # belt and braces: nothing temporary survives this run
            shutil.rmtree(partial_dir(out_root, plan.name, tag), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

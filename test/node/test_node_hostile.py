"""The live node under hostile input: hypothesis-generated PointCloud2 / CompressedImage / CameraInfo
messages (wrong sizes, unknown formats, corrupt JPEG, NaN, stamps going backwards, a camera that
stops) over real DDS, then key-frames with a corrupt JPEG, a stopped camera and NaN points. The node must log, count, keep running and keep publishing for good frames."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from bag_read import stamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.rosbag2 import Reader

from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_ros import topics
from fusionocc_ros.launch_args import node_launch
from fusionocc_ros.sync import DISCARD_REASONS
from rosbag_tools.typestore import get_store

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
BACK_IMAGE = topics.image_topic("CAM_BACK")


class Graph:
    """The node under test (a subprocess) and a talker/listener rclpy node in this process."""

    def __init__(self, bag: Path, checkpoint: Path, log: Path):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from fusionocc_msgs.msg import SemanticVoxelGrid
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
        from tf2_msgs.msg import TFMessage

        self.log_path = log
        self.rc: int | None = None
        self._log = open(log, "w")
        launch = node_launch({"params_file": str(REPO / "config" / "occ_node.yaml"), "checkpoint": str(checkpoint),
                              "model_config": "tiny"})
        args = launch.ros_args() + ["-p", "input_qos:=reliable", "-p", "diagnostics.period_s:=0.5"]
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "fusionocc-node"), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        rclpy.init()
        self.node = rclpy.create_node("hostile_talker")
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs: dict[str, Any] = {topics.LIDAR: self.node.create_publisher(PointCloud2, topics.LIDAR, reliable),
                                     topics.TF: self.node.create_publisher(TFMessage, topics.TF, reliable),
                                     topics.TF_STATIC: self.node.create_publisher(TFMessage, topics.TF_STATIC, latched)}
        for cam in CAMERA_NAMES:
            self.pubs[topics.image_topic(cam)] = self.node.create_publisher(CompressedImage, topics.image_topic(cam), reliable)
            self.pubs[topics.camera_info_topic(cam)] = self.node.create_publisher(CameraInfo, topics.camera_info_topic(cam), reliable)
        self.voxel_stamps: list[int] = []
        self.diagnostics: list[Any] = []
        out = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(SemanticVoxelGrid, topics.output_topic("voxels"),
                                      lambda m: self.voxel_stamps.append(stamp(m)), out)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        with Reader(bag) as reader:  # good messages, raw CDR, in bag order
            self.bag = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]

    def spin(self, seconds: float) -> None:
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def wait_matched(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return
            self.spin(0.2)
        raise AssertionError("the node never subscribed to every input:\n" + self.log_path.read_text()[-3000:])

    def publish_bag(self, start_ns: int, end_ns: int, topics: set[str] | None = None) -> None:
        for topic, t, raw in self.bag:
            if start_ns <= t < end_ns and (topics is None or topic in topics) and topic in self.pubs:
                self.pubs[topic].publish(raw)
                self.spin(0.01)

    def wait_for_output(self, stamp_ns: int, timeout: float = 240.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and stamp_ns not in self.voxel_stamps:
            assert self.proc.poll() is None, "node died:\n" + self.log_path.read_text()[-3000:]
            self.spin(0.1)
        return stamp_ns in self.voxel_stamps

    def close(self) -> int:
        """Stop the node with SIGINT (as Ctrl-C in `ros2 run`) -> its exit status. Idempotent."""
        import rclpy

        if self.rc is not None:
            return self.rc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.rc = -9
        self.node.destroy_node()
        rclpy.try_shutdown()
        self._log.close()
        return self.rc


@pytest.fixture()
def graph(scene_bag: Path, tiny_checkpoint: Path, tmp_path: Path) -> Iterator[Graph]:
    """A node of its own for each test (no test depends on what another did to it)."""
    g = Graph(scene_bag, tiny_checkpoint, tmp_path / "node.log")
    try:
        g.wait_matched()
        yield g
    finally:
        g.close()


def _drop_counts(g: Graph) -> dict[str, int]:
    """The drop counters of the node's latest /diagnostics messages."""
    values = {kv.key: kv.value for d in g.diagnostics[-3:] for s in d.status for kv in s.values}
    return {k: int(v) for k, v in values.items() if k.startswith("drops.") and v.isdigit()}


def _keyframe_stamps(g: Graph) -> list[int]:
    return sorted(t for topic, t, _ in g.bag if topic == topics.LIDAR)


def _cuts(stamps: list[int]) -> list[int]:
    """Where each key-frame's messages begin: its images (up to 43 ms before its LiDAR stamp, as in
    nuScenes), its LiDAR and TF, from a quarter second before its LiDAR stamp."""
    return [t - NS // 4 for t in stamps]


def _modified(g: Graph, topic: str, t0: int, t1: int, edit: Any) -> bytes:
    """The bag's message on `topic` in [t0, t1), deserialized, edited and serialized again."""
    store = get_store()
    topic_, t, raw = next(m for m in g.bag if m[0] == topic and t0 <= m[1] < t1)
    conn_type = "sensor_msgs/msg/CompressedImage" if "image" in topic else "sensor_msgs/msg/PointCloud2"
    msg = store.deserialize_cdr(raw, conn_type)
    edit(msg)
    return bytes(store.serialize_cdr(msg, conn_type))


def _next_sweep(g: Graph, t: int) -> bytes:
    """The key-frame's cloud stamped a quarter second later: as in a live 20 Hz stream, a later
    sweep moves the synchronizer's clock on, which decides the key-frame (its images precede
    its LiDAR stamp: no later image of theirs may be needed) and drops that sweep itself."""
    def restamp(msg: Any) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t + NS // 4, NS)
    return _modified(g, topics.LIDAR, t, t + 1, restamp)


def _first_keyframe(g: Graph, stamps: list[int]) -> None:
    """Calibration + the first key-frame, decided by a later sweep; waits for its output."""
    g.publish_bag(0, _cuts(stamps)[1])
    g.pubs[topics.LIDAR].publish(_next_sweep(g, stamps[0]))
    assert g.wait_for_output(stamps[0]), "no output for the first good key-frame:\n" + g.log_path.read_text()[-3000:]


# --- hostile message strategies ------------------------------------------------------------------

def _stamp(base_s: int) -> st.SearchStrategy:
    """Stamps up to 5 s before the first key-frame: for the node they go backwards (small steps
    and jumps), and they cannot displace the good frames that follow."""
    return st.tuples(st.integers(base_s - 5, base_s - 1), st.integers(0, NS - 1))


@st.composite
def hostile_cloud(draw: st.DrawFn, base_s: int) -> Any:
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header.stamp.sec, msg.header.stamp.nanosec = draw(_stamp(base_s))
    msg.header.frame_id = draw(st.sampled_from(["lidar_top", "", "no_such_frame"]))
    names = st.sampled_from(["x", "y", "z", "intensity", "ring", "rgb", ""])
    msg.fields = [PointField(name=draw(names), offset=draw(st.integers(0, 40)), datatype=draw(st.integers(0, 9)),
                             count=draw(st.integers(0, 3))) for _ in range(draw(st.integers(0, 6)))]
    msg.height = draw(st.integers(0, 3))
    msg.width = draw(st.integers(0, 200))
    msg.point_step = draw(st.integers(0, 40))
    msg.row_step = draw(st.integers(0, 8000))
    msg.is_bigendian = draw(st.booleans())
    if draw(st.booleans()):  # a plausible layout full of NaN / Inf / huge values
        pts = np.array(draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 1e30, 0.5, -3.0]), min_size=0, max_size=100)),
                       np.float32)
        msg.data = pts.tobytes()
    else:
        msg.data = draw(st.binary(max_size=2000))
    return msg


@st.composite
def hostile_image(draw: st.DrawFn, base_s: int, jpeg: bytes) -> Any:
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = draw(_stamp(base_s))
    msg.header.frame_id = draw(st.sampled_from(["cam_front", "", "x"]))
    msg.format = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "tiff", ""]))
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "empty"]))
    if kind == "random":
        msg.data = draw(st.binary(max_size=3000))
    elif kind == "truncated":
        msg.data = jpeg[: draw(st.integers(0, len(jpeg) - 1))]
    elif kind == "flipped":
        data = bytearray(jpeg)
        for i in draw(st.lists(st.integers(0, len(jpeg) - 1), min_size=1, max_size=20)):
            data[i] ^= 0xFF
        msg.data = bytes(data)
    else:
        msg.data = b""
    return msg


@st.composite
def hostile_info(draw: st.DrawFn, base_s: int) -> Any:
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = draw(_stamp(base_s))
    msg.width = draw(st.integers(0, 5000))
    msg.height = draw(st.integers(0, 5000))
    msg.k = [float(v) for v in draw(st.lists(st.sampled_from([np.nan, np.inf, 0.0, 1266.4, -1.0, 1e300]), min_size=9, max_size=9))]
    return msg


def test_node_survives_hostile_input_and_keeps_publishing(graph: Graph) -> None:
    stamps = _keyframe_stamps(graph)
    base_s = stamps[0] // NS
    # a key-frame's messages: its images (up to 43 ms before its LiDAR stamp, as in nuScenes), its
    # LiDAR and TF, up to a quarter second before the next key-frame's LiDAR
    cut = _cuts(stamps)
    # 1) calibration + the first good key-frame
    _first_keyframe(graph, stamps)

    jpeg = next(raw for topic, _, raw in graph.bag if topic == topics.image_topic("CAM_FRONT"))
    jpeg_bytes = bytes(get_store().deserialize_cdr(jpeg, "sensor_msgs/msg/CompressedImage").data)
    cams = list(CAMERA_NAMES)

    # 2) hostile messages on every input (hypothesis drives what and where)
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=st.data())
    def send_hostile(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["cloud", "image", "info"]))
        cam = data.draw(st.sampled_from(cams))
        if kind == "cloud":
            graph.pubs[topics.LIDAR].publish(data.draw(hostile_cloud(base_s)))
        elif kind == "image":
            graph.pubs[topics.image_topic(cam)].publish(data.draw(hostile_image(base_s, jpeg_bytes)))
        else:
            graph.pubs[topics.camera_info_topic(cam)].publish(data.draw(hostile_info(base_s)))
        graph.spin(0.02)

    send_hostile()
    graph.spin(2.0)
    assert graph.proc.poll() is None, "the node died on hostile input:\n" + graph.log_path.read_text()[-3000:]

    # 3) key-frame 2 with a corrupt (truncated) CAM_BACK JPEG: counted as bad input, not published
    def truncate(msg: Any) -> None:
        msg.data = msg.data[: len(msg.data) // 2]

    bad_jpeg = _modified(graph, BACK_IMAGE, cut[1], stamps[1], truncate)
    graph.publish_bag(cut[1], cut[2], topics={t for t, *_ in graph.bag} - {BACK_IMAGE, topics.LIDAR})
    graph.pubs[BACK_IMAGE].publish(bad_jpeg)
    graph.publish_bag(cut[1], cut[2], topics={topics.LIDAR})
    # 4) key-frame 3 while CAM_BACK has stopped: dropped (missing camera), not published
    graph.publish_bag(cut[2], cut[3], topics={t for t, *_ in graph.bag} - {BACK_IMAGE})
    # key-frame 3's LiDAR decided key-frame 2's set; let the worker take it before key-frame 4 arrives,
    # which would otherwise supersede it (latest wins) while a set formed from hostile input is inferred
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _drop_counts(graph).get("drops.frame_bad_input", 0) < 1:
        graph.spin(0.25)
    # 5) key-frame 4 is good apart from NaN / Inf points in its cloud: published (bad points dropped)
    def add_nan_points(msg: Any) -> None:
        bad = np.array([[np.nan, 1, 1, 1, 1], [np.inf, 0, 0, 0, 0], [1, -np.inf, 0, 0, 0]], np.float32)
        msg.data = np.concatenate([msg.data, np.frombuffer(bad.tobytes(), np.uint8)])
        msg.width += 3
        msg.row_step = msg.width * msg.point_step

    nan_cloud = _modified(graph, topics.LIDAR, stamps[3], stamps[3] + NS, add_nan_points)
    graph.publish_bag(cut[3], stamps[3] + NS, topics={t for t, *_ in graph.bag} - {topics.LIDAR})
    graph.pubs[topics.LIDAR].publish(nan_cloud)
    graph.pubs[topics.LIDAR].publish(_next_sweep(graph, stamps[3]))
    assert graph.wait_for_output(stamps[3]), "no output for a good key-frame after hostile input:\n" + graph.log_path.read_text()[-4000:]
    assert stamps[1] not in graph.voxel_stamps and stamps[2] not in graph.voxel_stamps
    graph.spin(1.5)

    # 5) drops are counted in /diagnostics, and each reason is logged once
    values = {kv.key: kv.value for d in graph.diagnostics[-3:] for s in d.status for kv in s.values}
    drops = _drop_counts(graph)
    assert sum(drops.values()) > 0, values
    assert drops.get("drops.frame_bad_input", 0) >= 1, drops  # the corrupt JPEG
    assert drops.get("drops.sync_missing_camera", 0) >= 1, drops  # the camera that stopped
    assert drops.get("drops.sync_lidar_out_of_order", 0) + drops.get("drops.sync_time_jump", 0) > 0, drops
    # camera frames the synchronizer threw away, and sweeps missed per camera, are reported too
    assert all(f"camera_frames_discarded.{r}" in values for r in DISCARD_REASONS), values
    assert int(values.get("missing_by_camera.CAM_BACK", 0)) >= 1, values
    log = graph.log_path.read_text()
    for reason in ("frame_bad_input", "sync_missing_camera", "sync_lidar_out_of_order"):
        if drops.get(f"drops.{reason}", 0) > 1:
            assert log.count(f"dropping input ({reason})") == 1, log[-3000:]
    assert "Traceback" not in log, log[-4000:]
    # 6) and after all that, Ctrl-C still stops it cleanly
    assert graph.close() == 0, graph.log_path.read_text()[-3000:]
    assert "Traceback" not in graph.log_path.read_text()


def test_node_builds_only_subscribed_outputs_and_stops_cleanly_on_sigint(graph: Graph) -> None:
    """Only the voxel message has a subscriber here: the markers and the cloud (up to 28 MB per
    frame) are neither built nor published. Then Ctrl-C: exit status 0, no traceback."""
    _first_keyframe(graph, _keyframe_stamps(graph))
    graph.spin(1.2)  # the next /diagnostics (every 0.5 s) reports the output published
    values = {kv.key: kv.value for d in graph.diagnostics[-2:] for s in d.status for kv in s.values}
    assert int(values.get("voxels total", 0)) >= 1, values
    assert "markers total" not in values and "cloud total" not in values, values
    assert graph.proc.poll() is None
    assert graph.close() == 0, graph.log_path.read_text()[-3000:]
    assert "Traceback" not in graph.log_path.read_text()

"""fusionocc_msgs/SemanticVoxelGrid and tf2_msgs/TFMessage between two processes over real DDS."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, GRID_SHAPE, PALETTE

pytestmark = pytest.mark.ros
PEER = Path(__file__).with_name("msg_peer.py")


def _grid_msg(rng: np.random.Generator):
    from fusionocc_msgs.msg import SemanticVoxelGrid
    from std_msgs.msg import ColorRGBA

    labels = rng.integers(0, 18, size=GRID_SHAPE, dtype=np.uint8)
    confidence = rng.integers(0, 256, size=GRID_SHAPE, dtype=np.uint8)
    msg = SemanticVoxelGrid()
    msg.header.frame_id = "base_link"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1533151603, 547590000
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = -40.0, -40.0, -1.0
    msg.origin.orientation.w = 1.0
    msg.resolution = 0.4
    msg.size_x, msg.size_y, msg.size_z = GRID_SHAPE
    msg.class_names = list(CLASS_NAMES)
    msg.class_colors = [ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0) for r, g, b in PALETTE.tolist()]
    msg.free_label = FREE_LABEL
    msg.labels = labels.tobytes()
    msg.confidence = confidence.tobytes()
    return msg, labels, confidence


def _tf_msg():
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    out = TFMessage()
    for i, child in enumerate(("lidar_top", "cam_front")):
        t = TransformStamped()
        t.header.frame_id = "base_link"
        t.header.stamp.sec, t.header.stamp.nanosec = 100 + i, 5 + i
        t.child_frame_id = child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = 0.94 + i, 0.0, 1.84
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = 0.5, -0.5, 0.5, -0.5
        out.transforms.append(t)
    return out


def test_voxel_grid_and_tf_cross_process(tmp_path: Path) -> None:
    import rclpy
    from fusionocc_msgs.msg import SemanticVoxelGrid
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    out = tmp_path / "received.npz"
    peer = subprocess.Popen([sys.executable, str(PEER), str(out), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == "READY"
        rclpy.init()
        node = rclpy.create_node("roundtrip_talker")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        grid_pub = node.create_publisher(SemanticVoxelGrid, "/roundtrip/voxels", qos)
        tf_pub = node.create_publisher(TFMessage, "/roundtrip/tf_static", qos)
        grid, labels, confidence = _grid_msg(np.random.default_rng(0))
        tf = _tf_msg()
        grid_pub.publish(grid)
        tf_pub.publish(tf)
        deadline = time.monotonic() + 60
        while peer.poll() is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert peer.wait(timeout=5) == 0, "listener did not receive both messages"
    finally:
        if peer.poll() is None:
            peer.kill()
        if rclpy.ok():
            rclpy.shutdown()

    got = np.load(out, allow_pickle=True)
    assert got["frame_id"].item() == "base_link"
    assert list(got["stamp"]) == [1533151603, 547590000]
    np.testing.assert_allclose(got["origin"].astype(float), [-40, -40, -1, 0, 0, 0, 1])
    assert got["resolution"].item() == pytest.approx(0.4)
    assert list(got["size"]) == [200, 200, 16]
    assert list(got["class_names"]) == list(CLASS_NAMES)
    np.testing.assert_allclose(np.array(got["class_colors"].tolist(), float)[:, :3] * 255, PALETTE, atol=1e-3)
    assert got["free_label"].item() == 17
    np.testing.assert_array_equal(got["labels"].reshape(GRID_SHAPE), labels)
    np.testing.assert_array_equal(got["confidence"].reshape(GRID_SHAPE), confidence)
    tfs = got["tf"].tolist()
    assert [(t[0], t[1]) for t in tfs] == [("base_link", "lidar_top"), ("base_link", "cam_front")]
    assert [(t[2], t[3]) for t in tfs] == [(100, 5), (101, 6)]
    np.testing.assert_allclose(np.array([t[4:] for t in tfs], float),
                               [[0.94, 0, 1.84, 0.5, -0.5, 0.5, -0.5], [1.94, 0, 1.84, 0.5, -0.5, 0.5, -0.5]])

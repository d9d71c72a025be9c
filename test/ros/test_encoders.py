"""encoders: our pre-serialized CDR bytes decode (with rclpy's own deserializer) to exactly the
message that rclpy builds from objects; content checks; publishing the bytes over real DDS."""
from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy_reference as ref
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, PALETTE
from fusionocc_core.config import load_config
from fusionocc_msgs.msg import SemanticVoxelGrid
from fusionocc_ros.conversions import pointcloud2_to_xyzir, voxel_grid_to_labels
from fusionocc_ros.encoders import (
    CLOUD_DTYPE,
    MarkerArrayEncoder,
    PointCloudEncoder,
    RateLimiter,
    VoxelGridEncoder,
    class_mask,
)

STAMP = 1_533_201_470_448_696_123


def random_labels(n_occupied: int = 5000, classes=range(17), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.full((200, 200, 16), FREE_LABEL, np.uint8)
    idx = rng.choice(labels.size, n_occupied, replace=False)
    labels.reshape(-1)[idx] = rng.choice(np.array(list(classes), np.uint8), n_occupied)
    return labels


@pytest.mark.parametrize(
    "encoder",
    [
        MarkerArrayEncoder(),
        MarkerArrayEncoder(frame_id="ego", classes=["car", "pedestrian", 16], alpha=0.5, lifetime_s=0.75,
                           frame_locked=True, delete_all=False),
    ],
)
def test_marker_array_bytes_equal_rclpy_message(encoder):
    labels = random_labels()
    data = encoder.encode(labels, STAMP)
    reference = ref.marker_array(encoder, labels, STAMP)
    assert isinstance(data, bytes)
    assert deserialize_message(data, MarkerArray) == reference
    # and the other way round: rclpy's own bytes decode to the same message (same definition)
    assert deserialize_message(serialize_message(reference), MarkerArray) == reference
    assert len(data) == len(serialize_message(reference))


def test_marker_array_content():
    labels = np.full((200, 200, 16), FREE_LABEL, np.uint8)
    labels[0, 0, 0] = 4  # car at the min corner
    labels[199, 199, 15] = 4
    labels[100, 50, 3] = 11  # driveable_surface
    labels[10, 10, 10] = 200  # out-of-table value: ignored
    msg = deserialize_message(MarkerArrayEncoder(lifetime_s=1.5).encode(labels, STAMP), MarkerArray)
    delete, car, road = msg.markers
    assert delete.action == Marker.DELETEALL and delete.ns == ""
    for m, cls in ((car, 4), (road, 11)):
        assert (m.ns, m.id, m.type, m.action) == (CLASS_NAMES[cls], cls, Marker.CUBE_LIST, Marker.ADD)
        assert m.header.frame_id == "base_link"
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == STAMP
        assert (m.scale.x, m.scale.y, m.scale.z) == pytest.approx((0.4, 0.4, 0.4))
        assert (m.color.r, m.color.g, m.color.b, m.color.a) == pytest.approx((*(PALETTE[cls] / 255.0), 1.0))
        assert (m.lifetime.sec, m.lifetime.nanosec) == (1, 500_000_000)
        assert len(m.colors) == 0
    np.testing.assert_allclose([(p.x, p.y, p.z) for p in car.points], [(-39.8, -39.8, -0.8), (39.8, 39.8, 5.2)], atol=1e-9)
    np.testing.assert_allclose([(p.x, p.y, p.z) for p in road.points], [(0.2, -19.8, 0.4)], atol=1e-9)


def test_empty_grid_and_class_filter():
    empty = np.full((200, 200, 16), FREE_LABEL, np.uint8)
    msg = deserialize_message(MarkerArrayEncoder().encode(empty, STAMP), MarkerArray)
    assert [m.action for m in msg.markers] == [Marker.DELETEALL]
    labels = random_labels(2000)
    msg = deserialize_message(MarkerArrayEncoder(classes=["car", "truck"]).encode(labels, STAMP), MarkerArray)
    assert [m.ns for m in msg.markers[1:]] == ["car", "truck"]
    assert [len(m.points) for m in msg.markers[1:]] == [int((labels == 4).sum()), int((labels == 10).sum())]
    with pytest.raises(ValueError, match="unknown class 'cars'"):
        class_mask(["cars"])
    assert not class_mask(["free"]).any()


def test_bad_labels_are_rejected():
    enc = MarkerArrayEncoder()
    with pytest.raises(ValueError, match=r"uint8 \(200, 200, 16\)"):
        enc.encode(np.zeros((200, 200, 15), np.uint8), STAMP)
    with pytest.raises(ValueError, match="uint8"):
        VoxelGridEncoder().encode(np.zeros((200, 200, 16), np.int64), STAMP)
    with pytest.raises(ValueError, match="alpha"):
        MarkerArrayEncoder(alpha=2.0)


@pytest.mark.parametrize("with_confidence", [False, True])
def test_voxel_grid_bytes_equal_rclpy_message_and_round_trip(with_confidence):
    labels = random_labels(20000)
    conf = np.random.default_rng(1).integers(0, 256, labels.shape, dtype=np.uint8) if with_confidence else None
    enc = VoxelGridEncoder()
    data = enc.encode(labels, STAMP, confidence=conf)
    reference = ref.voxel_grid(enc, labels, STAMP, conf)
    msg = deserialize_message(data, SemanticVoxelGrid)
    assert msg == reference
    assert len(data) == len(serialize_message(reference))  # bytes differ only in padding (Fast DDS leaves it uninitialised)
    back, back_conf = voxel_grid_to_labels(msg)
    np.testing.assert_array_equal(back, labels)
    if with_confidence:
        np.testing.assert_array_equal(back_conf, conf)
    else:
        assert back_conf is None
    assert list(msg.class_names) == list(CLASS_NAMES) and msg.free_label == FREE_LABEL
    assert (msg.origin.position.x, msg.origin.position.y, msg.origin.position.z) == (-40.0, -40.0, -1.0)
    assert (msg.size_x, msg.size_y, msg.size_z) == (200, 200, 16)


def test_point_cloud_bytes_equal_rclpy_message_and_content():
    labels = random_labels(3000)
    enc = PointCloudEncoder()
    data = enc.encode(labels, STAMP)
    msg = deserialize_message(data, PointCloud2)
    assert msg == ref.point_cloud(enc, labels, STAMP)
    assert msg.width == 3000 and msg.point_step == 20 and msg.header.frame_id == "base_link"
    rec = np.frombuffer(bytes(msg.data), CLOUD_DTYPE)
    xyz = pointcloud2_to_xyzir(msg)[:, :3]  # our own reader understands our own writer
    ijk = np.round((xyz - np.array([-40.0, -40.0, -1.0])) / 0.4 - 0.5).astype(int)
    np.testing.assert_array_equal(labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]], rec["label"])
    rgb = rec["rgb"].view(np.uint32)
    np.testing.assert_array_equal(np.stack([rgb >> 16, (rgb >> 8) & 255, rgb & 255], 1), PALETTE[rec["label"]])


def test_encoders_take_the_grid_from_the_config():
    """One grid definition: the presets' GridConfig is the Occ3D grid the encoders default to, and
    a different grid changes the messages (origin, size, centres); non-cubic voxels are refused."""
    from fusionocc_core.config import GridConfig

    assert load_config("tiny").grid == GridConfig()
    labels = random_labels(500)
    assert VoxelGridEncoder(grid=load_config("tiny").grid).encode(labels, STAMP) == VoxelGridEncoder().encode(labels, STAMP)
    small = GridConfig(x=(0.0, 2.0, 0.5), y=(-1.0, 1.0, 0.5), z=(0.0, 1.0, 0.5))
    grid = np.full((4, 4, 2), FREE_LABEL, np.uint8)
    grid[3, 0, 1] = 4
    msg = deserialize_message(VoxelGridEncoder(grid=small).encode(grid, STAMP), SemanticVoxelGrid)
    assert (msg.size_x, msg.size_y, msg.size_z, msg.resolution) == (4, 4, 2, 0.5)
    assert (msg.origin.position.x, msg.origin.position.y, msg.origin.position.z) == (0.0, -1.0, 0.0)
    (car,) = deserialize_message(MarkerArrayEncoder(grid=small).encode(grid, STAMP), MarkerArray).markers[1:]
    assert [(p.x, p.y, p.z) for p in car.points] == [(1.75, -0.75, 0.75)] and car.scale.x == 0.5
    with pytest.raises(ValueError, match="cubic"):
        PointCloudEncoder(grid=GridConfig(z=(-1.0, 5.4, 0.2)))


@pytest.mark.ros
def test_published_bytes_arrive_as_the_reference_message_over_dds():
    """publish(bytes) through a real rclpy publisher; a subscriber on loopback DDS decodes it."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    labels = random_labels(4000)
    enc = MarkerArrayEncoder()
    rclpy.init()
    try:
        node = rclpy.create_node("encoder_test")
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        pub = node.create_publisher(MarkerArray, "/test_markers", qos)
        got = []
        node.create_subscription(MarkerArray, "/test_markers", got.append, qos)
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            if pub.get_subscription_count():
                pub.publish(enc.encode(labels, STAMP))
            rclpy.spin_once(node, timeout_sec=0.1)
        assert got, "no message received over loopback DDS"
        assert got[0] == ref.marker_array(enc, labels, STAMP)
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_rosbags_reads_our_bytes_too():
    """Replay writes these bytes into bags; rosbags' independent CDR reader must agree."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    labels = random_labels(3000)
    markers = store.deserialize_cdr(MarkerArrayEncoder().encode(labels, STAMP), "visualization_msgs/msg/MarkerArray")
    assert [m.ns for m in markers.markers[1:]] == [CLASS_NAMES[c] for c in np.unique(labels) if c != FREE_LABEL]
    assert sum(len(m.points) for m in markers.markers) == 3000
    cloud = store.deserialize_cdr(PointCloudEncoder().encode(labels, STAMP), "sensor_msgs/msg/PointCloud2")
    assert cloud.width == 3000 and pointcloud2_to_xyzir(cloud).shape == (3000, 5)


def test_rate_limiter_throttles_by_stamp_and_restarts_when_time_goes_back():
    ms = 1_000_000
    limit = RateLimiter(2.0)  # at most one per 500 ms of stamps
    stamps = [0, 100, 499, 500, 900, 1000, 1001, 200, 650, 700]
    assert [limit.allow(t * ms) for t in stamps] == [True, False, False, True, False, True, False, True, False, True]
    unlimited = RateLimiter(0.0)
    assert all(unlimited.allow(t) for t in (5, 5, 6))
    with pytest.raises(ValueError):
        RateLimiter(-1.0)


def test_definition_driven_serializer_matches_rosbags_on_other_types():
    """cdr.serialize follows the .msg definitions, not a hand-written layout: fixed arrays, nested
    messages, strings and left-out fields give the bytes rosbags' own serializer writes."""
    from fusionocc_ros.cdr import header, serialize
    from rosbag_tools.typestore import get_store

    store = get_store()
    t = store.types
    k = np.arange(9, dtype=np.float64)
    value = {"header": header(STAMP, "cam_front"), "height": 900, "width": 1600, "distortion_model": "plumb_bob",
             "d": np.zeros(5), "k": k, "p": list(range(12)), "binning_x": 1}
    ours = serialize("sensor_msgs/msg/CameraInfo", value)
    theirs = store.serialize_cdr(t["sensor_msgs/msg/CameraInfo"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=STAMP // 10**9, nanosec=STAMP % 10**9),
                                        frame_id="cam_front"),
        height=900, width=1600, distortion_model="plumb_bob", d=np.zeros(5), k=k, r=np.zeros(9),
        p=np.arange(12, dtype=np.float64), binning_x=1, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    ), "sensor_msgs/msg/CameraInfo")
    assert ours == bytes(theirs)
    with pytest.raises(KeyError, match="no field"):
        serialize("sensor_msgs/msg/CameraInfo", {"widht": 3})
    with pytest.raises(ValueError, match="little-endian elements"):
        serialize("visualization_msgs/msg/Marker", {"points": np.zeros((2, 3), np.float32)})


def test_markers_and_cloud_encode_the_same_from_shared_drawn_voxels() -> None:
    # the pipeline finds the drawn voxels once per frame and hands them to both encoders
    from fusionocc_ros.encoders import MarkerArrayEncoder, PointCloudEncoder, occupied_voxels

    labels = np.random.default_rng(4).integers(0, 18, (200, 200, 16)).astype(np.uint8)
    for classes in (None, ["car", "manmade"]):
        markers, cloud = MarkerArrayEncoder(classes=classes), PointCloudEncoder(classes=classes)
        drawn = occupied_voxels(labels, markers.mask)
        assert markers.encode(labels, 7, drawn) == markers.encode(labels, 7)
        assert cloud.encode(labels, 7, drawn) == cloud.encode(labels, 7)

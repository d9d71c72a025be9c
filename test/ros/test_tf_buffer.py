"""TfBuffer: static chains, interpolation (checked against scipy), full lookups, errors, bounds."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from fusionocc_ros.conversions import matrix_to_transform_stamped
from fusionocc_ros.rigid import invert, make_transform, matrix_to_quat, quat_to_matrix
from fusionocc_ros.tf_buffer import ConnectivityError, ExtrapolationError, FrameNotFound, TfBuffer

S = 1_000_000_000


def pose(x=0.0, y=0.0, z=0.0, yaw_deg=0.0, roll_deg=0.0):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [roll_deg, 0, yaw_deg], degrees=True).as_matrix()
    T[:3, 3] = (x, y, z)
    return T


LIDAR = pose(0.9, 0.0, 1.8, yaw_deg=-90)
CAM = pose(1.5, 0.3, 1.5) @ pose(roll_deg=-90) @ pose(yaw_deg=-90)  # an optical frame


def rig() -> TfBuffer:
    tf = TfBuffer(cache_time_s=10.0)
    tf.set_transform("base_link", "lidar_top", 0, LIDAR, static=True)
    tf.set_transform("base_link", "cam_front", 0, CAM, static=True)
    tf.set_transform("map", "base_link", 1 * S, pose(0, 0, 0, yaw_deg=0))
    tf.set_transform("map", "base_link", 2 * S, pose(10, 0, 0, yaw_deg=90))
    return tf


def test_static_chain_between_two_sensors():
    tf = rig()
    np.testing.assert_allclose(tf.lookup("cam_front", "lidar_top", 0), invert(CAM) @ LIDAR, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("base_link", "lidar_top", 0), LIDAR, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("lidar_top", "lidar_top", 0), np.eye(4))


def test_dynamic_transform_is_interpolated_slerp_and_lerp():
    tf = rig()
    mid = tf.lookup("map", "base_link", int(1.5 * S))
    np.testing.assert_allclose(mid, pose(5, 0, 0, yaw_deg=45), atol=1e-12)
    quarter = tf.lookup("map", "base_link", int(1.25 * S))
    np.testing.assert_allclose(quarter, pose(2.5, 0, 0, yaw_deg=22.5), atol=1e-12)
    # through the chain: the lidar in map at 1.5 s
    np.testing.assert_allclose(tf.lookup("map", "lidar_top", int(1.5 * S)), pose(5, 0, 0, yaw_deg=45) @ LIDAR, atol=1e-12)


def test_lookup_full_expresses_a_sensor_at_its_time_in_the_ego_frame_at_another_time():
    tf = rig()
    t_cam, t_ref = int(1.2 * S), int(1.8 * S)
    want = invert(tf.lookup("map", "base_link", t_ref)) @ tf.lookup("map", "base_link", t_cam) @ CAM
    got = tf.lookup_full("base_link", t_ref, "cam_front", t_cam, "map")
    np.testing.assert_allclose(got, want, atol=1e-12)
    # a point fixed in the world stays fixed: camera at 1.2 s and ego at 1.8 s agree on it
    world = np.array([20.0, 5.0, 1.0, 1.0])
    in_cam = invert(tf.lookup("map", "cam_front", t_cam)) @ world
    in_ego_ref = invert(tf.lookup("map", "base_link", t_ref)) @ world
    np.testing.assert_allclose(got @ in_cam, in_ego_ref, atol=1e-9)


def test_latest_common_time_when_stamp_is_zero():
    tf = rig()
    np.testing.assert_allclose(tf.lookup("map", "lidar_top", 0), pose(10, 0, 0, yaw_deg=90) @ LIDAR, atol=1e-12)
    assert tf.latest_stamp("map", "cam_front") == 2 * S
    assert tf.latest_stamp("base_link", "cam_front") == 0  # static only
    assert tf.latest_stamp("map", "nowhere") is None


def test_extrapolation_is_an_error_unless_within_tolerance():
    tf = rig()
    with pytest.raises(ExtrapolationError, match=r"after the newest"):
        tf.lookup("map", "base_link", int(2.1 * S))
    with pytest.raises(ExtrapolationError, match=r"before the oldest"):
        tf.lookup("map", "lidar_top", int(0.5 * S))
    lenient = rig()
    lenient.tolerance_ns = int(0.2 * S)
    np.testing.assert_allclose(lenient.lookup("map", "base_link", int(2.1 * S)), pose(10, 0, 0, yaw_deg=90), atol=1e-12)
    assert not tf.can_transform("map", "base_link", int(3 * S))


def test_unknown_and_disconnected_frames():
    tf = rig()
    tf.set_transform("odom_other", "wheel", 1 * S, np.eye(4), static=True)
    with pytest.raises(FrameNotFound, match="'radar'"):
        tf.lookup("base_link", "radar", 0)
    with pytest.raises(ConnectivityError, match="not connected"):
        tf.lookup("base_link", "wheel", 0)


def test_history_is_bounded_and_out_of_order_inserts_are_sorted():
    tf = TfBuffer(cache_time_s=2.0)
    for k in [0, 2, 1, 4, 3, 6, 5]:
        tf.set_transform("map", "base_link", k * S, pose(x=float(k)))
    np.testing.assert_allclose(tf.lookup("map", "base_link", int(5.5 * S))[0, 3], 5.5)
    with pytest.raises(ExtrapolationError):
        tf.lookup("map", "base_link", int(3.5 * S))  # older than 6 s - 2 s: pruned
    tf.set_transform("map", "base_link", 6 * S, pose(x=60.0))  # same stamp replaces
    assert tf.lookup("map", "base_link", 6 * S)[0, 3] == 60.0
    # older than the whole window: time jumped back (a looping bag): the edge starts again
    tf.set_transform("map", "base_link", 1 * S, pose(x=1.0))
    tf.set_transform("map", "base_link", 2 * S, pose(x=2.0))
    assert tf.lookup("map", "base_link", int(1.5 * S))[0, 3] == pytest.approx(1.5)
    with pytest.raises(ExtrapolationError):
        tf.lookup("map", "base_link", 6 * S)


def test_cycles_and_self_loops_are_rejected():
    tf = rig()
    with pytest.raises(ValueError, match="cycle"):
        tf.set_transform("lidar_top", "map", 0, np.eye(4), static=True)
    with pytest.raises(ValueError, match="invalid"):
        tf.set_transform("a", "a", 0, np.eye(4))


def test_tf_messages_from_rclpy_feed_the_buffer_and_bad_transforms_are_reported():
    from tf2_msgs.msg import TFMessage

    good = matrix_to_transform_stamped(pose(3, 4, 0, yaw_deg=30), "map", "base_link", 5 * S)
    static = matrix_to_transform_stamped(LIDAR, "/base_link", "lidar_top", 0)
    nan = matrix_to_transform_stamped(np.eye(4), "map", "x1", 5 * S)
    nan.transform.translation.x = float("nan")
    denorm = matrix_to_transform_stamped(np.eye(4), "map", "x2", 5 * S)
    denorm.transform.rotation.w = 0.5
    selfloop = matrix_to_transform_stamped(np.eye(4), "map", "map", 5 * S)
    empty = matrix_to_transform_stamped(np.eye(4), "", "x3", 5 * S)
    tf = TfBuffer()
    errors = tf.add_tf_message(TFMessage(transforms=[good, nan, denorm, selfloop, empty]))
    assert tf.add_tf_message(TFMessage(transforms=[static]), static=True) == []
    assert len(errors) == 4 and tf.rejected == 4
    assert any("NaN" in e for e in errors) and any("unit quaternion" in e for e in errors)
    assert any("own parent" in e for e in errors) and any("empty" in e for e in errors)
    np.testing.assert_allclose(tf.lookup("map", "lidar_top", 5 * S), pose(3, 4, 0, yaw_deg=30) @ LIDAR, atol=1e-9)
    assert tf.frames == {"map", "base_link", "lidar_top"}
    assert tf.add_tf_message(object()) and tf.rejected == 5


unit_quats = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)


@settings(max_examples=100, deadline=None)
@given(q0=unit_quats, q1=unit_quats, alpha=st.floats(0, 1))
def test_interpolation_matches_scipy_slerp(q0, q1, alpha):
    q0, q1 = np.array(q0) / np.linalg.norm(q0), np.array(q1) / np.linalg.norm(q1)
    tf = TfBuffer()
    tf.set_transform("a", "b", S, make_transform(np.zeros(3), q0))  # (time 0 would mean "latest")
    tf.set_transform("a", "b", S + 1000, make_transform(np.ones(3), q1))
    t = int(round(alpha * 1000))
    got = tf.lookup("a", "b", S + t)
    want = Slerp([0, 1000], Rotation.from_quat([q0, q1]))([t]).as_matrix()[0]
    np.testing.assert_allclose(got[:3, :3], want, atol=1e-6)
    np.testing.assert_allclose(got[:3, 3], np.full(3, t / 1000), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(q=unit_quats)
def test_quaternion_matrix_round_trip(q):
    q = np.array(q) / np.linalg.norm(q)
    np.testing.assert_allclose(quat_to_matrix(q), Rotation.from_quat(q).as_matrix(), atol=1e-12)
    back = matrix_to_quat(quat_to_matrix(q))
    assert np.allclose(back, q, atol=1e-9) or np.allclose(back, -q, atol=1e-9)

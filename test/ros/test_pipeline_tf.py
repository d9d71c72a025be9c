"""The pipeline's TF handling: a /tf that lags the sensors (a localisation stack) loses no set;
rejected transforms are counted under tf2's reasons and logged once; time jumping back clears TF."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from tf2_msgs.msg import TFMessage

from fusionocc_core.config import load_config
from fusionocc_ros.conversions import matrix_to_transform_stamped
from fusionocc_ros.params import load_params_file, pipeline_settings
from fusionocc_ros.pipeline import OccupancyPipeline

REPO = Path(__file__).resolve().parents[2]
S = 1_000_000_000
T0 = 1_700_000_000 * S


def _stamped(msg, t_ns: int, frame: str):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t_ns), S)
    msg.header.frame_id = frame
    return msg


def _ego_pose(t_ns: int) -> TransformStamped:
    T = np.eye(4)
    T[0, 3] = 10.0 * (t_ns - T0) / S  # driving at 10 m/s
    return matrix_to_transform_stamped(T, "map", "base_link", t_ns)


def _pipeline(problems: list[tuple[str, str]]) -> OccupancyPipeline:
    cfg = load_config("tiny")
    params = load_params_file(REPO / "config" / "occ_node.yaml")  # the shipped defaults (tf.max_wait_s)
    # the pipeline's hold-for-TF decisions need no model: nothing here is inferred
    return OccupancyPipeline(cfg, predictor=None, settings=pipeline_settings(params),  # type: ignore[arg-type]
                             on_problem=lambda reason, detail: problems.append((reason, detail)))


def _stream(seconds: float, lidar_hz: float, tf_hz: float, tf_lag_s: float, cameras: tuple[str, ...]):
    """(arrival ns, kind, payload) of a rig: LiDAR at lidar_hz, cameras 43-3 ms before each sweep
    (nuScenes: the LiDAR is stamped at the end of its rotation), map->base_link at tf_hz from
    0.1 s before the first sweep, arriving tf_lag_s after its stamp."""
    events = []
    n = int(seconds * lidar_hz)
    for k in range(n):
        t = T0 + int(k * S / lidar_hz)
        events.append((t, "lidar", _stamped(PointCloud2(), t, "lidar_top")))
        for i, cam in enumerate(cameras):
            tc = t + int((-0.043 + 0.008 * i) * S)
            events.append((tc, ("image", cam), _stamped(CompressedImage(format="jpeg"), tc, cam.lower())))
    for k in range(int(-0.1 * tf_hz), int((seconds + 0.2) * tf_hz)):
        ts = T0 + int(k * S / tf_hz)
        events.append((ts + int(tf_lag_s * S), "tf", TFMessage(transforms=[_ego_pose(ts)])))
    events.sort(key=lambda e: e[0])
    return events


def _feed(pipe: OccupancyPipeline, events) -> list:
    released = []
    for _, kind, msg in events:
        if kind == "lidar":
            released += pipe.add_lidar(msg)
        elif kind == "tf":
            released += pipe.add_tf(msg)
        else:
            released += pipe.add_camera(kind[1], msg)
    return released


def _calibrate(pipe: OccupancyPipeline) -> None:
    for cam in pipe.camera_names:
        info = CameraInfo(width=1600, height=900)
        info.k = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
        pipe.add_camera_info(cam, info)


@pytest.mark.parametrize("lag_s", [0.0, 0.2, 0.3])
def test_tf_lagging_the_sensors_loses_no_synchronized_set(lag_s: float) -> None:
    problems: list[tuple[str, str]] = []
    pipe = _pipeline(problems)
    _calibrate(pipe)
    released = _feed(pipe, _stream(10.0, 20.0, 100.0, lag_s, pipe.camera_names))
    released += pipe.flush()
    assert pipe.frames_in >= 195  # 200 sweeps, the last ones are decided by flush
    assert len(released) == pipe.frames_in, (pipe.counters(), problems[:3])
    assert [s.lidar_stamp_ns for s in released] == sorted(s.lidar_stamp_ns for s in released)
    assert not any(k.startswith(("tf_", "hold")) for k, v in pipe.counters().items() if v), pipe.counters()


def test_tf_longer_than_the_wait_drops_sets_as_tf_timeout() -> None:
    problems: list[tuple[str, str]] = []
    pipe = _pipeline(problems)
    assert pipe.settings.tf_wait_s == 0.5
    _calibrate(pipe)
    released = _feed(pipe, _stream(4.0, 20.0, 100.0, 0.9, pipe.camera_names))
    assert pipe.counters()["tf_timeout"] > 0 and len(released) < pipe.frames_in
    assert sum(1 for reason, _ in problems if reason == "tf_timeout") == 1  # logged once, counted always


def test_rejected_transforms_are_counted_under_tf2_reasons_and_logged_once() -> None:
    problems: list[tuple[str, str]] = []
    pipe = _pipeline(problems)
    pipe.add_tf(TFMessage(transforms=[_ego_pose(T0 + 20 * S)]))
    stale = _ego_pose(0)  # a zero stamp from a second publisher
    far_off = _ego_pose(T0 + 21 * S)
    far_off.transform.rotation.z, far_off.transform.rotation.w = 0.7, 0.7  # |q|^2 = 0.98
    for _ in range(3):
        pipe.add_tf(TFMessage(transforms=[stale, far_off]))
    pipe.add_tf(TFMessage(transforms=[_ego_pose(T0 + 20 * S)]))  # the same stamp again
    counters = pipe.counters()
    assert counters["tf_old_data"] == 3 and counters["tf_denormalized_quaternion"] == 3
    assert counters["tf_repeated_data"] == 1
    logged = [reason for reason, _ in problems]
    assert sorted(logged) == ["tf_denormalized_quaternion", "tf_old_data", "tf_repeated_data"]
    assert "unit quaternion" in dict(problems)["tf_denormalized_quaternion"]
    assert pipe.tf.can_transform("map", "base_link", T0 + 20 * S)  # the history survived the stale message


def test_lidar_stamps_jumping_back_clear_tf_and_the_new_timeline_is_served() -> None:
    problems: list[tuple[str, str]] = []
    pipe = _pipeline(problems)
    _calibrate(pipe)
    first = _feed(pipe, _stream(2.0, 20.0, 100.0, 0.0, pipe.camera_names))
    # the bag loops: the same stream again, stamps back to T0
    second = _feed(pipe, _stream(2.0, 20.0, 100.0, 0.0, pipe.camera_names))
    assert pipe.counters().get("tf_time_jump") == 1
    assert len(second) >= len(first) - 3, pipe.counters()

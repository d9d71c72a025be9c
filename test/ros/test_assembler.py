"""FrameAssembler: FrameSet geometry (cameras in ego at the first camera's stamp, points in ego at
the LiDAR stamp; motion compensation checked on a static world seen from a moving, turning ego),
history selection, start-up and error kinds."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage

from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_core.config import load_config
from fusionocc_core.frame import FrameSet
from fusionocc_ros.assembler import AssemblyError, CameraImage, FrameAssembler, LidarSweep
from fusionocc_ros.conversions import ns_to_sec_nsec, xyzir_to_pointcloud2
from fusionocc_core.data.poses import invert
from fusionocc_ros.sync import LidarAnchoredSync, SyncedSet
from fusionocc_ros.tf_buffer import TfBuffer

S, MS = 1_000_000_000, 1_000_000
T0 = 1_700_000_000 * S
H, W = 18, 32
K = np.array([[20.0, 0, 16], [0, 20.0, 9], [0, 0, 1]])
# nuScenes key-frame camera stamps minus the (end-of-sweep) LiDAR stamp, CAMERA_NAMES order
# (FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_LEFT, BACK, BACK_RIGHT): every camera before the LiDAR
OFFSETS_MS = (-43, -35, -28, -1, -10, -20)
rng = np.random.default_rng(0)
WORLD = np.concatenate([rng.uniform(-30, 30, (300, 2)), rng.uniform(-1, 4, (300, 1))], axis=1)  # map frame


def pose(x=0.0, y=0.0, z=0.0, yaw=0.0, roll=0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [roll, 0, yaw]).as_matrix()
    T[:3, 3] = (x, y, z)
    return T


def ego_in_map(t_ns: int) -> np.ndarray:
    """The ego drives at 5 m/s along a curve (yaw rate 0.2 rad/s)."""
    s = (t_ns - T0) / S
    return pose(5.0 * s, 0.5 * s * s, 0.0, yaw=0.2 * s)


LIDAR_IN_EGO = pose(0.9, 0.0, 1.8, yaw=-np.pi / 2)
CAMS_IN_EGO = {c: pose(1.0, 0.0, 1.5, yaw=k * np.pi / 3) @ pose(roll=-np.pi / 2) @ pose(yaw=-np.pi / 2) for k, c in enumerate(CAMERA_NAMES)}


def frame_of(cam: str) -> str:
    return f"{cam.lower()}_optical"


def make_tf(until_s: float = 10.0, from_s: float = -1.0) -> TfBuffer:
    """Static extrinsics and 100 Hz ego poses from `from_s` (before T0: the cameras of a sweep at
    T0 are stamped up to 43 ms earlier) to `until_s` seconds after T0."""
    tf = TfBuffer(cache_time_s=12.0)
    tf.set_transform("base_link", "lidar_top", 0, LIDAR_IN_EGO, static=True)
    for cam, T in CAMS_IN_EGO.items():
        tf.set_transform("base_link", frame_of(cam), 0, T, static=True)
    for k in range(int(round(from_s * 100)), int(until_s * 100) + 1):  # ego poses at 100 Hz
        t = T0 + k * 10 * MS
        tf.set_transform("map", "base_link", t, ego_in_map(t))
    return tf


def sweep(t_ns: int, number: int) -> LidarSweep:
    """The static world seen by the LiDAR at t; intensity = sweep number, ring = point index."""
    T_lidar_map = invert(ego_in_map(t_ns) @ LIDAR_IN_EGO)
    xyz = WORLD @ T_lidar_map[:3, :3].T + T_lidar_map[:3, 3]
    pts = np.concatenate([xyz, np.full((len(WORLD), 1), number), np.arange(len(WORLD))[:, None]], axis=1)
    return LidarSweep(t_ns, "lidar_top", pts.astype(np.float32))


def keyframe(t_ns: int, number: int, offsets_ms=OFFSETS_MS) -> SyncedSet:
    stamps = tuple(t_ns + off * MS for off in offsets_ms)
    images = tuple(CameraImage(s, frame_of(c), np.full((H, W, 3), number % 256, np.uint8)) for c, s in zip(CAMERA_NAMES, stamps))
    return SyncedSet(t_ns, sweep(t_ns, number), stamps, images)


def assembler(tf: TfBuffer | None = None, **kwargs) -> FrameAssembler:
    asm = FrameAssembler(load_config("tiny"), tf if tf is not None else make_tf(), **kwargs)
    for cam in CAMERA_NAMES:
        asm.set_intrinsics(cam, K, (H, W))
    return asm


def world_in_ego(t_ns: int) -> np.ndarray:
    T = invert(ego_in_map(t_ns))
    return WORLD @ T[:3, :3].T + T[:3, 3]


def run_stream(asm: FrameAssembler, seconds: float, lidar_hz: int = 20) -> FrameSet:
    """20 Hz sweeps observed, key-frames every 0.5 s built; returns the last FrameSet."""
    step = S // lidar_hz
    frame = None
    for n in range(int(seconds * lidar_hz) + 1):
        t = T0 + n * step
        if n % (lidar_hz // 2) == 0:
            frame = asm.build(keyframe(t, n))
        else:
            asm.observe_lidar(t, sweep(t, n))
    return frame


def test_first_frame_has_no_history_and_correct_geometry():
    asm = assembler()
    t = T0 + 200 * MS
    fs = asm.build(keyframe(t, 4))
    assert fs.stamp_ns == t and fs.previous == [] and asm.last_history == (0, 0)
    assert fs.points.shape == (300, 5) and fs.points.dtype == np.float32
    np.testing.assert_array_equal(fs.points, fs.key_points)
    np.testing.assert_allclose(fs.key_points[:, :3], world_in_ego(t), atol=1e-3)
    cams = fs.cameras
    assert len(cams.images) == 6 and cams.images[0].shape == (H, W, 3)
    assert cams.intrinsics.shape == (6, 3, 3) and cams.sensor2ego.shape == (6, 4, 4)
    t_key = t + OFFSETS_MS[0] * MS  # the key ego frame: ego at CAM_FRONT_LEFT's stamp
    for k, cam in enumerate(CAMERA_NAMES):
        t_cam = t + OFFSETS_MS[k] * MS
        want = invert(ego_in_map(t_key)) @ ego_in_map(t_cam) @ CAMS_IN_EGO[cam]
        np.testing.assert_allclose(cams.sensor2ego[k], want, atol=1e-4)  # lerp of a curve at 100 Hz
    stamps = [t + off * MS for off in OFFSETS_MS]
    assert cams.stamp_ns == (sum(stamps) + 3) // 6  # the mean camera stamp, rounded
    np.testing.assert_allclose(fs.keyego2lidarego, invert(ego_in_map(t)) @ ego_in_map(t_key), atol=1e-4)


@pytest.mark.parametrize("lidar_minus_first_camera_ms", [40, -40])
def test_cameras_live_in_ego_at_the_first_camera_stamp(lidar_minus_first_camera_ms):
    """Camera and LiDAR stamps 40 ms apart on a moving, turning ego (nuScenes: CAM_FRONT_LEFT ~43 ms
    before the LiDAR stamp): the extrinsics are those of the ego pose at the first camera's stamp
    (BEVDet4D's key ego), for the previous frame too; points stay in ego at the LiDAR stamp."""
    offsets = tuple(-lidar_minus_first_camera_ms + 8 * k for k in range(6))  # FL first, then 8 ms apart
    asm = assembler()
    t_prev, t = T0 + 1000 * MS, T0 + 1500 * MS
    asm.build(keyframe(t_prev, 1, offsets))
    fs = asm.build(keyframe(t, 2, offsets))
    t_key = t + offsets[0] * MS
    key_from_map = invert(ego_in_map(t_key))  # the oracle: the ego pose at the first camera's stamp
    for k, cam in enumerate(CAMERA_NAMES):
        np.testing.assert_allclose(fs.cameras.sensor2ego[k], key_from_map @ ego_in_map(t + offsets[k] * MS) @ CAMS_IN_EGO[cam],
                                   atol=1e-4)
        np.testing.assert_allclose(fs.previous[0].sensor2ego[k],
                                   key_from_map @ ego_in_map(t_prev + offsets[k] * MS) @ CAMS_IN_EGO[cam], atol=1e-4)
        # the LiDAR-time convention would be off by the 40 ms of motion (~0.2 m at 5 m/s)
        lidar_time = invert(ego_in_map(t)) @ ego_in_map(t + offsets[k] * MS) @ CAMS_IN_EGO[cam]
        assert np.abs(fs.cameras.sensor2ego[k][:3, 3] - lidar_time[:3, 3]).max() > 0.15
    np.testing.assert_allclose(fs.key_points[:, :3], world_in_ego(t), atol=1e-3)
    np.testing.assert_allclose(fs.keyego2lidarego, invert(ego_in_map(t)) @ ego_in_map(t_key), atol=1e-4)
    # the cameras moved into ego at the LiDAR stamp (where key_points are, for the sparse depth)
    in_lidar_ego = fs.sensor2lidarego(fs.cameras.sensor2ego)
    for k, cam in enumerate(CAMERA_NAMES):
        np.testing.assert_allclose(in_lidar_ego[k], invert(ego_in_map(t)) @ ego_in_map(t + offsets[k] * MS) @ CAMS_IN_EGO[cam],
                                   atol=1e-4)


def test_history_after_a_few_seconds_is_motion_compensated_and_spaced_half_a_second():
    asm = assembler()
    fs = run_stream(asm, 4.0)  # last key-frame: sweep number 80 at 4.0 s
    t = fs.stamp_ns
    assert asm.last_history == (1, 7)
    assert fs.points.shape == (8 * 300, 5)
    numbers = fs.points[:, 3].reshape(8, 300)
    np.testing.assert_array_equal(numbers[:, 0], [80, 70, 60, 50, 40, 30, 20, 10])  # 0.5 s apart, newest first
    # a static world must land on the same ego coordinates from every sweep
    for block in fs.points[:, :3].reshape(8, 300, 3):
        np.testing.assert_allclose(block, world_in_ego(t), atol=2e-3)
    (prev,) = fs.previous
    assert prev.images[0][0, 0, 0] == 70  # the key-frame 0.5 s earlier
    t_key = t + OFFSETS_MS[0] * MS
    for k, cam in enumerate(CAMERA_NAMES):
        t_cam = t - 500 * MS + OFFSETS_MS[k] * MS
        want = invert(ego_in_map(t_key)) @ ego_in_map(t_cam) @ CAMS_IN_EGO[cam]
        np.testing.assert_allclose(prev.sensor2ego[k], want, atol=1e-4)


def test_key_frame_only_streams_work_the_same():
    asm = assembler()
    fs = run_stream(asm, 4.0, lidar_hz=2)
    np.testing.assert_array_equal(fs.points[:, 3].reshape(8, 300)[:, 0], [8, 7, 6, 5, 4, 3, 2, 1])
    assert asm.last_history == (1, 7)


def test_history_stops_at_the_first_gap():
    asm = assembler()
    for n, t in enumerate(T0 + np.arange(0, 2001, 500) * MS):
        if n != 2:  # the sweep at 1.0 s never arrived
            asm.observe_lidar(int(t), sweep(int(t), n))
    fs = asm.build(keyframe(T0 + 2500 * MS, 5))
    np.testing.assert_array_equal(fs.points[:, 3].reshape(-1, 300)[:, 0], [5, 4, 3])  # 2.5, 2.0, 1.5 s
    assert asm.last_history == (0, 2)


def test_without_a_fixed_frame_there_is_no_ego_motion_compensation():
    asm = assembler(fixed_frame=None)
    t = T0 + 1000 * MS
    asm.observe_lidar(t - 500 * MS, sweep(t - 500 * MS, 1))
    fs = asm.build(keyframe(t, 2))
    prev = fs.points[300:, :3]
    np.testing.assert_allclose(prev, sweep(t - 500 * MS, 1).points[:, :3] @ LIDAR_IN_EGO[:3, :3].T + LIDAR_IN_EGO[:3, 3], atol=1e-4)
    np.testing.assert_array_equal(fs.keyego2lidarego, np.eye(4))  # no odometry: one ego frame


def test_error_kinds():
    t = T0 + 1000 * MS
    asm = FrameAssembler(load_config("tiny"), make_tf())
    with pytest.raises(AssemblyError, match="no CameraInfo yet for CAM_FRONT_LEFT") as exc:
        asm.build(keyframe(t, 1))
    assert exc.value.kind == "missing_intrinsics" and asm.missing_intrinsics() == list(CAMERA_NAMES)

    late = assembler(make_tf(until_s=0.5))  # ego poses only up to 0.5 s
    with pytest.raises(AssemblyError, match="after the newest") as exc:
        late.build(keyframe(t, 1))
    assert exc.value.kind == "missing_tf"

    asm = assembler()
    bad = keyframe(t, 1)
    bad = SyncedSet(t, bad.lidar, bad.camera_stamps_ns, (CameraImage(t, "nowhere", bad.cameras[0].image), *bad.cameras[1:]))
    with pytest.raises(AssemblyError, match="'nowhere'") as exc:
        asm.build(bad)
    assert exc.value.kind == "missing_tf"

    small = keyframe(t + S, 2)
    small = SyncedSet(small.lidar_stamp_ns, small.lidar, small.camera_stamps_ns,
                      (*small.cameras[:5], CameraImage(small.camera_stamps_ns[5], frame_of("CAM_BACK_RIGHT"), np.zeros((9, 16, 3), np.uint8))))
    with pytest.raises(AssemblyError, match=r"CAM_BACK_RIGHT: image \(9, 16\) differs") as exc:
        asm.build(small)
    assert exc.value.kind == "image_size"

    with pytest.raises(KeyError):
        asm.set_intrinsics("CAM_TOP", K)


def ros_messages(t_ns: int, number: int):
    """(PointCloud2, [CompressedImage]) as a bag or a driver would deliver them."""
    cloud = xyzir_to_pointcloud2(sweep(t_ns, number).points, t_ns, "lidar_top")
    images = []
    for cam, off in zip(CAMERA_NAMES, OFFSETS_MS):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0] = 200  # red, to catch a BGR/RGB mix-up
        msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", img[..., ::-1])[1].tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nsec(t_ns + off * MS)
        msg.header.frame_id = frame_of(cam)
        images.append(msg)
    return cloud, images


def test_ros_messages_through_the_synchronizer_and_assembler():
    """The node's path: raw messages -> sync -> lazy decode in build(); corrupt data -> bad_input."""
    asm = FrameAssembler(load_config("tiny"), make_tf())
    for cam in CAMERA_NAMES:
        info = CameraInfo(height=H, width=W, k=K.reshape(-1).tolist())
        asm.set_camera_info(cam, info)
    sync = LidarAnchoredSync(CAMERA_NAMES)
    frames = []
    for n in range(6):  # the first sweep at T0: its cameras (and so the key ego pose) are earlier
        t = T0 + n * 500 * MS
        cloud, images = ros_messages(t, n)
        if n == 4:
            images[2].data = images[2].data[:40]  # truncated JPEG
        sets = []
        for cam, msg in zip(CAMERA_NAMES, images):  # in stamp order: the cameras come first
            sets += sync.add_camera(cam, msg.header.stamp.sec * S + msg.header.stamp.nanosec, msg)
        sets += sync.add_lidar(t, cloud)
        for s in sets:
            try:
                frames.append(asm.build(s))
            except AssemblyError as exc:
                assert exc.kind == "bad_input" and "CompressedImage" in str(exc)
                frames.append(None)
    assert [f is None for f in frames] == [False, False, False, False, True, False]
    last = frames[-1]
    assert abs(int(last.cameras.images[1][..., 0].mean()) - 200) < 4 and last.cameras.images[1][..., 2].max() < 10
    assert asm.last_history == (0, 5)  # 0.5 s back is the corrupt set: no previous images; sweeps to the start
    np.testing.assert_allclose(last.points[:, :3].reshape(-1, 300, 3)[-1], world_in_ego(last.stamp_ns), atol=2e-3)


def test_history_restarts_when_time_jumps_back():
    """A looping bag: the old timeline's history must not block the new one's."""
    asm = assembler()
    run_stream(asm, 4.0, lidar_hz=2)
    assert asm.last_history == (1, 7)
    fs = asm.build(keyframe(T0 + 500 * MS, 101))  # back to 0.5 s (older than every horizon)
    assert asm.last_history == (0, 0) and fs.previous == []
    fs = asm.build(keyframe(T0 + 1000 * MS, 102))
    assert asm.last_history == (1, 1)
    np.testing.assert_array_equal(fs.points[:, 3].reshape(-1, 300)[:, 0], [102, 101])


def test_merged_clouds_map_xyz_keep_attributes_and_keep_a_bad_point_to_itself() -> None:
    # the sweeps' merge (one small GEMM per cloud) against the per-point formula R p + t
    from fusionocc_ros.rigid import merge_clouds

    r = np.random.default_rng(7)
    clouds = [(pose(x=1.5, y=-2.0, z=0.3, yaw=0.7, roll=0.1), r.normal(0, 20, (50, 5)).astype(np.float32)),
              (pose(x=-4.0, yaw=-2.9), np.zeros((0, 5), np.float32)),
              (pose(y=9.0, yaw=1.2), r.normal(0, 20, (30, 5)).astype(np.float32))]
    clouds[2][1][4, 0] = np.nan  # a bad point poisons only itself (dropped downstream)
    merged = merge_clouds(clouds)
    assert merged.shape == (80, 5) and merged.dtype == np.float32
    expected = np.concatenate([np.concatenate([p[:, :3] @ T[:3, :3].T + T[:3, 3], p[:, 3:]], axis=1) for T, p in clouds])
    bad = 50 + 0 + 4  # the third cloud's fifth row
    good = np.arange(80) != bad
    np.testing.assert_allclose(merged[good], expected[good], rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(merged[good, 3:], expected[good, 3:])  # attributes copied exactly
    assert np.isnan(merged[bad, :3]).all()

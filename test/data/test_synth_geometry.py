"""The synthetic world's sensors agree with each other through the *written* calibration:
LiDAR points of a car project (devkit chain lidar -> ego -> global -> ego(cam) -> cam) onto
pixels rendered as that car; lidarseg labels match the annotated boxes; Occ3D semantics match
the labels of the points inside each voxel; sweeps follow the nuScenes rates and offsets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box, transform_matrix
from pyquaternion import Quaternion

from fusionocc_core.classes import CAMERA_NAMES, FREE_LABEL, GRID_LOWER, GRID_SHAPE, VOXEL_SIZE
from fusionocc_synth import generate, scene_world
from fusionocc_synth.camera import CameraRenderer
from fusionocc_synth.categories import LIDARSEG_INDEX, LIDARSEG_TO_OCC
from fusionocc_synth.rig import CAMERA_CALIBRATIONS, CAMERA_TRIGGER_OFFSET_US

SEED, KEYFRAMES = 11, 2
REPO = Path(__file__).resolve().parents[2]
# nuScenes-mini scene-0061's first sample: key-frame camera stamp minus LIDAR_TOP stamp, in µs
SCENE_0061_OFFSETS_US = {"CAM_FRONT_LEFT": -43_107, "CAM_FRONT": -35_491, "CAM_FRONT_RIGHT": -27_612,
                         "CAM_BACK_RIGHT": -20_058, "CAM_BACK": -10_426, "CAM_BACK_LEFT": -528}
CAR = LIDARSEG_INDEX["vehicle.car"]


@pytest.fixture(scope="module")
def nusc(tmp_path_factory: pytest.TempPathFactory) -> NuScenes:
    root = generate(tmp_path_factory.mktemp("synth_geo") / "nusc", scenes=1, keyframes=KEYFRAMES, seed=SEED,
                    sweeps=True)
    return NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)


def _pose(rec: dict) -> np.ndarray:
    return transform_matrix(rec["translation"], Quaternion(rec["rotation"]))


def _lidar(nusc: NuScenes, sample: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pts = LidarPointCloud.from_file(nusc.get_sample_data_path(sd["token"])).points  # (4, P) lidar frame
    labels = np.fromfile(Path(nusc.dataroot) / nusc.get("lidarseg", sd["token"])["filename"], np.uint8)
    return sd, pts, labels


def test_points_in_car_boxes_are_car(nusc: NuScenes) -> None:
    checked = 0
    for sample in nusc.sample:
        sd, pts, labels = _lidar(nusc, sample)
        _, boxes, _ = nusc.get_sample_data(sd["token"])  # boxes in the LiDAR frame
        for box in boxes:
            inside = points_in_box(box, pts[:3])
            if box.name == "vehicle.car" and inside.sum() >= 5:
                assert (labels[inside] == CAR).mean() > 0.98, box
                checked += 1
    assert checked >= 3


def test_car_points_project_onto_car_pixels(nusc: NuScenes) -> None:
    sample = nusc.sample[0]
    sd, pts, labels = _lidar(nusc, sample)
    start_us = nusc.get("sample", nusc.scene[0]["first_sample_token"])["timestamp"]
    world = scene_world(SEED, 0, KEYFRAMES)
    car = labels == CAR
    lidar2global = _pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ _pose(
        nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
    p_global = lidar2global[:3, :3] @ pts[:3, car] + lidar2global[:3, 3:4]
    hits = total = 0
    for cam in CAMERA_NAMES:
        csd = nusc.get("sample_data", sample["data"][cam])
        cs = nusc.get("calibrated_sensor", csd["calibrated_sensor_token"])
        global2cam = np.linalg.inv(_pose(nusc.get("ego_pose", csd["ego_pose_token"])) @ _pose(cs))
        p_cam = global2cam[:3, :3] @ p_global + global2cam[:3, 3:4]
        front = p_cam[2] > 1.0
        uv = np.array(cs["camera_intrinsic"]) @ p_cam[:, front]
        u, v = uv[0] / uv[2], uv[1] / uv[2]
        inimg = (u >= 0) & (u < 1600) & (v >= 0) & (v < 900)
        if not inimg.any():
            continue
        render = CameraRenderer(CAMERA_CALIBRATIONS[cam], scale=0.5).render(world, (csd["timestamp"] - start_us) * 1e-6)
        lab = render.label[(v[inimg] * 0.5).astype(int), (u[inimg] * 0.5).astype(int)]
        hits += int((lab == CAR).sum())
        total += int(inimg.sum())
    assert total > 200
    assert hits / total > 0.9, hits / total


def test_jpeg_pixels_follow_the_render(nusc: NuScenes) -> None:
    import cv2
    sample = nusc.sample[0]
    csd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    start_us = nusc.get("sample", nusc.scene[0]["first_sample_token"])["timestamp"]
    render = CameraRenderer(CAMERA_CALIBRATIONS["CAM_FRONT"], scale=0.5).render(
        scene_world(SEED, 0, KEYFRAMES), (csd["timestamp"] - start_us) * 1e-6)
    jpeg = cv2.imread(nusc.get_sample_data_path(csd["token"]))[..., ::-1].astype(float)
    assert jpeg.shape == (900, 1600, 3)
    assert np.abs(jpeg - render.rgb).mean() < 6.0
    sky = cv2.resize((render.label == 255).astype(np.uint8), (1600, 900), interpolation=cv2.INTER_NEAREST) > 0
    road = cv2.resize((render.label == LIDARSEG_INDEX["flat.driveable_surface"]).astype(np.uint8), (1600, 900),
                      interpolation=cv2.INTER_NEAREST) > 0
    assert sky.mean() > 0.05 and road.mean() > 0.05
    assert jpeg[sky, 2].mean() > jpeg[road, 2].mean() + 40  # the sky is bluer and brighter than asphalt


def test_occ3d_agrees_with_lidarseg(nusc: NuScenes) -> None:
    lower, shape = np.array(GRID_LOWER), np.array(GRID_SHAPE)
    for sample in nusc.sample:
        sd, pts, labels = _lidar(nusc, sample)
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        p_ego = _pose(cs)[:3, :3] @ pts[:3] + _pose(cs)[:3, 3:4]
        ijk = np.floor((p_ego.T - lower) / VOXEL_SIZE).astype(int)
        ok = ((ijk >= 0) & (ijk < shape)).all(1)
        flat = np.ravel_multi_index(ijk[ok].T, GRID_SHAPE)
        occ = LIDARSEG_TO_OCC[labels[ok]].astype(np.int64)
        counts = np.zeros((int(np.prod(GRID_SHAPE)), 17), np.int32)
        np.add.at(counts, (flat, occ), 1)
        gt = np.load(Path(nusc.dataroot) / "gts" / nusc.scene[0]["name"] / sample["token"] / "labels.npz")
        sem = gt["semantics"].reshape(-1)
        with_pts = np.flatnonzero(counts.sum(1) > 0)
        occupied = with_pts[sem[with_pts] != FREE_LABEL]
        agree = (counts[occupied].argmax(1) == sem[occupied]).mean()
        assert len(occupied) > 1000 and agree >= 0.95, agree
        # every voxel holding a point was observed by the LiDAR
        assert gt["mask_lidar"].reshape(-1)[with_pts].all()
        # the camera mask covers most of the point-holding voxels in front of the car, not the sky
        cam = gt["mask_camera"]
        assert 0.02 < cam.mean() < 0.5 and cam[:, :, -1].mean() < cam[:, :, 2].mean()


def test_sweep_rates_and_offsets(nusc: NuScenes) -> None:
    scene = nusc.scene[0]
    first = nusc.get("sample", scene["first_sample_token"])
    lidar = [nusc.get("sample_data", first["data"]["LIDAR_TOP"])]
    while lidar[-1]["next"]:
        lidar.append(nusc.get("sample_data", lidar[-1]["next"]))
    stamps = np.array([r["timestamp"] for r in lidar])
    assert len(lidar) == (KEYFRAMES - 1) * 10 + 1 and (np.diff(stamps) == 50_000).all()
    assert [r["is_key_frame"] for r in lidar] == [i % 10 == 0 for i in range(len(lidar))]
    assert all(r["filename"].startswith("sweeps/") for r in lidar if not r["is_key_frame"])
    pc, times = LidarPointCloud.from_file_multisweep(nusc, nusc.get("sample", scene["last_sample_token"]),
                                                     "LIDAR_TOP", "LIDAR_TOP", nsweeps=5)
    assert pc.points.shape[1] > 4 * 25_000 and len(np.unique(times)) == 5
    for cam in CAMERA_NAMES:
        recs = [nusc.get("sample_data", first["data"][cam])]
        while recs[-1]["next"]:
            recs.append(nusc.get("sample_data", recs[-1]["next"]))
        ts = np.array([r["timestamp"] for r in recs])
        assert len(recs) == (KEYFRAMES - 1) * 6 + 1
        assert np.abs(np.diff(ts) - 1e6 / 12).max() <= 1  # 12 Hz
        assert ts[0] - first["timestamp"] == CAMERA_TRIGGER_OFFSET_US[cam]
        assert [r["is_key_frame"] for r in recs] == [i % 6 == 0 for i in range(len(recs))]
        assert recs[0]["prev"] == "" and recs[0]["token"] == first["data"][cam]  # the chain starts at the key frame
    # one ego pose per sample_data, and the ego keeps moving between sweeps
    poses = np.array([nusc.get("ego_pose", r["ego_pose_token"])["translation"] for r in lidar])
    assert (np.linalg.norm(np.diff(poses, axis=0), axis=1) > 0.05).all()


def test_key_frame_images_lie_before_the_lidar_stamp_as_in_nuscenes(nusc: NuScenes) -> None:
    """nuScenes stamps LIDAR_TOP at the end of its rotation and triggers each camera during it: the
    generator's key-frame images lie 0.5-43 ms before the sample's LiDAR stamp (scene-0061's
    offsets, to 0.1 ms), each with its own ego pose (also before the scene's first sweep), and
    each is the one frame of its camera in the node's default sync window."""
    sync = yaml.safe_load((REPO / "config" / "occ_node.yaml").read_text())["/**"]["ros__parameters"]["sync"]
    lo, hi = -sync["window_before_s"] * 1e6, sync["window_after_s"] * 1e6
    cams_by_channel: dict[str, list[dict]] = {}
    for sd in nusc.sample_data:
        cams_by_channel.setdefault(sd["channel"], []).append(sd)
    first_lidar = min(r["timestamp"] for r in cams_by_channel["LIDAR_TOP"])
    for sample in nusc.sample:
        t = sample["timestamp"]
        for cam in CAMERA_NAMES:
            sd = nusc.get("sample_data", sample["data"][cam])
            offset = sd["timestamp"] - t
            assert offset == CAMERA_TRIGGER_OFFSET_US[cam] < 0
            assert abs(offset - SCENE_0061_OFFSETS_US[cam]) <= 100
            assert nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"] == sd["timestamp"]
            in_window = [r["token"] for r in cams_by_channel[cam] if lo <= r["timestamp"] - t <= hi]
            assert in_window == [sd["token"]]
    first_cams = [nusc.get("sample_data", nusc.sample[0]["data"][cam]) for cam in CAMERA_NAMES]
    assert nusc.sample[0]["timestamp"] == first_lidar and all(sd["timestamp"] < first_lidar for sd in first_cams)
    # the ego pose before the first sweep continues the trajectory (no jump, no default pose)
    poses = {r["timestamp"]: _pose(r) for r in nusc.ego_pose}
    fl = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT_LEFT"])["timestamp"]
    step = np.linalg.norm(poses[first_lidar][:3, 3] - poses[fl][:3, 3])
    assert 0.0 < step < 1.0  # 43 ms of driving

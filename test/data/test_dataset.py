"""OccDataset + collate: the batch contract, temporal frames, LiDAR sweeps, sparse depth, seg labels,
augmentation consistency between images/points/matrices/labels, and bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.utils.geometry_utils import transform_matrix
from pyquaternion import Quaternion

import nusc_fixture as F
from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_core.config import load_config
from fusionocc_core.data import prepare
from fusionocc_core.data import transforms as T
from fusionocc_core.data.dataset import OccDataset, collate
from fusionocc_core.data.io import DataError

CFG = load_config("tiny")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nusc")
    F.make_root(path, scenes=2, keyframes=3, points=600)
    prepare.write_infos(prepare.create_infos(path, "v1.0-mini", progress=False), path / "infos.pkl")
    return path


def sweep_to_global(root: Path, info: dict) -> np.ndarray:
    """Independent (devkit/pyquaternion) lidar -> global of one info's sweep: (P, 3)."""
    pts = np.fromfile(root / info["lidar_path"], np.float32).reshape(-1, 5)
    m = (transform_matrix(info["ego2global_translation"], Quaternion(info["ego2global_rotation"]))
         @ transform_matrix(info["lidar2ego_translation"], Quaternion(info["lidar2ego_rotation"])))
    return pts[:, :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]


def global_to_ego(info: dict, xyz: np.ndarray) -> np.ndarray:
    m = transform_matrix(info["ego2global_translation"], Quaternion(info["ego2global_rotation"]), inverse=True)
    return xyz @ m[:3, :3].T + m[:3, 3]


def cam_to_global(c: dict) -> np.ndarray:
    """Independent (devkit/pyquaternion) camera -> global of one info camera entry (its own ego pose)."""
    return (transform_matrix(c["ego2global_translation"], Quaternion(c["ego2global_rotation"]))
            @ transform_matrix(c["sensor2ego_translation"], Quaternion(c["sensor2ego_rotation"])))


def lidarego_from_keyego(info: dict) -> np.ndarray:
    """Ego at the first camera's (CAM_FRONT_LEFT) stamp -> ego at the LiDAR stamp, (4, 4)."""
    fl = info["cams"][CAMERA_NAMES[0]]
    return (transform_matrix(info["ego2global_translation"], Quaternion(info["ego2global_rotation"]), inverse=True)
            @ transform_matrix(fl["ego2global_translation"], Quaternion(fl["ego2global_rotation"])))


def test_batch_contract(root: Path) -> None:
    """Keys, shapes and dtypes of fusionocc_core.frame's batch dict, train and test."""
    for train in (False, True):
        ds = OccDataset(root / "infos.pkl", root, CFG, train=train)
        assert len(ds) == 6
        b = collate([ds[0], ds[4]])
        h, w = CFG.data.input_size
        t = 1 + CFG.data.num_adj_img_frames
        assert b["imgs"].shape == (2, t, 6, 3, h, w) and b["imgs"].dtype == torch.float32
        assert b["intrins"].shape == (2, t, 6, 3, 3)
        assert b["sensor2ego"].shape == (2, t, 6, 4, 4)
        assert b["post_rots"].shape == (2, t, 6, 3, 3) and b["post_trans"].shape == (2, t, 6, 3)
        assert b["bda"].shape == (2, 3, 3)
        assert isinstance(b["points"], list) and len(b["points"]) == 2
        assert all(p.ndim == 2 and p.shape[1] == 5 and p.dtype == torch.float32 for p in b["points"])
        assert b["sparse_depth"].shape == (2, 6, h, w) and b["sparse_depth"].dtype == torch.float32
        assert b["voxel_semantics"].shape == (2, 200, 200, 16) and b["voxel_semantics"].dtype == torch.int64
        assert b["mask_camera"].dtype == torch.bool and b["mask_lidar"].dtype == torch.bool
        assert b["seg_labels"].shape == (2, 6, h, w) and b["seg_labels"].dtype == torch.int64
        assert b["sample_tokens"] == [ds.infos[0]["token"], ds.infos[4]["token"]]
        assert torch.isfinite(b["imgs"]).all() and b["imgs"].abs().max() > 0.5
        # the same augmentation for every frame of a camera
        torch.testing.assert_close(b["post_rots"][:, 0], b["post_rots"][:, 1])
        torch.testing.assert_close(b["post_trans"][:, 0], b["post_trans"][:, 1])


def test_test_transform_is_deterministic_and_official(root: Path) -> None:
    ds = OccDataset(root / "infos.pkl", root, "tiny", train=False)
    a, b = ds[2], ds[2]
    for k in ("imgs", "points", "sparse_depth", "seg_labels"):
        torch.testing.assert_close(a[k], b[k])
    aug = T.eval_image_aug((900, 1600), CFG.data.input_size)
    rot, tran = T.image_aug_matrices(aug)
    torch.testing.assert_close(a["post_rots"][0, 0], torch.from_numpy(rot))
    torch.testing.assert_close(a["post_trans"][0, 0], torch.from_numpy(tran))
    torch.testing.assert_close(a["bda"], torch.eye(3))


def test_temporal_frames_and_scene_start(root: Path) -> None:
    ds = OccDataset(root / "infos.pkl", root, CFG, train=False)
    first, second = ds[0], ds[1]  # scene start, then its successor
    # at a scene start the previous frame is the current one
    torch.testing.assert_close(first["imgs"][1], first["imgs"][0])
    torch.testing.assert_close(first["sensor2ego"][1], first["sensor2ego"][0])
    # otherwise the previous key-frame's images, with its cameras expressed in the *current* key ego
    # frame (ego at the current CAM_FRONT_LEFT stamp), each camera with the ego pose of its own stamp
    torch.testing.assert_close(second["imgs"][1], first["imgs"][0])
    prev, cur = ds.infos[0], ds.infos[1]
    fl = cur["cams"][CAMERA_NAMES[0]]
    global2key = transform_matrix(fl["ego2global_translation"], Quaternion(fl["ego2global_rotation"]), inverse=True)
    for n, cam in enumerate(CAMERA_NAMES):
        np.testing.assert_allclose(second["sensor2ego"][1, n].numpy(), global2key @ cam_to_global(prev["cams"][cam]), atol=1e-4)
        np.testing.assert_allclose(second["sensor2ego"][0, n].numpy(), global2key @ cam_to_global(cur["cams"][cam]), atol=1e-4)
    # the key frame's cameras: ego at the camera stamp -> ego at the first camera's stamp (the ego moves
    # 40 m/s in the fixture, so this is not the static calibration)
    calib = transform_matrix(cur["cams"]["CAM_BACK"]["sensor2ego_translation"],
                             Quaternion(cur["cams"]["CAM_BACK"]["sensor2ego_rotation"]))
    assert np.abs(second["sensor2ego"][0, 4].numpy() - calib).max() > 0.5


def test_cameras_in_ego_at_the_first_camera_stamp(tmp_path: Path) -> None:
    """Cameras 40 ms before the LiDAR on a moving ego (nuScenes: CAM_FRONT_LEFT ~43 ms before): every
    camera of every frame is in the ego frame of the ego pose at the key frame's first camera stamp
    (BEVDet4D's prepare_inputs), read here straight from the devkit's tables; points, ground truth
    and the sparse depth stay in the ego frame at the LiDAR stamp."""
    from nuscenes.nuscenes import NuScenes

    F.make_root(tmp_path, scenes=1, keyframes=2, points=600, first_camera_offset_us=-40_000)
    prepare.write_infos(prepare.create_infos(tmp_path, "v1.0-mini", progress=False), tmp_path / "infos.pkl")
    ds = OccDataset(tmp_path / "infos.pkl", tmp_path, CFG, train=False)
    nusc = NuScenes("v1.0-mini", str(tmp_path), verbose=False)

    def pose_of(sample_token: str, channel: str) -> tuple[int, np.ndarray]:
        sd = nusc.get("sample_data", nusc.get("sample", sample_token)["data"][channel])
        ep = nusc.get("ego_pose", sd["ego_pose_token"])
        return sd["timestamp"], transform_matrix(ep["translation"], Quaternion(ep["rotation"]))

    def calib_of(sample_token: str, channel: str) -> np.ndarray:
        sd = nusc.get("sample_data", nusc.get("sample", sample_token)["data"][channel])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        return transform_matrix(cs["translation"], Quaternion(cs["rotation"]))

    s = ds[1]
    cur, prev = ds.infos[1]["token"], ds.infos[0]["token"]
    t_lidar, lidar_pose = pose_of(cur, "LIDAR_TOP")
    t_key, key_pose = pose_of(cur, "CAM_FRONT_LEFT")
    assert t_lidar - t_key == 40_000  # µs
    xyz = global_to_ego(ds.infos[1], sweep_to_global(tmp_path, ds.infos[1]))  # current sweep, LiDAR ego
    for t, token in enumerate((cur, prev)):
        for n, cam in enumerate(CAMERA_NAMES):
            want = np.linalg.inv(key_pose) @ pose_of(token, cam)[1] @ calib_of(token, cam)
            np.testing.assert_allclose(s["sensor2ego"][t, n].numpy(), want, atol=1e-4)
    # the LiDAR-time convention would be 1.6 m off (40 m/s x 40 ms)
    lidar_time = np.linalg.inv(lidar_pose) @ pose_of(cur, "CAM_FRONT")[1] @ calib_of(cur, "CAM_FRONT")
    assert np.abs(s["sensor2ego"][0, 1, :3, 3].numpy() - lidar_time[:3, 3]).max() > 1.0
    # sparse depth: each LiDAR-ego point through its camera's pose at the camera's own stamp
    h, w = CFG.data.input_size
    for n, cam in enumerate(CAMERA_NAMES):
        cam_in_lidarego = np.linalg.inv(lidar_pose) @ pose_of(cur, cam)[1] @ calib_of(cur, cam)
        want = T.sparse_depth_map(xyz, cam_in_lidarego, s["intrins"][0, n].double().numpy(), s["post_rots"][0, n].numpy(),
                                  s["post_trans"][0, n].numpy(), (h, w), (1.0, 45.0))
        np.testing.assert_allclose(s["sparse_depth"][n].numpy(), want, rtol=1e-4, atol=1e-4)
    assert (s["sparse_depth"] > 0).sum() > 100


def test_lidar_sweeps_in_the_key_ego_frame(root: Path) -> None:
    """Current + 7 previous key-frame sweeps (current repeated past the scene start), each moved
    lidar -> ego -> global -> key ego; range filter fixed to the grid."""
    ds = OccDataset(root / "infos.pkl", root, CFG, train=False)
    i = 2  # third sample: history = samples 1, 0, then the current one 5 times
    sample = ds[i]
    cur = ds.infos[i]
    history = [ds.infos[i], ds.infos[1], ds.infos[0]] + [ds.infos[i]] * 5
    expected = np.concatenate([global_to_ego(cur, sweep_to_global(root, s)) for s in history])
    lo, hi = np.array([-40, -40, -1.0]) + 1e-3, np.array([40, 40, 5.4]) - 1e-3
    expected = expected[np.all((expected >= lo) & (expected <= hi), axis=1)]
    got = sample["points"].numpy()
    assert got.shape == (len(expected), 5)
    np.testing.assert_allclose(got[:, :3], expected, atol=2e-3)
    # the car cluster of an older sweep moved relative to the current ego (the ego drives forward)
    old = global_to_ego(cur, sweep_to_global(root, ds.infos[0]))
    assert np.median(old[:600 // 4, 0]) < 10.0 - 3.0


def test_official_subsampling_and_range(root: Path) -> None:
    cfg = load_config("tiny")
    cfg.data.lidar_keep_prob = 0.2
    cfg.data.num_lidar_sweeps = 1
    ds = OccDataset(root / "infos.pkl", root, cfg, train=True)
    raw = np.fromfile(root / ds.infos[0]["lidar_path"], np.float32).reshape(-1, 5)
    torch.manual_seed(0)
    kept = torch.cat([ds[0]["points"] for _ in range(20)]).numpy()
    high_raw, low_raw = (raw[:, 4] > 16).sum(), (raw[:, 4] <= 16).sum()
    assert (kept[:, 4] > 16).sum() == 20 * high_raw  # rings above 16 always kept
    assert 0.15 < (kept[:, 4] <= 16).sum() / (20 * low_raw) < 0.25  # the rest with p = 0.2
    # a point outside the grid is dropped by the fixed range filter on every call
    assert np.all(np.abs(kept[:, :2]) < 40) and np.all(kept[:, 2] > -1) and np.all(kept[:, 2] < 5.4)


def test_predictor_gets_the_same_points_and_images_as_the_dataset(root: Path) -> None:
    # One test-time input path: the same raw sweep and images through OccDataset(train=False) and
    # through Predictor.make_batch (a FrameSet as the ROS node builds it) give the same network input.
    from PIL import Image

    from fusionocc_core.frame import CameraFrame, FrameSet
    from fusionocc_core.predictor import Predictor

    cfg = load_config("tiny")
    cfg.data.lidar_keep_prob = 0.2
    cfg.data.num_lidar_sweeps = 1
    cfg.data.num_adj_img_frames = 0
    ds = OccDataset(root / "infos.pkl", root, cfg, train=False)
    i = 1
    info = ds.infos[i]
    sample = ds[i]
    raw = np.fromfile(root / info["lidar_path"], np.float32).reshape(-1, 5).copy()
    raw[:, :3] = global_to_ego(info, sweep_to_global(root, info))
    images = [np.asarray(Image.open(root / info["cams"][c]["data_path"]).convert("RGB")) for c in CAMERA_NAMES]
    cams = CameraFrame(images, sample["intrins"][0].numpy(), sample["sensor2ego"][0].numpy(), stamp_ns=1)
    batch, _ = Predictor(cfg, seed=i).make_batch(FrameSet(2, cams, [], raw, raw, keyego2lidarego=lidarego_from_keyego(info)))
    got = batch["points"][0].numpy()
    assert got.shape == sample["points"].shape  # the same points survive thinning with the same seed
    np.testing.assert_allclose(got, sample["points"].numpy(), atol=2e-3)
    assert (got[:, 4] <= 16).sum() < 0.3 * (raw[:, 4] <= 16).sum()  # thinned, not the full cloud
    # the images: the dataset decodes JPEGs with OpenCV, PIL may round the IDCT differently
    diff = (batch["imgs"][0, 0] - sample["imgs"][0]).abs() * torch.from_numpy(T.IMG_STD).view(3, 1, 1)
    assert float(diff.max()) <= 3.0 and float(diff.mean()) < 0.2
    torch.testing.assert_close(batch["post_rots"][0, 0], sample["post_rots"][0])
    # sparse depth: the key sweep through the cameras moved into the LiDAR-time ego frame, both paths
    assert float((batch["sparse_depth"][0].cpu() > 0).sum()) > 0
    torch.testing.assert_close(batch["sparse_depth"][0].cpu(), sample["sparse_depth"], rtol=0, atol=2e-3)


def test_sparse_depth_from_the_current_sweep(root: Path) -> None:
    ds = OccDataset(root / "infos.pkl", root, CFG, train=True)
    torch.manual_seed(1)
    s = ds[2]
    cur = ds.infos[2]
    xyz = global_to_ego(cur, sweep_to_global(root, cur))  # current sweep only, LiDAR ego frame
    h, w = CFG.data.input_size
    for n in range(6):
        cam_in_lidarego = lidarego_from_keyego(cur) @ s["sensor2ego"][0, n].double().numpy()
        expected = T.sparse_depth_map(xyz, cam_in_lidarego, s["intrins"][0, n].double().numpy(),
                                      s["post_rots"][0, n].numpy(), s["post_trans"][0, n].numpy(), (h, w), (1.0, 45.0))
        np.testing.assert_allclose(s["sparse_depth"][n].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert (s["sparse_depth"] > 0).sum() > 100


def project_px(p_ego: np.ndarray, s: dict, n: int, info: dict) -> np.ndarray:
    """LiDAR-ego points (P, 3) -> augmented pixel coordinates (P, 2) and depth (P,) for camera n, key frame."""
    s2e = lidarego_from_keyego(info) @ s["sensor2ego"][0, n].double().numpy()
    k = s["intrins"][0, n].double().numpy()
    cam = (p_ego - s2e[:3, 3]) @ s2e[:3, :3]
    uv = cam @ k.T
    uv = uv[:, :2] / uv[:, 2:]
    uv = uv @ s["post_rots"][0, n, :2, :2].double().numpy().T + s["post_trans"][0, n, :2].double().numpy()
    return np.concatenate([uv, cam[:, 2:]], axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_train_augmentation_keeps_labels_on_their_points(root: Path, seed: int) -> None:
    """Under random image aug and BEV flips: (1) the seg label at the pixel where a car point
    projects (through sensor2ego, K, post_rot/post_tran) is car; (2) every LiDAR point's voxel in the
    flipped Occ3D grid carries the point's class (car above the ground, driveable surface on it);
    (3) the bda in the batch is the flip the points and the grid received."""
    ds = OccDataset(root / "infos.pkl", root, CFG, train=True)
    torch.manual_seed(seed)
    s = ds[0]  # scene start: all 8 sweeps are the current one, so every point matches the gts
    bda = s["bda"].double().numpy()
    pts = s["points"][:, :3].double().numpy()
    idx = np.floor((pts - [-40.0, -40.0, -1.0]) / 0.4).astype(int)
    labels = s["voxel_semantics"].numpy()[idx[:, 0], idx[:, 1], idx[:, 2]]
    is_car = pts[:, 2] > 0.3
    assert is_car.sum() > 50 and (~is_car).sum() > 50
    np.testing.assert_array_equal(labels[is_car], 4)
    np.testing.assert_array_equal(labels[~is_car], 11)
    # un-flipped, the car cluster is ahead-left of the ego at x 9..11, y 1..3
    unflipped = pts[is_car] @ bda  # bda is its own inverse (a diagonal of +-1)
    assert np.all((unflipped[:, 0] > 8.9) & (unflipped[:, 0] < 11.1))
    assert np.all((unflipped[:, 1] > 0.9) & (unflipped[:, 1] < 3.1))
    # seg labels: car points, projected into CAM_FRONT through the batch matrices (pre-bda ego)
    n = CAMERA_NAMES.index("CAM_FRONT")
    uvd = project_px(unflipped, s, n, ds.infos[0])
    h, w = CFG.data.input_size
    px = np.rint(uvd[:, :2]).astype(int)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    assert inside.sum() > 20
    seg = s["seg_labels"][n].numpy()
    hit = seg[px[inside, 1], px[inside, 0]]
    # the fixture's car is sparse (one point per ~300 px^2), so a few pixels fall between boxes (17)
    assert np.mean(hit != 17) > 0.7
    assert np.mean(hit[hit != 17] == 4) > 0.95
    # and the sparse depth at each of those pixels is that point's depth or a nearer one's
    d = s["sparse_depth"][n].numpy()[px[inside, 1], px[inside, 0]]
    own = uvd[inside, 2]
    assert np.all((d > 0) & (d <= own + 1e-3))
    assert np.mean(np.isclose(d, own, atol=1e-3)) > 0.5


def test_all_bev_flips_occur(root: Path) -> None:
    ds = OccDataset(root / "infos.pkl", root, CFG, train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        s = ds[1]
        seen.add((float(s["bda"][0, 0]), float(s["bda"][1, 1])))
    assert seen == {(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)}


def test_official_preset_sample(root: Path) -> None:
    cfg = load_config("official")
    ds = OccDataset(root / "infos.pkl", root, cfg, train=False)
    s = ds[1]
    assert s["imgs"].shape == (2, 6, 3, 512, 1408)
    assert s["sparse_depth"].shape == (6, 512, 1408) and s["seg_labels"].shape == (6, 512, 1408)
    np.testing.assert_allclose(s["post_rots"][0, 0].numpy(), np.diag([0.88, 0.88, 1.0]), atol=1e-6)
    np.testing.assert_allclose(s["post_trans"][0, 0].numpy(), [0, -280, 0], atol=1e-6)


# ---------------------------------------------------------------- bad input

@pytest.fixture()
def copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "root"
    shutil.copytree(root, dst)
    return dst


def test_missing_gts(copy: Path) -> None:
    shutil.rmtree(copy / "gts")
    with pytest.raises(DataError, match=r"gts: Occ3D gts folder not found"):
        OccDataset(copy / "infos.pkl", copy, CFG, train=True)
    ds = OccDataset(copy / "infos.pkl", copy, CFG, train=False)  # inference runs without targets
    b = collate([ds[0]])
    assert "voxel_semantics" not in b and "seg_labels" not in b and b["imgs"].shape[0] == 1


def test_missing_single_gt_file(copy: Path) -> None:
    ds = OccDataset(copy / "infos.pkl", copy, CFG, train=True)
    victim = copy / ds.infos[3]["occ_path"] / "labels.npz"
    victim.unlink()
    with pytest.raises(DataError, match=f"{victim}: Occ3D ground truth not found"):
        ds[3]
    assert "voxel_semantics" not in OccDataset(copy / "infos.pkl", copy, CFG, train=False)[3]


def test_bad_files_name_themselves(copy: Path) -> None:
    ds = OccDataset(copy / "infos.pkl", copy, CFG, train=False)
    jpg = copy / ds.infos[1]["cams"]["CAM_BACK_LEFT"]["data_path"]
    jpg.unlink()
    with pytest.raises(DataError, match=f"{jpg}: image file not found"):
        ds[1]
    jpg2 = copy / ds.infos[0]["cams"]["CAM_FRONT"]["data_path"]
    jpg2.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"{jpg2}: cannot decode image"):
        ds[0]
    pcd = copy / ds.infos[5]["lidar_path"]
    pcd.write_bytes(pcd.read_bytes()[:-6])
    with pytest.raises(DataError, match=f"{pcd}: truncated .pcd.bin"):
        ds[5]
    gt = copy / ds.infos[4]["occ_path"] / "labels.npz"
    np.savez(gt, semantics=np.zeros((200, 200, 8), np.uint8), mask_lidar=np.zeros((200, 200, 16), np.uint8),
             mask_camera=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(DataError, match="'semantics' has shape"):
        ds[4]


def test_bad_info_files(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="info file not found"):
        OccDataset(tmp_path / "none.pkl", root, CFG, train=False)
    with pytest.raises(DataError, match="holds no samples"):
        OccDataset([], root, CFG, train=False)
    with pytest.raises(DataError, match="missing lidar_path"):
        OccDataset([{"token": "x", "prev": "", "cams": {}}], root, CFG, train=False)
    with pytest.raises(DataError, match="data root not found"):
        OccDataset(root / "infos.pkl", tmp_path / "nowhere", CFG, train=False)


def test_dataloader_with_workers(root: Path) -> None:
    """Batches through a real DataLoader (2 worker processes): each worker augments differently."""
    ds = OccDataset(root / "infos.pkl", root, CFG, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate, shuffle=False)
    batches = list(loader)
    assert len(batches) == 6
    trans = {tuple(b["post_trans"][0, 0, 0].tolist()) + tuple(b["bda"].flatten().tolist()) for b in batches}
    assert len(trans) > 1


def test_indexing(root: Path) -> None:
    ds = OccDataset(root / "infos.pkl", root, CFG, train=False)
    assert ds[-1]["sample_token"] == ds.infos[5]["token"]
    with pytest.raises(IndexError):
        ds[6]


def test_label_counts_equal_a_bincount_of_the_ground_truth(root: Path) -> None:
    ds = OccDataset(root / "infos.pkl", root, "tiny", train=True)
    expect_all, expect_cam = np.zeros(18, np.int64), np.zeros(18, np.int64)
    for info in ds.infos:
        with np.load(root / info["occ_path"] / "labels.npz") as z:
            sem, cam = z["semantics"], z["mask_camera"].astype(bool)
        expect_all += np.bincount(sem.ravel(), minlength=18)
        expect_cam += np.bincount(sem[cam], minlength=18)
    assert expect_cam.sum() < expect_all.sum() == len(ds) * 200 * 200 * 16
    np.testing.assert_array_equal(ds.label_counts(camera_mask=False), expect_all)
    np.testing.assert_array_equal(ds.label_counts(camera_mask=True), expect_cam)

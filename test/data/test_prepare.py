"""fusionocc-prepare on a nuScenes-format root: info fields, temporal links, imgseg, bad input."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import view_points, transform_matrix
from pyquaternion import Quaternion

import nusc_fixture as F
from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_core.data import prepare
from fusionocc_core.data.io import DataError, decode_label_map, read_infos


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nusc")
    F.make_root(path, scenes=2, keyframes=3)
    return path


@pytest.fixture(scope="module")
def infos(root: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("infos") / "infos.pkl"
    assert prepare.main(["--data-root", str(root), "--version", "v1.0-mini", "--out", str(out), "--quiet"]) == 0
    return read_infos(out)


def copy_root(root: Path, dst: Path) -> Path:
    shutil.copytree(root, dst)
    return dst


def test_infos_match_the_devkit(root: Path, infos: dict) -> None:
    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    assert infos["metadata"]["version"] == "v1.0-mini"
    assert len(infos["infos"]) == len(nusc.sample) == 6
    by_token = {i["token"]: i for i in infos["infos"]}
    for sample in nusc.sample:
        info = by_token[sample["token"]]
        scene = nusc.get("scene", sample["scene_token"])
        assert info["scene_name"] == scene["name"] and info["scene_token"] == scene["token"]
        assert info["prev"] == sample["prev"] and info["next"] == sample["next"]
        assert info["occ_path"] == f"gts/{scene['name']}/{sample['token']}"
        assert (root / info["occ_path"] / "labels.npz").is_file()
        lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert info["lidar_path"] == lidar_sd["filename"] and (root / info["lidar_path"]).is_file()
        pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
        assert info["ego2global_translation"] == pose["translation"]
        lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
        lidar2global = (transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
                        @ transform_matrix(lidar_cs["translation"], Quaternion(lidar_cs["rotation"])))
        assert list(info["cams"]) == list(CAMERA_NAMES)
        for cam in CAMERA_NAMES:
            sd = nusc.get("sample_data", sample["data"][cam])
            c = info["cams"][cam]
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            cam_pose = nusc.get("ego_pose", sd["ego_pose_token"])
            assert c["data_path"] == sd["filename"] and c["timestamp"] == sd["timestamp"]
            assert (c["width"], c["height"]) == (1600, 900)
            np.testing.assert_allclose(c["cam_intrinsic"], cs["camera_intrinsic"])
            assert c["ego2global_translation"] == cam_pose["translation"]  # ego at the *camera* stamp
            assert c["sensor2ego_rotation"] == cs["rotation"]
            cam2global = (transform_matrix(cam_pose["translation"], Quaternion(cam_pose["rotation"]))
                          @ transform_matrix(cs["translation"], Quaternion(cs["rotation"])))
            cam2lidar = np.linalg.inv(lidar2global) @ cam2global
            np.testing.assert_allclose(c["sensor2lidar_rotation"], cam2lidar[:3, :3], atol=1e-9)
            np.testing.assert_allclose(c["sensor2lidar_translation"], cam2lidar[:3, 3], atol=1e-6)
    # sorted by scene then time, with every scene's samples contiguous
    keys = [(i["scene_name"], i["timestamp"]) for i in infos["infos"]]
    assert keys == sorted(keys)


def reference_imgseg(nusc: NuScenes, sample: dict, cam: str, lut: np.ndarray) -> np.ndarray:
    """The reference algorithm, literally: project with the devkit, paint 8x16 boxes on a 900x1600
    canvas (here far-to-near so the nearest point wins), keep every 8th row and column."""
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    sd = nusc.get("sample_data", sample["data"][cam])
    pts = np.fromfile(root_of(nusc) / lidar_sd["filename"], np.float32).reshape(-1, 5)[:, :3].T
    labels = lut[np.fromfile(root_of(nusc) / nusc.get("lidarseg", lidar_sd["token"])["filename"], np.uint8)]
    cs_l = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    pose_l = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    cs_c = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose_c = nusc.get("ego_pose", sd["ego_pose_token"])
    # lidar -> ego (lidar stamp) -> global -> ego (camera stamp) -> camera
    m = (transform_matrix(cs_c["translation"], Quaternion(cs_c["rotation"]), inverse=True)
         @ transform_matrix(pose_c["translation"], Quaternion(pose_c["rotation"]), inverse=True)
         @ transform_matrix(pose_l["translation"], Quaternion(pose_l["rotation"]))
         @ transform_matrix(cs_l["translation"], Quaternion(cs_l["rotation"])))
    cam_pts = m[:3, :3] @ pts + m[:3, 3:4]
    depth = cam_pts[2]
    uv = view_points(cam_pts, np.array(cs_c["camera_intrinsic"]), normalize=True)
    canvas = np.full((900, 1600), 17, np.uint8)
    for k in np.argsort(-depth):
        u, v = int(np.floor(uv[0, k])), int(np.floor(uv[1, k]))
        if depth[k] > 0.1 and 0 <= u < 1600 and 0 <= v < 900:
            canvas[max(v - 8, 0):v + 8, max(u - 4, 0):u + 4] = labels[k]
    return canvas[::8, ::8]


def root_of(nusc: NuScenes) -> Path:
    return Path(nusc.dataroot)


def test_imgseg_is_the_reference_projection(root: Path, infos: dict) -> None:
    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    lut = prepare.lidarseg_lut(nusc)
    assert lut[17] == 4 and lut[24] == 11 and lut[2] == 7 and lut[0] == 0 and lut[30] == 16
    painted = 0
    for info in infos["infos"][:3]:
        sample = nusc.get("sample", info["token"])
        for cam in CAMERA_NAMES:
            got, stride = decode_label_map(info["imgseg"][cam])
            assert stride == 8 and got.shape == (113, 200) and got.dtype == np.uint8
            expected = reference_imgseg(nusc, sample, cam, lut)
            np.testing.assert_array_equal(got, expected)
            painted += int((got != 17).sum())
    assert painted > 500
    # the car cluster ahead is seen by CAM_FRONT as car (4), the ground as driveable surface (11)
    front, _ = decode_label_map(infos["infos"][0]["imgseg"]["CAM_FRONT"])
    assert {4, 11} <= set(np.unique(front).tolist())


def test_scene_and_split_selection(root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "one.pkl"
    assert prepare.main(["--data-root", str(root), "--version", "v1.0-mini", "--out", str(out),
                         "--scenes", "scene-9001", "--quiet", "--no-imgseg"]) == 0
    data = read_infos(out)
    assert [i["scene_name"] for i in data["infos"]] == ["scene-9001"] * 3
    assert all(i["imgseg"] is None for i in data["infos"])
    # the fixture's scene names are in no official split: an error, never an empty file
    bad = tmp_path / "train.pkl"
    assert prepare.main(["--data-root", str(root), "--version", "v1.0-mini", "--out", str(bad),
                         "--split", "train", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split 'train'" in err and not bad.exists()
    assert prepare.main(["--data-root", str(root), "--version", "v1.0-mini", "--out", str(bad),
                         "--scenes", "scene-0001", "--quiet"]) == 1
    assert "scene-0001" in capsys.readouterr().err and not bad.exists()


def test_select_scenes_uses_the_official_splits(root: Path) -> None:
    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    nusc.scene[0]["name"] = "scene-0061"  # a mini_train scene
    nusc.scene[1]["name"] = "scene-0103"  # a mini_val scene
    assert [s["name"] for s in prepare.select_scenes(nusc, "train")] == ["scene-0061"]
    assert [s["name"] for s in prepare.select_scenes(nusc, "val")] == ["scene-0103"]
    assert len(prepare.select_scenes(nusc, "all")) == 2


@pytest.mark.parametrize("damage, needle", [
    ("table", "sample_data.json: missing nuScenes table"),
    ("jpeg", ".jpg: sample file not found"),
    ("pcd", "truncated .pcd.bin"),
    ("lidarseg", "lidarseg labels for a sweep of"),
    ("root", "data root not found"),
])
def test_bad_roots_give_one_line_errors(root: Path, tmp_path: Path, capsys, damage: str, needle: str) -> None:
    bad = copy_root(root, tmp_path / "root")
    nusc_version = bad / "v1.0-mini"
    if damage == "table":
        (nusc_version / "sample_data.json").unlink()
    elif damage == "jpeg":
        victim = sorted((bad / "samples" / "CAM_BACK").glob("*.jpg"))[1]
        victim.unlink()
        needle = f"{victim}: sample file not found"
    elif damage == "pcd":
        victim = sorted((bad / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))[0]
        victim.write_bytes(victim.read_bytes()[:-7])
        needle = f"{victim}: truncated .pcd.bin"
    elif damage == "lidarseg":
        victim = sorted((bad / "lidarseg" / "v1.0-mini").glob("*.bin"))[0]
        victim.write_bytes(victim.read_bytes()[:-3])
    elif damage == "root":
        bad = tmp_path / "nowhere"
    out = tmp_path / "out" / "infos.pkl"
    rc = prepare.main(["--data-root", str(bad), "--version", "v1.0-mini", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()  # and no temporary left behind
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_without_lidarseg_or_gts(tmp_path: Path) -> None:
    """A v1.0-test-like root (no lidarseg, no gts) still gives infos; imgseg is None."""
    F.make_root(tmp_path / "r", scenes=1, keyframes=2, gts=False, lidarseg=False)
    data = prepare.create_infos(tmp_path / "r", "v1.0-mini", progress=False)
    assert len(data["infos"]) == 2 and data["metadata"]["has_lidarseg"] is False
    assert all(i["imgseg"] is None and i["lidarseg_path"] is None for i in data["infos"])


def test_write_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "x.pkl"
    out.write_bytes(b"old")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        prepare.write_infos({"infos": [Boom()]}, out)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.pkl"]
    prepare.write_infos({"infos": [1], "metadata": {}}, out)
    assert pickle.loads(out.read_bytes())["infos"] == [1]


def test_help_documents_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        prepare.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--data-root", "--version", "--out", "--scenes", "--split", "--no-imgseg", "--quiet"):
        assert opt in text


def test_read_infos_rejects_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="info file not found"):
        read_infos(tmp_path / "none.pkl")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(pickle.dumps({"infos": [], "metadata": {}}))
    with pytest.raises(DataError, match="holds no samples"):
        read_infos(empty)

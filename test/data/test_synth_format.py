"""fusionocc-synth writes a root that the real nuscenes-devkit loads and renders; bad input fails
with a one-line error and leaves nothing behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.splits import create_splits_scenes  # noqa: E402

from fusionocc_core.classes import CAMERA_NAMES, GRID_SHAPE  # noqa: E402
from fusionocc_synth import generate  # noqa: E402
from fusionocc_synth.cli import main  # noqa: E402

KEYFRAMES = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "nusc", scenes=2, keyframes=KEYFRAMES, seed=7)


@pytest.fixture(scope="module")
def nusc(root: Path) -> NuScenes:
    return NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)


def test_devkit_loads_tables(nusc: NuScenes) -> None:
    assert len(nusc.scene) == 2 and len(nusc.sample) == 2 * KEYFRAMES
    splits = create_splits_scenes()
    names = [s["name"] for s in nusc.scene]
    assert names[0] in splits["mini_train"] and names[1] in splits["mini_val"]
    for scene in nusc.scene:
        sample = nusc.get("sample", scene["first_sample_token"])
        count = 1
        while sample["next"]:
            nxt = nusc.get("sample", sample["next"])
            assert nxt["timestamp"] - sample["timestamp"] == 500_000 and nxt["prev"] == sample["token"]
            sample, count = nxt, count + 1
        assert count == scene["nbr_samples"] == KEYFRAMES
    for sample in nusc.sample:
        assert set(sample["data"]) == {"LIDAR_TOP", *CAMERA_NAMES}
        lidar_ts = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["timestamp"]
        assert lidar_ts == sample["timestamp"]
        for cam in CAMERA_NAMES:
            sd = nusc.get("sample_data", sample["data"][cam])
            # nuScenes: the LiDAR is stamped at the end of its sweep, its key-frame images before it
            assert -50_000 < sd["timestamp"] - lidar_ts < 0 and (sd["width"], sd["height"]) == (1600, 900)
    assert len(nusc.sample_annotation) > 20
    cats = {a["category_name"] for a in nusc.sample_annotation}
    assert "vehicle.car" in cats and "human.pedestrian.adult" in cats


def test_ego_moves(nusc: NuScenes) -> None:
    scene = nusc.scene[0]
    first = nusc.get("sample", scene["first_sample_token"])
    last = nusc.get("sample", scene["last_sample_token"])
    pose = [nusc.get("ego_pose", nusc.get("sample_data", s["data"]["LIDAR_TOP"])["ego_pose_token"])
            for s in (first, last)]
    assert np.linalg.norm(np.subtract(pose[1]["translation"], pose[0]["translation"])) > 2.0


def test_lidar_and_lidarseg_line_up(nusc: NuScenes, root: Path) -> None:
    sample = nusc.sample[0]
    sd_token = sample["data"]["LIDAR_TOP"]
    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token))
    raw = np.fromfile(nusc.get_sample_data_path(sd_token), np.float32).reshape(-1, 5)
    assert 25_000 < pc.points.shape[1] < 40_000
    assert set(np.unique(raw[:, 4]).astype(int)) <= set(range(32)) and len(np.unique(raw[:, 4])) == 32
    labels = np.fromfile(root / nusc.get("lidarseg", sd_token)["filename"], np.uint8)
    assert labels.shape[0] == pc.points.shape[1]
    assert labels.max() < 32


def test_devkit_renders(nusc: NuScenes, tmp_path: Path) -> None:
    sample = nusc.sample[1]
    for channel in ("CAM_FRONT", "LIDAR_TOP"):
        out = tmp_path / f"{channel}.png"
        nusc.render_sample_data(sample["data"][channel], out_path=str(out), verbose=False)
        assert out.stat().st_size > 10_000
    out = tmp_path / "seg.png"
    nusc.render_pointcloud_in_image(sample["token"], out_path=str(out), verbose=False, show_lidarseg=True)
    assert out.stat().st_size > 10_000


def test_occ3d_files(nusc: NuScenes, root: Path) -> None:
    for sample in nusc.sample:
        scene = nusc.get("scene", sample["scene_token"])
        gt = np.load(root / "gts" / scene["name"] / sample["token"] / "labels.npz")
        assert set(gt.files) == {"semantics", "mask_lidar", "mask_camera"}
        for key in gt.files:
            assert gt[key].shape == GRID_SHAPE and gt[key].dtype == np.uint8
        sem = gt["semantics"]
        assert sem.max() <= 17 and 0.5 < (sem == 17).mean() < 0.99
        assert (sem[:, :, 2] == 11).mean() > 0.05  # the road layer
        assert 0 < gt["mask_camera"].sum() < sem.size and 0 < gt["mask_lidar"].sum() < sem.size


def test_deterministic(tmp_path: Path, root: Path) -> None:
    again = generate(tmp_path / "again", scenes=1, keyframes=1, seed=7)
    a = json.loads((again / "v1.0-mini" / "sample.json").read_text())[0]
    b = json.loads((root / "v1.0-mini" / "sample.json").read_text())
    assert a["token"] in {s["token"] for s in b}
    sd = [r for r in json.loads((again / "v1.0-mini" / "sample_data.json").read_text()) if r["fileformat"] == "pcd"][0]
    assert (again / sd["filename"]).read_bytes() == (root / sd["filename"]).read_bytes()
    other = generate(tmp_path / "other", scenes=1, keyframes=1, seed=8)
    sd2 = [r for r in json.loads((other / "v1.0-mini" / "sample_data.json").read_text()) if r["fileformat"] == "pcd"][0]
    assert (other / sd2["filename"]).read_bytes() != (again / sd["filename"]).read_bytes()


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    assert main([str(full), "--scenes", "1", "--keyframes", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(full) in err
    assert (full / "x").read_text() == "keep me"
    for bad in (["--scenes", "0"], ["--keyframes", "0"], ["--scenes", "11"], ["--workers", "0"],
                ["--render-scale", "3"]):
        assert main([str(tmp_path / "new"), *bad]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    proc = subprocess.run([sys.executable, "-m", "fusionocc_synth.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--sweeps" in proc.stdout


def test_cli_writes_root(tmp_path: Path) -> None:
    assert main([str(tmp_path / "r"), "--scenes", "1", "--keyframes", "1", "--workers", "1"]) == 0
    assert (tmp_path / "r" / "v1.0-mini" / "scene.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary directory left

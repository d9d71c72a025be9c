"""Shared fixtures for the rosbag_tools tests: a generated nuScenes-format root and its bags."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bag_expect import VERSION
from rosbag_tools import convert


def generate(out_dir: Path, scenes: int, keyframes: int, sweeps: bool = False, seed: int = 0) -> Path:
    """A synthetic nuScenes-format root (fusionocc_synth) with Occ3D gts."""
    from fusionocc_synth import generate as synth_generate

    return Path(synth_generate(out_dir, scenes=scenes, keyframes=keyframes, seed=seed, sweeps=sweeps, version=VERSION))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scenes x 3 key-frames (key-frames only): the root most tests convert."""
    return generate(tmp_path_factory.mktemp("nusc") / "root", scenes=2, keyframes=3)


@pytest.fixture(scope="session")
def sweeps_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One scene x 2 key-frames with every camera/LiDAR sweep on disk, for --sweeps."""
    return generate(tmp_path_factory.mktemp("nusc_sweeps") / "root", scenes=1, keyframes=2, sweeps=True)


@pytest.fixture(scope="session")
def nusc(data_root: Path):
    """The devkit's view of the generated root: the independent source of expected values."""
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(data_root), verbose=False)


@pytest.fixture(scope="session")
def mcap_bags(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Key-frame MCAP bags of every scene, written by the real CLI entry point."""
    out = tmp_path_factory.mktemp("bags") / "out"
    assert convert.main(["--data-root", str(data_root), "--version", VERSION, "--out", str(out)]) == 0
    return out


def copy_root(data_root: Path, dst: Path) -> Path:
    """A private copy of the generated root that a test may damage."""
    shutil.copytree(data_root, dst, symlinks=True)
    return dst

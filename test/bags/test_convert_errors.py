"""fusionocc-convert on bad input: one-line errors naming the culprit, and nothing half-written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bag_expect as E
from bag_expect import VERSION
from rosbag_tools import convert
from rosbag_tools.plan import load_nuscenes, plan_scene, select_scenes


@pytest.fixture()
def root(data_root: Path, tmp_path: Path) -> Path:
    """A hard-linked copy of the generated root: replace (never edit in place) files to damage them."""
    import shutil

    return Path(shutil.copytree(data_root, tmp_path / "root", copy_function=os.link))


def replace_file(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link first: the shared generated root stays intact
    path.write_bytes(data)


def run(root: Path, out: Path, *extra: str, capsys) -> tuple[int, str]:
    rc = convert.main(["--data-root", str(root), "--version", VERSION, "--out", str(out), *extra])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(convert.PROG + ": error")]
    return rc, "\n".join(lines)


def first_scene(root: Path) -> str:
    return sorted(p.name for p in (root / "gts").iterdir())[0]


def key_file(root: Path, channel: str, nusc) -> Path:
    name = first_scene(root)
    sd = next(s for s in E.scene_sample_data(nusc, name, False) if s["channel"] == channel)
    return root / sd["filename"]


def test_unknown_scene_name(root: Path, tmp_path: Path, capsys) -> None:
    rc, err = run(root, tmp_path / "out", "--scenes", "scene-9999", capsys=capsys)
    assert rc == 1 and err.count("\n") == 0
    assert "unknown scene name 'scene-9999'" in err
    assert not (tmp_path / "out").exists()


def test_existing_output_path_is_left_alone(root: Path, tmp_path: Path, capsys) -> None:
    name = first_scene(root)
    existing = tmp_path / "out" / name
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("mine")
    rc, err = run(root, tmp_path / "out", "--scenes", name, capsys=capsys)
    assert rc == 1 and err.count("\n") == 0
    assert f"output path {existing} already exists" in err
    assert os.listdir(tmp_path / "out") == [name] and os.listdir(existing) == ["keep.txt"]


def test_missing_sensor_file(root: Path, tmp_path: Path, nusc, capsys) -> None:
    missing = key_file(root, "CAM_BACK", nusc)
    missing.unlink()
    rc, err = run(root, tmp_path / "out", capsys=capsys)
    assert rc == 1 and err.count("\n") == 0
    assert f"missing sensor file {missing}" in err
    assert not (tmp_path / "out").exists()  # found before anything was written


@pytest.mark.parametrize("channel,cut", [("LIDAR_TOP", 7), ("CAM_FRONT", 1000)])
def test_truncated_sensor_file(root: Path, tmp_path: Path, nusc, capsys, channel: str, cut: int) -> None:
    path = key_file(root, channel, nusc)
    data = path.read_bytes()
    replace_file(path, data[: len(data) - cut])
    out = tmp_path / "out"
    rc, err = run(root, out, "--scenes", first_scene(root), capsys=capsys)
    assert rc == 1 and err.count("\n") == 0
    assert "truncated" in err and str(path) in err
    assert not out.exists() or os.listdir(out) == []  # no bag and no temporary directory left


def test_corrupt_ground_truth(root: Path, tmp_path: Path, capsys) -> None:
    name = first_scene(root)
    gt = sorted((root / "gts" / name).glob("*/labels.npz"))[-1]
    replace_file(gt, gt.read_bytes()[:100])
    out = tmp_path / "out"
    rc, err = run(root, out, "--scenes", name, capsys=capsys)
    assert rc == 1 and err.count("\n") == 0
    assert f"corrupt or truncated ground truth {gt}" in err
    assert not out.exists() or os.listdir(out) == []


def test_wrong_version_and_root(root: Path, tmp_path: Path, capsys) -> None:
    rc = convert.main(["--data-root", str(root), "--version", "v1.0-trainval", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "v1.0-trainval" in err and "not found" in err
    rc = convert.main(["--data-root", str(tmp_path / "nowhere"), "--version", VERSION, "--out", str(tmp_path / "o")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err


def test_interrupt_mid_write_removes_the_partial_bag(root: Path, tmp_path: Path) -> None:
    nusc = load_nuscenes(root, VERSION)
    plan = plan_scene(nusc, select_scenes(nusc, [first_scene(root)])[0])
    seen = []

    def interrupt_after_some(n: int, nbytes: int) -> None:
        seen.append(n)
        assert any((tmp_path / "out").glob(f".{plan.name}.partial-*/{plan.name}/*.mcap"))  # mid-write
        raise KeyboardInterrupt

    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        convert.convert_scene(plan, tmp_path / "out", "mcap", "t", interrupt_after_some)
    assert seen and os.listdir(tmp_path / "out") == []


def test_sigterm_of_a_parallel_run_leaves_no_half_written_bag(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rosbag_tools.convert", "--data-root", str(root), "--version", VERSION,
         "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not any(out.glob(".*.partial-*/*/*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"the run was not interrupted mid-write (rc {proc.returncode}): {err[-500:]}"
    assert "interrupted" in err
    leftovers = sorted(os.listdir(out))
    assert not [p for p in leftovers if ".partial-" in p], leftovers
    for name in leftovers:  # a scene that finished before the signal is a complete, readable bag
        conns, msgs = E.read_bag(out / name)
        assert len(msgs["/tf_static"]) == 1


def test_scene_without_gts_has_no_occupancy_topic(root: Path, tmp_path: Path, nusc) -> None:
    import shutil

    name = first_scene(root)
    shutil.rmtree(root / "gts" / name)
    assert convert.main(["--data-root", str(root), "--version", VERSION, "--scenes", name, "--out", str(tmp_path / "o")]) == 0
    conns, msgs = E.read_bag(tmp_path / "o" / name)
    assert "/occupancy/gt" not in conns
    assert {t: len(v) for t, v in msgs.items()} == E.expected_counts(nusc, root, name, sweeps=False)


def test_missing_ground_truth_file_in_a_scene_with_gts(root: Path, tmp_path: Path, capsys) -> None:
    name = first_scene(root)
    gt = sorted((root / "gts" / name).glob("*/labels.npz"))[0]
    gt.unlink()
    rc, err = run(root, tmp_path / "out", "--scenes", name, capsys=capsys)
    assert rc == 1 and err.count("\n") == 0
    assert f"missing ground-truth file {gt}" in err
    assert not (tmp_path / "out").exists()

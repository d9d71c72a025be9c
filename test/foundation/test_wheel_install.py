"""A non-editable install works: build a wheel of the project from a clean copy of the tree, check
that its declared dependencies resolve offline to exactly the pinned environment (pip's resolver,
`--dry-run --no-index`: nothing else to install), install it (not `-e`) on its own into a folder,
then, from a folder outside the repository, generate data, `fusionocc-convert` it and
`fusionocc-replay` the bag with the installed console scripts. The package, its config and the .msg
definition must come from the installed wheel, not from the repository. (The dependencies are the
venv's own: a fresh venv would only re-install the same pinned wheels; fusionocc_msgs' build is
test_colcon_workspace's and scripts/setup.sh's.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo_copy import copy_repo

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def _run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.ros
def test_wheel_installed_without_editable_runs_convert_and_replay(tmp_path: Path) -> None:
    src, dist, site, work = tmp_path / "src", tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    copy_repo(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
    (wheel,) = dist.glob("fusionocc_ros-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("config/occ_node.yaml", "config/occ.rviz", "launch/occ.launch.py", "msg/SemanticVoxelGrid.msg"):
        assert f"fusionocc_ros/data/{rel}" in names, rel

    # the wheel's requirements (requirements.txt's pins through its metadata) are met by the pinned
    # venv with no index at all: the resolver has nothing to install but the wheel itself
    report = tmp_path / "report.json"
    _run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", "--report", str(report),
          f"{wheel}[ros]"])
    import json

    to_install = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert to_install == ["fusionocc_ros"], to_install

    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", str(site), str(wheel)])
    shutil.rmtree(src)  # nothing may come from a source tree any more
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "COLCON_"))}
    run_env = {**env, "PYTHONPATH": str(site), "PATH": f"{site / 'bin'}:{env['PATH']}",
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    where = _run([sys.executable, "-c", "import fusionocc_ros, fusionocc_ros.resources as r; print(fusionocc_ros.__file__);"
                  "print(r.params_file()); print(r.voxel_grid_msg())"], cwd=work, env=run_env).stdout.split()
    assert all(Path(w).is_relative_to(site) for w in where), where

    bin_ = site / "bin"
    _run([str(bin_ / "fusionocc-synth"), "data", "--scenes", "1", "--keyframes", "3", "--seed", "3",
          "--version", "v1.0-mini"], cwd=work, env=run_env, timeout=900)
    _run([str(bin_ / "fusionocc-convert"), "--data-root", "data", "--version", "v1.0-mini", "--out", "bags"], cwd=work,
         env=run_env, timeout=900)
    (bag,) = (work / "bags").iterdir()
    replay = _run([str(bin_ / "fusionocc-replay"), str(bag), "out", "--checkpoint", str(REPO / "demo" / "tiny_synth.pth")],
                  cwd=work, env=run_env, timeout=900)
    assert "3 frames inferred" in replay.stdout, replay.stdout
    assert (work / "out" / "metadata.yaml").is_file()

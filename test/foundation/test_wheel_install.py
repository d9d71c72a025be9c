"""A non-editable install works: build a wheel of the project, install it (not `-e`) into a fresh
venv beside the ROS wheels, build fusionocc_msgs into that venv as scripts/setup.sh does, then,
from a folder outside the repository, generate data, `fusionocc-convert` it and
`fusionocc-replay` the bag with the installed console scripts. The config and the .msg definition
must come from the installed package data, not from the repository."""
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
    src, dist, fresh, work = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    copy_repo(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
    (wheel,) = dist.glob("fusionocc_ros-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("config/occ_node.yaml", "config/occ.rviz", "launch/occ.launch.py", "msg/SemanticVoxelGrid.msg"):
        assert f"fusionocc_ros/data/{rel}" in names, rel

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AMENT_", "COLCON_", "_ROS_WHEELS", "PYTHONPATH", "VIRTUAL_ENV", "CMAKE_PREFIX"))}
    _run([sys.executable, "-m", "venv", str(fresh)], env=env)
    py = fresh / "bin" / "python"
    # the same pins as the main venv (requirements.txt through the wheel's metadata), from the pip cache
    _run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", f"{wheel}[ros]"], env=env, timeout=1500)
    # fusionocc_msgs built into the fresh venv, as scripts/setup.sh does for the main one
    fix = (f"NP=$({py} -c 'import numpy; print(numpy.get_include())'); "
           f"PI=$({py} -c 'import sysconfig; print(sysconfig.get_paths()[\"include\"])'); "
           f"grep -rlZ /opt/python/cp311-cp311 {fresh}/share --include='*.cmake' | xargs -0 -r sed -i "
           "-e \"s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP#g\" "
           "-e \"s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/core/include#$NP#g\" "
           "-e \"s#/opt/python/cp311-cp311/include/python3.11#$PI#g\"")
    _run(["bash", "-c", fix], env=env)
    build_env = {**env, "PATH": f"{fresh}/bin:{env['PATH']}", "AMENT_PREFIX_PATH": str(fresh), "CMAKE_PREFIX_PATH": str(fresh)}
    build = tmp_path / "build_msgs"
    _run(["cmake", "-S", str(src / "fusionocc_msgs"), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={fresh}",
          f"-DPython3_EXECUTABLE={py}", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF"], env=build_env)
    _run(["cmake", "--build", str(build), f"-j{os.cpu_count() or 2}"], env=build_env, timeout=900)
    _run(["cmake", "--install", str(build)], env=build_env)

    shutil.rmtree(src)  # nothing may come from a source tree any more
    work.mkdir()
    run_env = {**env, "PATH": f"{fresh}/bin:{env['PATH']}", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    where = _run([str(py), "-c", "import fusionocc_ros, fusionocc_ros.resources as r; print(fusionocc_ros.__file__);"
                  "print(r.params_file()); print(r.voxel_grid_msg())"], cwd=work, env=run_env).stdout.split()
    site = fresh / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert all(Path(w).is_relative_to(site) for w in where), where

    bin_ = fresh / "bin"
    _run([str(bin_ / "fusionocc-synth"), "data", "--scenes", "1", "--keyframes", "3", "--seed", "3",
          "--version", "v1.0-mini"], cwd=work, env=run_env, timeout=900)
    _run([str(bin_ / "fusionocc-convert"), "--data-root", "data", "--version", "v1.0-mini", "--out", "bags"], cwd=work,
         env=run_env, timeout=900)
    (bag,) = (work / "bags").iterdir()
    replay = _run([str(bin_ / "fusionocc-replay"), str(bag), "out", "--checkpoint", str(REPO / "demo" / "tiny_synth.pth")],
                  cwd=work, env=run_env, timeout=900)
    assert "3 frames inferred" in replay.stdout, replay.stdout
    assert (work / "out" / "metadata.yaml").is_file()

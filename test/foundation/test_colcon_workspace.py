"""The README's colcon command builds fusionocc_msgs + fusionocc_ros from a workspace."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from repo_copy import copy_repo

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
VENV = VENV_BIN.parent
# Keep in sync with README.md ("Using it in a ROS 2 workspace").
COLCON_BUILD = "colcon build --base-paths src/fusionocc_ros src/fusionocc_ros/fusionocc_msgs"
# README lines this test runs the way `ros2 run` does (ros2cli is not on PyPI): `ros2 run PKG EXE`
# executes <prefix>/lib/PKG/EXE of the package's install prefix.
ROS2_RUN_NODE = ("ros2 run fusionocc_ros occupancy_node --ros-args --params-file "
                 "install/fusionocc_ros/share/fusionocc_ros/config/occ_node.yaml -p model.checkpoint:=/path/model.pth")
ROS2_RUN_REPLAY = "ros2 run fusionocc_ros fusionocc-replay --help"


@pytest.mark.slow
@pytest.mark.ros
def test_readme_colcon_command_builds_both_packages(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    assert COLCON_BUILD in readme, "README's colcon command changed"
    assert ROS2_RUN_NODE in readme and ROS2_RUN_REPLAY in readme, "README's ros2 run lines changed"
    ws = tmp_path / "ws"
    copy_repo(ws / "src" / "fusionocc_ros")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_", "_ROS_WHEELS"))}
    env.update(PATH=f"{VENV_BIN}:{env['PATH']}", AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV))

    listing = subprocess.run(["colcon", "list", "--base-paths", "src/fusionocc_ros", "src/fusionocc_ros/fusionocc_msgs"],
                             cwd=ws, env=env, check=True, capture_output=True, text=True).stdout
    assert "fusionocc_ros\tsrc/fusionocc_ros\t(ros.ament_python)" in listing
    assert "fusionocc_msgs\tsrc/fusionocc_ros/fusionocc_msgs\t(ros.ament_cmake)" in listing
    assert "tf2_msgs" not in listing  # the test stand-in never builds into a user's workspace

    build = subprocess.run(f"{COLCON_BUILD} --cmake-args -DPython3_EXECUTABLE={sys.executable} -DBUILD_TESTING=OFF",
                           shell=True, cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert (ws / "install/fusionocc_ros/lib/fusionocc_ros/occupancy_node").is_file()  # ros2 run target

    probe = (
        "import fusionocc_msgs.msg as m, pathlib;"
        "from ament_index_python.packages import get_package_share_directory as share;"
        "print(pathlib.Path(m.__file__).resolve());"
        "print(share('fusionocc_ros'));"
        "m.SemanticVoxelGrid(size_x=200)"
    )
    clean_env = {"HOME": os.environ.get("HOME", "/root"), "PATH": env["PATH"]}
    out = subprocess.run(["bash", "-c", f"source install/setup.bash && {sys.executable} -c \"{probe}\""],
                         cwd=ws, env=clean_env, check=True, capture_output=True, text=True).stdout.split("\n")
    assert out[0].startswith(str((ws / "install/fusionocc_msgs").resolve()))
    share = Path(out[1])
    assert share == ws / "install/fusionocc_ros/share/fusionocc_ros"
    assert (share / "package.xml").is_file()
    # config, launch and the message definition are where a ROS user looks for them
    for rel in ("config/occ_node.yaml", "config/occ.rviz", "launch/occ.launch.py"):
        assert (share / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    msg = ws / "install/fusionocc_msgs/share/fusionocc_msgs/msg/SemanticVoxelGrid.msg"
    assert msg.read_bytes() == (REPO / "fusionocc_msgs/msg/SemanticVoxelGrid.msg").read_bytes()

    def run_installed(line: str, extra: str = "") -> subprocess.CompletedProcess:
        """A README `ros2 run` line, executed as ros2 run does, in the sourced workspace."""
        words = line.split()
        assert words[:2] == ["ros2", "run"]
        exe = ws / "install" / words[2] / "lib" / words[2] / words[3]
        assert exe.is_file(), exe
        command = " ".join([str(exe), *words[4:]]) + extra
        return subprocess.run(["bash", "-c", f"source install/setup.bash && {command}"], cwd=ws, env=clean_env,
                              capture_output=True, text=True, timeout=300)

    # the node reads the installed params file, then stops at the (placeholder) checkpoint with one line
    node = run_installed(ROS2_RUN_NODE.replace("/path/model.pth", "/nonexistent/model.pth"))
    assert node.returncode == 1 and "Traceback" not in node.stderr, node.stderr[-3000:]
    assert node.stderr.strip().splitlines() == [
        "fusionocc_occupancy: cannot start: cannot load checkpoint /nonexistent/model.pth: "
        + node.stderr.split("cannot load checkpoint /nonexistent/model.pth: ", 1)[-1].strip()]
    replay_help = run_installed(ROS2_RUN_REPLAY)
    assert replay_help.returncode == 0 and "--params" in replay_help.stdout
    # every tool is reachable the ros2 run way
    for tool in ("fusionocc-convert", "fusionocc-play", "fusionocc-record", "fusionocc-bag-info", "fusionocc-score"):
        assert (ws / "install/fusionocc_ros/lib/fusionocc_ros" / tool).is_file(), tool
    # the installed package finds its data (package data first, else the share directory)
    where = subprocess.run(["bash", "-c", f"source install/setup.bash && {sys.executable} -c "
                            "'from fusionocc_ros import resources as r; print(r.params_file()); print(r.voxel_grid_msg())'"],
                           cwd=ws, env=clean_env, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(w).resolve().is_relative_to((ws / "install").resolve()) for w in where), where

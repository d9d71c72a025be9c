"""The README's colcon command builds fusionocc_msgs + fusionocc_ros from a workspace."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
VENV = VENV_BIN.parent
# Keep in sync with README.md ("Build in a ROS 2 workspace").
COLCON_BUILD = "colcon build --base-paths src/fusionocc_ros src/fusionocc_ros/fusionocc_msgs"


def _copy_repo(dst: Path) -> None:
    """Copy what a clone holds (tracked + untracked-not-ignored files) into dst."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst / rel)
        else:
            shutil.copy2(src, dst / rel)


@pytest.mark.slow
@pytest.mark.ros
def test_readme_colcon_command_builds_both_packages(tmp_path: Path) -> None:
    assert COLCON_BUILD in (REPO / "README.md").read_text(), "README's colcon command changed"
    ws = tmp_path / "ws"
    _copy_repo(ws / "src" / "fusionocc_ros")
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
    assert Path(out[1]) == ws / "install/fusionocc_ros/share/fusionocc_ros"
    assert (Path(out[1]) / "package.xml").is_file()

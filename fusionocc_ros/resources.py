"""Where the package's data files are, whichever way it was installed (no ROS imports).

The same files (config/occ_node.yaml, config/occ.rviz, launch/occ.launch.py and
fusionocc_msgs/msg/SemanticVoxelGrid.msg) are found:
  - in a wheel / `pip install .`: as package data, `importlib.resources` (fusionocc_ros/data/...,
    copied there by setup.py's build step; the repository keeps one copy of each file);
  - in a source checkout or an editable install: next to the package, in the repository;
  - in a colcon install: in the ament index share directory (`share/fusionocc_ros/...`,
    `share/fusionocc_msgs/msg/...`), found through AMENT_PREFIX_PATH.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PACKAGE = "fusionocc_ros"
MSG_PACKAGE = "fusionocc_msgs"
DATA_DIR = "data"  # inside the installed fusionocc_ros package
_REPO = Path(__file__).resolve().parent.parent

# relative name -> (share package, path inside its share directory)
_SHARE = {
    "config/occ_node.yaml": (PACKAGE, "config/occ_node.yaml"),
    "config/occ.rviz": (PACKAGE, "config/occ.rviz"),
    "launch/occ.launch.py": (PACKAGE, "launch/occ.launch.py"),
    "msg/SemanticVoxelGrid.msg": (MSG_PACKAGE, "msg/SemanticVoxelGrid.msg"),
}
_SOURCE = {"msg/SemanticVoxelGrid.msg": f"{MSG_PACKAGE}/msg/SemanticVoxelGrid.msg"}


def _share_dirs(package: str) -> list[Path]:
    """share/<package> as the ament index knows it (ament_index_python where installed, else the
    same lookup over AMENT_PREFIX_PATH)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        return [Path(p) / "share" / package for p in prefixes
                if (Path(p) / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()]
    try:
        return [Path(get_package_share_directory(package))]
    except (PackageNotFoundError, OSError, ValueError):  # not indexed, or no AMENT_PREFIX_PATH at all
        return []


def candidates(name: str) -> list[Path]:
    """Every place `name` (e.g. 'config/occ_node.yaml') is looked for, in order."""
    if name not in _SHARE:
        raise KeyError(f"unknown data file '{name}' (known: {', '.join(sorted(_SHARE))})")
    out: list[Path] = []
    packaged = resources.files(PACKAGE) / DATA_DIR / name
    if isinstance(packaged, Path):
        out.append(packaged)
    out.append(_REPO / _SOURCE.get(name, name))
    package, rel = _SHARE[name]
    out += [d / rel for d in _share_dirs(package)]
    return out


def find(name: str) -> Path:
    """Path of the data file `name`; FileNotFoundError (one line, listing where it looked) if absent."""
    paths = candidates(name)
    for path in paths:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} is not installed (looked in {', '.join(str(p) for p in paths)})")


def params_file() -> Path:
    """The shipped node parameters (config/occ_node.yaml)."""
    return find("config/occ_node.yaml")


def rviz_config() -> Path:
    """The shipped rviz2 configuration (config/occ.rviz)."""
    return find("config/occ.rviz")


def voxel_grid_msg() -> Path:
    """fusionocc_msgs/msg/SemanticVoxelGrid.msg (to register the type with rosbags)."""
    return find("msg/SemanticVoxelGrid.msg")

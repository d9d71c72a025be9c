"""package.xml is one catkin_pkg accepts (else colcon silently falls back to a plain Python package)
and declares every ROS package the code imports, and the Python dependencies by rosdep key."""
from __future__ import annotations

import ast
from pathlib import Path

from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]
CODE = ["fusionocc_ros", "fusionocc_core", "rosbag_tools", "launch"]
# modules that come from ROS packages (everything else is the standard library or PyPI)
ROS_MODULES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "geometry_msgs", "sensor_msgs",
               "visualization_msgs", "diagnostic_msgs", "rosgraph_msgs", "tf2_msgs", "fusionocc_msgs",
               "ament_index_python", "launch", "launch_ros"}
PYTHON_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
               "matplotlib": "python3-matplotlib", "torch": "python3-torch"}


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for folder in CODE:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def test_package_xml_is_valid_and_declares_what_the_code_imports() -> None:
    pkg = parse_package(str(REPO / "package.xml"))
    pkg.validate()  # raises InvalidPackage on what catkin_pkg (and so colcon) rejects
    assert pkg.name == "fusionocc_ros" and any(e.tagname == "build_type" and e.content == "ament_python" for e in pkg.exports)
    declared = {d.name for d in pkg.exec_depends + pkg.build_depends + pkg.buildtool_depends}
    imported = _imported_top_level()
    ros_used = imported & ROS_MODULES
    assert ros_used >= {"rclpy", "rcl_interfaces", "builtin_interfaces", "launch", "launch_ros", "ament_index_python"}
    assert ros_used <= declared, sorted(ros_used - declared)
    python_used = {PYTHON_KEYS[m] for m in imported if m in PYTHON_KEYS}
    assert python_used <= declared, sorted(python_used - declared)

"""DESIGN.md layering: fusionocc_core never imports ROS; only fusionocc_ros/node.py imports rclpy
at import time. Checked by importing every module in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = r"""
import importlib, pkgutil, sys, json
blocked = {}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == 'rclpy' or name.startswith('rclpy.'):
            raise ImportError('rclpy imported at import time')
        return None
pkg_names = sys.argv[1].split(',')
if sys.argv[2] == 'block':
    sys.meta_path.insert(0, Block())
bad = []
for pkg_name in pkg_names:
    pkg = importlib.import_module(pkg_name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg_name + '.'):
        if info.name in set(sys.argv[3].split(',')):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # any module that cannot be imported is reported
            bad.append(f'{info.name}: {type(exc).__name__}: {exc}')
print(json.dumps({'bad': bad, 'rclpy_loaded': 'rclpy' in sys.modules,
                  'ros_msgs': sorted(m for m in sys.modules if m.endswith('_msgs') or m.startswith('rosidl'))}))
"""


def _probe(packages: str, skip: str = "") -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", _PROBE, packages, "block", skip], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_core_imports_without_ros() -> None:
    result = _probe("fusionocc_core")
    assert result["bad"] == []
    assert result["rclpy_loaded"] is False
    assert result["ros_msgs"] == [], "fusionocc_core imported ROS message packages"


def test_only_node_imports_rclpy_at_import_time() -> None:
    result = _probe("fusionocc_ros,rosbag_tools", skip="fusionocc_ros.node")
    assert result["bad"] == []
    assert result["rclpy_loaded"] is False


"""DESIGN.md layering: fusionocc_core never imports ROS; only fusionocc_ros/node.py imports rclpy
at import time (checked by importing every module in a fresh interpreter). And the import graph
of our own modules (every import statement, lazy ones inside functions included, read with ast)
has no cycle and no upward edge. Layers, lowest first (docs/ARCHITECTURE.md):

  0  fusionocc_core                 the ROS-free library: model, data, metrics, tools
  1  fusionocc_synth                the synthetic nuScenes-format world; may import layer 0
  2  fusionocc_ros, rosbag_tools    the ROS-facing side (node, replay, bags); one layer, peers
A module may import its own layer (without a cycle) or a lower one, never a higher one.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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
    result = _probe("fusionocc_core,fusionocc_synth")
    assert result["bad"] == []
    assert result["rclpy_loaded"] is False
    assert result["ros_msgs"] == [], "fusionocc_core imported ROS message packages"


def test_only_node_imports_rclpy_at_import_time() -> None:
    result = _probe("fusionocc_ros,rosbag_tools", skip="fusionocc_ros.node")
    assert result["bad"] == []
    assert result["rclpy_loaded"] is False



PACKAGES = ("fusionocc_core", "fusionocc_synth", "fusionocc_ros", "rosbag_tools")


def layer(module: str) -> int:
    """The layer of one of our modules (see the module docstring)."""
    if module.split(".")[0] in ("fusionocc_ros", "rosbag_tools"):
        return 2
    return 1 if module.split(".")[0] == "fusionocc_synth" else 0


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports (anywhere in the file), from the source text."""
    files = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                    module = ".".join(base)
                else:
                    module = node.module or ""
                for alias in node.names:  # `from pkg import module` names a module
                    targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in files else module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import of a higher layer."""
    return [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a]) if layer(b) > layer(a)]


def test_no_import_cycles_and_no_upward_imports() -> None:
    graph = import_graph(REPO)
    assert len(graph) > 50 and "fusionocc_ros.node" in graph
    assert cycles(graph) == []
    assert upward(graph) == []


@pytest.mark.parametrize("case", ["cycle", "lazy_cycle", "upward", "synth"])
def test_the_graph_check_catches_what_it_forbids(tmp_path: Path, case: str) -> None:
    """The checks above can fail: a planted cycle (also through a lazy import inside a function)
    or an upward import in a copy-shaped package tree is reported."""
    files = {
        "fusionocc_core/__init__.py": "",
        "fusionocc_core/a.py": "from fusionocc_core import b\n",
        "fusionocc_core/b.py": "import numpy\n",
        "fusionocc_synth/__init__.py": "",
        "fusionocc_synth/world.py": "from fusionocc_core.a import x\n",
        "fusionocc_ros/__init__.py": "",
        "fusionocc_ros/node.py": "from fusionocc_core.b import y\n",
        "rosbag_tools/__init__.py": "",
    }
    if case == "cycle":
        files["fusionocc_core/b.py"] = "from fusionocc_core.a import z\n"
    elif case == "lazy_cycle":
        files["fusionocc_core/b.py"] = "def f():\n    from .a import z\n    return z\n"
    elif case == "upward":
        files["fusionocc_core/b.py"] = "def f():\n    import fusionocc_ros.node\n"
    else:
        files["fusionocc_core/b.py"] = "from fusionocc_synth import world\n"
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path)
    if case in ("cycle", "lazy_cycle"):
        assert cycles(graph) == [["fusionocc_core.a", "fusionocc_core.b"]] and upward(graph) == []
    else:
        target = "fusionocc_ros.node" if case == "upward" else "fusionocc_synth.world"
        assert upward(graph) == [f"fusionocc_core.b -> {target}"]

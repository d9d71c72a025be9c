"""launch/occ.launch.py, setup.py, config/occ_node.yaml and the node's parameter table agree.

`launch` and `launch_ros` are not installable on our CI, so the launch file is read as source
(its AST) rather than executed."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_ros.params import NODE_NAME, PARAMETERS, load_params_file, validate

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "occ.launch.py"


def _launch_node_call() -> ast.Call:
    tree = ast.parse(LAUNCH.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    assert len(calls) == 1, "the launch file should start exactly one Node"
    return calls[0]


def _kw(call: ast.Call, name: str) -> ast.AST:
    return next(k.value for k in call.keywords if k.arg == name)


def test_launch_names_the_installed_executable_and_node() -> None:
    call = _launch_node_call()
    assert ast.literal_eval(_kw(call, "package")) == "fusionocc_ros"
    executable = ast.literal_eval(_kw(call, "executable"))
    assert ast.literal_eval(_kw(call, "name")) == NODE_NAME
    setup = (REPO / "setup.py").read_text()
    assert re.search(rf'"{executable} = fusionocc_ros\.node:main"', setup), "launch executable not in setup.py"
    assert "install_scripts=$base/lib/fusionocc_ros" in (REPO / "setup.cfg").read_text()
    assert "glob(\"launch/*.launch.py\")" in setup and "glob(\"config/*.yaml\")" in setup


def test_launch_remappings_cover_every_input_of_the_node() -> None:
    source = LAUNCH.read_text()
    module = ast.parse(source)
    cams = next(ast.literal_eval(n.value) for n in module.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CAMERAS")
    assert tuple(c.upper() for c in cams) == CAMERA_NAMES  # the model's camera order
    # the remapping templates: lidar + per camera image and camera_info to the converter's topics
    assert '("~/input/lidar", "/lidar_top")' in source
    assert '(f"~/input/{cam}/image", f"/{cam}/image_rect_compressed")' in source
    assert '(f"~/input/{cam}/camera_info", f"/{cam}/camera_info")' in source
    node_src = (REPO / "fusionocc_ros" / "node.py").read_text()
    for sub in ('"~/input/lidar"', 'f"~/input/{lower}/image"', 'f"~/input/{lower}/camera_info"'):
        assert sub in node_src


def test_launch_parameter_overrides_are_node_parameters() -> None:
    call = _launch_node_call()
    params = _kw(call, "parameters")
    assert isinstance(params, ast.List)
    overrides = [e for e in params.elts if isinstance(e, ast.Dict)]
    keys = {ast.literal_eval(k) for d in overrides for k in d.keys}
    assert keys - {"use_sim_time"} <= set(PARAMETERS), keys
    declared = {ast.literal_eval(c.args[0]) for c in ast.walk(ast.parse(LAUNCH.read_text()))
                if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "DeclareLaunchArgument"}
    assert {"params_file", "use_sim_time", "device", "checkpoint"} <= declared


def test_params_yaml_sets_every_parameter_and_nothing_else() -> None:
    values = load_params_file(REPO / "config" / "occ_node.yaml")
    assert set(values) == set(PARAMETERS)
    values["model.checkpoint"] = "/some/model.pt"  # the launch argument fills it
    assert validate(values) is None


def test_validation_rejects_out_of_range_values_with_a_reason() -> None:
    values = load_params_file(REPO / "config" / "occ_node.yaml")
    values["model.checkpoint"] = "/x.pt"
    for name, bad in [("sync.window_after_s", -1.0), ("outputs.marker_alpha", 2.0), ("model.device", "gpu"),
                      ("model.precision", "int8"), ("outputs.class_filter", "car,unicorn"), ("outputs.enabled", ["bev"])]:
        reason = validate({**values, name: bad})
        assert reason is not None and name in reason, (name, reason)
    assert "history.tolerance_s" in validate({**values, "history.tolerance_s": 0.6, "history.spacing_s": 0.5})
    assert "not set" in validate({**values, "model.config": None})

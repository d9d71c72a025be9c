"""What `ros2 launch fusionocc_ros occ.launch.py ...` starts, checked through the same function the
launch file calls (`launch_args.node_launch`; `launch`/`launch_ros` are not installable on our CI,
so the launch file itself runs against small recording stand-ins of the names it imports from
them, and must start exactly what that function describes). The rviz config is parsed and checked
against the topic table. The node really started this way, in a namespace and renamed, is
exercised in test_end_to_end.py."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_ros import resources, topics
from fusionocc_ros.launch_args import LAUNCH_ARGUMENTS, PARAMETER_ARGUMENTS, node_launch, rviz_config_for
from fusionocc_ros.params import PARAMETERS, load_params_file, resolve, validate

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "occ.launch.py"


def test_defaults_remap_every_input_to_the_converters_topics() -> None:
    node = node_launch()
    assert node.name == topics.NODE_NAME and node.namespace == "" and not node.rviz
    assert Path(node.params_file) == resources.params_file()
    assert node.overrides == {"use_sim_time": False}  # everything else comes from the params file
    remap = dict(node.remappings)
    assert remap["~/input/lidar"] == "/lidar_top"
    for cam in CAMERA_NAMES:  # image_transport naming: the node subscribes <base>/compressed
        assert remap[f"~/input/{cam.lower()}/image"] == f"/{cam.lower()}/image_rect"
        assert remap[f"~/input/{cam.lower()}/camera_info"] == f"/{cam.lower()}/camera_info"
    assert len(remap) == 1 + 2 * len(CAMERA_NAMES)
    # the converter writes exactly the topics the node reads by default
    bag = topics.bag_topics()
    assert {dst + ("/compressed" if "/image" in src else "") for src, dst in node.remappings} <= set(bag)


def test_every_input_topic_is_an_argument() -> None:
    names = {a.name for a in LAUNCH_ARGUMENTS}
    for inp in topics.node_inputs():
        assert inp.argument in names
        node = node_launch({inp.argument: "/elsewhere/topic"})
        changed = [(s, d) for s, d in node.remappings if d == "/elsewhere/topic"]
        assert changed == [(inp.private, "/elsewhere/topic")]
    assert {"params_file", "checkpoint", "model_config", "device", "precision", "namespace", "node_name",
            "use_sim_time", "rviz"} <= names


def test_namespace_and_node_name_move_the_outputs() -> None:
    node = node_launch({"namespace": "robot1/", "node_name": "occ_front", "use_sim_time": "true", "rviz": "true"})
    assert node.namespace == "/robot1" and node.name == "occ_front" and node.rviz
    assert node.output_topics()["voxels"] == ("/robot1/occ_front/output/voxels", "fusionocc_msgs/msg/SemanticVoxelGrid")
    args = node.ros_args()
    assert args[:5] == ["--ros-args", "-r", "__node:=occ_front", "-r", "__ns:=/robot1"]
    assert "use_sim_time:=true" in args
    # the shipped params file applies to any node name and namespace ('/**')
    values = load_params_file(node.params_file, node.name, node.namespace)
    assert set(values) == set(PARAMETERS)


def test_parameter_arguments_override_the_params_file_only_when_given() -> None:
    node = node_launch({"checkpoint": "/m.pth", "model_config": "official", "device": "cuda:1", "precision": "bf16",
                        "compile": "true"})
    assert node.overrides == {"model.checkpoint": "/m.pth", "model.config": "official", "model.device": "cuda:1",
                              "model.precision": "bf16", "model.compile": True, "use_sim_time": False}
    assert "model.compile:=true" in node.ros_args()  # a bool, as the parameter's type
    assert node_launch({"compile": "false"}).overrides["model.compile"] is False
    assert "model.compile" not in node_launch({"compile": ""}).overrides
    assert set(PARAMETER_ARGUMENTS.values()) <= set(PARAMETERS)
    values = {**load_params_file(node.params_file), **{k: v for k, v in node.overrides.items() if k in PARAMETERS}}
    assert resolve(values) is values
    with pytest.raises(ValueError, match="unknown launch argument"):
        node_launch({"chekpoint": "/m.pth"})
    for bad in ({"rviz": "maybe"}, {"compile": "yes please"}):
        with pytest.raises(ValueError, match="not true or false"):
            node_launch(bad)


class _Action:
    """Stand-in for a `launch` / `launch_ros` action: records how the launch file built it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    """Stand-in for launch.substitutions.LaunchConfiguration: perform() reads the context's value."""

    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: SimpleNamespace) -> str:
        return context.launch_configurations[self.name]


def _stand_in_modules() -> dict[str, ModuleType]:
    """The few names occ.launch.py imports from `launch` and `launch_ros`, as recording stand-ins
    (neither package installs from PyPI, so the launch file runs against these)."""
    mods = {name: ModuleType(name) for name in ("launch", "launch.actions", "launch.substitutions",
                                                "launch_ros", "launch_ros.actions")}
    mods["launch"].LaunchDescription = type("LaunchDescription", (_Action,), {})
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Action,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Action,), {})
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (_Action,), {})
    return mods


def _launch(monkeypatch: pytest.MonkeyPatch, given: dict[str, str]) -> tuple[list[_Action], list[_Action]]:
    """Run occ.launch.py as `ros2 launch` would with `given` arguments: declare its arguments
    (defaults fill what was not given), then perform its OpaqueFunction. -> (declared, started)."""
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("occ_launch_under_test", LAUNCH)
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    (entities,) = launch_file.generate_launch_description().args
    declared = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(declared) + 1 == len(entities)
    values = {d.args[0]: d.kwargs["default_value"] for d in declared} | given
    started = opaque.kwargs["function"](SimpleNamespace(launch_configurations=values))
    return declared, started


def test_launch_file_declares_every_argument_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    declared, _ = _launch(monkeypatch, {})
    assert [(d.args[0], d.kwargs["default_value"], d.kwargs["description"]) for d in declared] == \
        [(a.name, a.default, a.description) for a in LAUNCH_ARGUMENTS]


@pytest.mark.parametrize("given", [
    {},
    {"namespace": "robot1", "node_name": "occ_front", "use_sim_time": "true", "lidar_topic": "/sensing/lidar/top/points",
     "checkpoint": "/m.pth", "device": "cuda:1", "precision": "bf16", "model_config": "official"},
], ids=["defaults", "namespace-remap-overrides"])
def test_launch_file_starts_the_node_node_launch_describes(monkeypatch: pytest.MonkeyPatch, given: dict) -> None:
    _, started = _launch(monkeypatch, given)
    want = node_launch(given)
    (node,) = started  # rviz is off unless asked for
    assert node.kwargs == {"package": topics.PACKAGE, "executable": topics.EXECUTABLE, "name": want.name,
                           "namespace": want.namespace, "output": "screen",
                           "parameters": [want.params_file, want.overrides], "remappings": want.remappings}


def test_launch_file_starts_rviz_on_the_followed_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {"namespace": "robot1", "node_name": "occ_front", "rviz": "true", "use_sim_time": "true"}
    _, started = _launch(monkeypatch, given)
    node, rviz = started
    assert node.kwargs["name"] == "occ_front" and node.kwargs["namespace"] == "/robot1"
    assert rviz.kwargs["package"] == "rviz2" and rviz.kwargs["executable"] == "rviz2"
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]
    flag, path = rviz.kwargs["arguments"]
    assert flag == "-d"
    try:
        assert Path(path).read_text() == rviz_config_for(node_launch(given), resources.rviz_config())
    finally:
        Path(path).unlink()


def test_the_executable_the_launch_file_starts_is_installed() -> None:
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts[topics.EXECUTABLE] == "fusionocc_ros.node:main"
    assert "install_scripts=$base/lib/fusionocc_ros" in (REPO / "setup.cfg").read_text()  # ros2 run finds it


def test_params_yaml_sets_every_parameter_and_nothing_else() -> None:
    values = load_params_file(REPO / "config" / "occ_node.yaml")
    assert set(values) == set(PARAMETERS)
    values["model.checkpoint"] = "/some/model.pt"  # the launch argument fills it
    assert resolve(values) is values


def test_validation_rejects_out_of_range_values_with_a_reason() -> None:
    values = load_params_file(REPO / "config" / "occ_node.yaml")
    values["model.checkpoint"] = "/x.pt"
    for name, bad in [("sync.window_after_s", -1.0), ("outputs.marker_alpha", 2.0), ("model.device", "gpu"),
                      ("model.precision", "int8"), ("outputs.class_filter", "car,unicorn"), ("outputs.enabled", ["bev"]),
                      ("input_image_type", "theora"), ("tf.max_wait_s", -0.5)]:
        reason = validate({**values, name: bad})
        assert reason is not None and name in reason, (name, reason)
    assert "history.tolerance_s" in validate({**values, "history.tolerance_s": 0.6, "history.spacing_s": 0.5})
    assert "not set" in validate({**values, "model.config": None})


# --- rviz ------------------------------------------------------------------------------------

RVIZ_TYPES = {  # rviz_default_plugins display -> the message types it shows
    "rviz_default_plugins/MarkerArray": {topics.MARKER_ARRAY_TYPE},
    "rviz_default_plugins/PointCloud2": {topics.CLOUD_TYPE},
    "rviz_default_plugins/Image": {topics.RAW_IMAGE_TYPE, topics.COMPRESSED_IMAGE_TYPE},
}


def _displays(text: str) -> list[dict]:
    return yaml.safe_load(text)["Visualization Manager"]["Displays"]


def _check_rviz(text: str, known: dict[str, str]) -> list[str]:
    """Topics shown by the rviz config; each must be a known topic of a type its display can show.
    An Image display names an image_transport topic: '<base>/compressed' is read as CompressedImage."""
    shown = []
    for d in _displays(text):
        topic = (d.get("Topic") or {}).get("Value")
        if topic is None:
            continue
        assert d["Class"] in RVIZ_TYPES, d["Class"]
        assert topic in known, f"{d['Name']}: {topic} is not in the topic table"
        assert known[topic] in RVIZ_TYPES[d["Class"]], (d["Name"], topic, known[topic])
        shown.append(topic)
    return shown


def test_rviz_config_shows_topics_of_the_table_with_matching_displays() -> None:
    shown = _check_rviz((REPO / "config" / "occ.rviz").read_text(), topics.all_topics())
    assert {topics.output_topic("markers"), topics.output_topic("cloud"), topics.LIDAR} <= set(shown)
    assert {topics.image_topic(c) for c in CAMERA_NAMES} <= set(shown)  # `<base>/compressed`, as image_transport


def test_rviz_config_follows_the_namespace_and_remapped_inputs() -> None:
    node = node_launch({"namespace": "robot1", "node_name": "occ_front", "cam_front_image_topic": "/front/image"})
    text = rviz_config_for(node, resources.rviz_config())
    known = topics.all_topics("/robot1", "occ_front") | {"/front/image/compressed": topics.COMPRESSED_IMAGE_TYPE}
    shown = _check_rviz(text, known)
    assert "/robot1/occ_front/output/markers" in shown and "/front/image/compressed" in shown
    assert topics.output_topic("markers") not in shown

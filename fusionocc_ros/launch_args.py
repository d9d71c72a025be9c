"""The launch file's arguments and what they turn into, as plain Python (no `launch` import).

launch/occ.launch.py declares every argument of `LAUNCH_ARGUMENTS` and hands their values to
`node_launch`, which decides the node's name, namespace, parameters and remappings. Tools and
tests that start the node without `ros2 launch` (`fusionocc_ros.live_run`, the node tests) call
the same function and turn its answer into `--ros-args` with `NodeLaunch.ros_args()`, so both
ways start the same node. Topic defaults come from the topic table (`fusionocc_ros.topics`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from fusionocc_ros import topics


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


def _arguments() -> tuple[LaunchArgument, ...]:
    args = [
        LaunchArgument("params_file", "", "node parameters YAML ('' = the installed config/occ_node.yaml)"),
        LaunchArgument("checkpoint", "", "model checkpoint: ours (fusionocc-train) or the official .pth "
                                         "('' = model.checkpoint of params_file)"),
        LaunchArgument("model_config", "", "model preset (tiny, official) or config YAML ('' = params_file's)"),
        LaunchArgument("device", "", "cpu, cuda or cuda:N ('' = params_file's)"),
        LaunchArgument("precision", "", "fp32, bf16 or fp16 ('' = params_file's)"),
        LaunchArgument("compile", "", "true: torch.compile the model on CUDA (longer warm-up, faster frames); "
                                      "'' = params_file's"),
        LaunchArgument("namespace", "", "namespace of the node (its outputs become /<ns>/<node>/output/...)"),
        LaunchArgument("node_name", topics.NODE_NAME, "name of the node"),
        LaunchArgument("use_sim_time", "false", "use /clock (true when playing a bag with --clock)"),
        LaunchArgument("rviz", "false", "also start rviz2 with config/occ.rviz (topics follow namespace/node_name)"),
    ]
    for inp in topics.node_inputs():
        what = "PointCloud2" if inp.private.endswith("lidar") else (
            "image_transport base topic (the node subscribes <base>/compressed or <base>)"
            if inp.private.endswith("/image") else "CameraInfo")
        args.append(LaunchArgument(inp.argument, inp.default, f"{inp.private}: {what}"))
    return tuple(args)


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = _arguments()
# launch argument -> the node parameter it overrides when not empty (BOOL_ARGUMENTS: as true/false)
PARAMETER_ARGUMENTS = {"checkpoint": "model.checkpoint", "model_config": "model.config",
                       "device": "model.device", "precision": "model.precision", "compile": "model.compile"}
BOOL_ARGUMENTS = ("compile",)
_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class NodeLaunch:
    """Everything needed to start the node: what the launch file passes to launch_ros' Node."""

    name: str
    namespace: str
    params_file: str
    overrides: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    rviz: bool = False

    def ros_args(self) -> list[str]:
        """The same node as `--ros-args` (for `fusionocc-node` / `ros2 run` without launch)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        args += ["--params-file", self.params_file]
        for name, value in self.overrides.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{name}:={text}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args

    def input_topics(self, image_kind: str = "compressed") -> list[str]:
        """The topics this node subscribes (after remapping), /tf and /tf_static included; images as
        image_transport resolves `image_kind` (compressed: `<base>/compressed`)."""
        suffix = topics.IMAGE_KINDS[image_kind][1]
        return [dst + suffix if src.endswith("/image") else dst for src, dst in self.remappings] + [topics.TF, topics.TF_STATIC]

    def output_topics(self) -> dict[str, tuple[str, str]]:
        """Output name -> (resolved topic, type) of the node this launches."""
        return topics.output_topics(self.namespace, self.name)


def _bool(name: str, text: str) -> bool:
    low = str(text).strip().lower()
    if low not in _TRUE + ("false", "0", "no", "off", ""):
        raise ValueError(f"launch argument {name}:={text} is not true or false")
    return low in _TRUE


def node_launch(values: Mapping[str, Any] | None = None) -> NodeLaunch:
    """The node to start for launch argument `values` (strings, as `ros2 launch` gives them; missing
    ones take their defaults). Parameter arguments left empty keep the params file's values."""
    given = dict(values or {})
    unknown = sorted(set(given) - {a.name for a in LAUNCH_ARGUMENTS})
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}")
    v = {a.name: str(given.get(a.name, a.default)) for a in LAUNCH_ARGUMENTS}
    params_file = v["params_file"]
    if not params_file:
        from fusionocc_ros.resources import params_file as installed

        params_file = str(installed())
    overrides: dict[str, Any] = {param: _bool(arg, v[arg]) if arg in BOOL_ARGUMENTS else v[arg]
                                 for arg, param in PARAMETER_ARGUMENTS.items() if v[arg].strip()}
    overrides["use_sim_time"] = _bool("use_sim_time", v["use_sim_time"])
    namespace = v["namespace"].strip()
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    remappings = [(inp.private, v[inp.argument]) for inp in topics.node_inputs()]
    return NodeLaunch(name=v["node_name"] or topics.NODE_NAME, namespace=namespace, params_file=params_file,
                      overrides=overrides, remappings=remappings, rviz=_bool("rviz", v["rviz"]))


def rviz_config_for(launch: NodeLaunch, template: str | Path) -> str:
    """The rviz2 config text of `template` with the node's output topics moved to where `launch`
    publishes them (namespace, node name) and the sensor displays to its input topics."""
    doc = yaml.safe_load(Path(template).read_text())
    moved = {topics.output_topic(o): t for o, (t, _) in launch.output_topics().items()}
    inputs = {inp.default: dst for inp, (_, dst) in zip(topics.node_inputs(), launch.remappings)}
    for cam in (c for c in topics.CAMERA_NAMES):  # image displays name <base>/compressed
        base = topics.image_base_topic(cam)
        moved[topics.image_topic(cam)] = inputs.get(base, base) + topics.IMAGE_KINDS["compressed"][1]
    moved.update({k: w for k, w in inputs.items() if k not in moved})
    for display in doc.get("Visualization Manager", {}).get("Displays", []):
        topic = display.get("Topic")
        if isinstance(topic, dict) and topic.get("Value") in moved:
            topic["Value"] = moved[topic["Value"]]
    return yaml.safe_dump(doc, sort_keys=False)

"""The node's parameters: names, types, descriptions, validation and the mapping to settings.

Plain Python (no rclpy) so that `fusionocc-replay --params` reads the same YAML the node does,
with the same checks and the same one-line reasons (`cannot start: <reason>`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL
from fusionocc_core.inference_options import PRECISION_NAMES, SPARSE_CONV_ALGORITHMS
from fusionocc_ros.topics import IMAGE_KINDS, NODE_NAME

OUTPUTS = ("markers", "voxels", "cloud")


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the node's YAML configures below the model: built only by pipeline_settings() from
    a complete parameter set (config/occ_node.yaml holds the values; none has a default in code)."""

    ego_frame: str
    fixed_frame: str
    sync_window_before_s: float
    sync_window_after_s: float
    sync_max_wait_s: float
    camera_buffer_size: int
    history_spacing_s: float
    history_tolerance_s: float
    tf_cache_s: float
    outputs: tuple[str, ...]  # of OUTPUTS
    class_filter: tuple[str, ...]  # class names drawn in markers/cloud; () = every non-free class
    marker_lifetime_s: float
    marker_alpha: float
    publish_confidence: bool
    tf_wait_s: float  # stream time a set may wait for its TF / calibration (a localisation lag)


# name -> (type, description). All required: values come from the parameters YAML.
PARAMETERS: dict[str, tuple[str, str]] = {
    "model.config": ("string", "model preset name (tiny, official) or a config YAML path"),
    "model.checkpoint": ("string", "checkpoint path: ours (fusionocc-train) or the official FusionOcc .pth"),
    "model.device": ("string", "cpu, cuda or cuda:N"),
    "model.precision": ("string", "fp32, bf16 or fp16 (half precisions on CUDA only)"),
    "model.compile": ("bool", "torch.compile the model (CUDA only)"),
    "model.sparse_conv": ("string", "the LiDAR encoder's sparse conv: auto (table on CUDA, pairs on the CPU), "
                                    "pairs, table, or triton (one Triton kernel per conv; CUDA only)"),
    "input_image_type": ("string", "compressed (sensor_msgs/CompressedImage on <base>/compressed) or raw "
                                   "(sensor_msgs/Image on <base>): image_transport's topic naming"),
    "input_qos": ("string", "sensor_data (rclpy's sensor-data profile: best effort, depth 5) or reliable (depth 2)"),
    "frames.ego": ("string", "ego frame of the output grid (base_link)"),
    "frames.fixed": ("string", "fixed frame for ego-motion compensation (map); empty = none"),
    "sync.window_before_s": ("double", "camera frames up to this long before the LiDAR stamp match it "
                             "(nuScenes: the cameras lie 0.5-43 ms before the end-of-sweep LiDAR stamp)"),
    "sync.window_after_s": ("double", "camera frames up to this long after the LiDAR stamp match it "
                            "(small, so the next camera cycle, 40+ ms later, is never taken)"),
    "sync.max_wait_s": ("double", "stream time to wait for a late camera before dropping the sweep"),
    "sync.camera_buffer_size": ("integer", "frames buffered per camera"),
    "tf.max_wait_s": ("double", "stream time a synchronized set may wait for its TF (a localisation lag) "
                                "before it is dropped as tf_timeout"),
    "tf.cache_time_s": ("double", "how much TF history is kept (tf2's cache time)"),
    "history.spacing_s": ("double", "spacing of the previous key-frames (images and sweeps)"),
    "history.tolerance_s": ("double", "how far a history frame may be from its ideal time"),
    "outputs.enabled": ("string_array", "outputs to publish: markers, voxels, cloud (each built only while subscribed)"),
    "outputs.class_filter": ("string", "comma-separated classes drawn in markers/cloud; empty = all non-free"),
    "outputs.marker_max_rate_hz": ("double", "upper bound on MarkerArray publishing (0 = every frame)"),
    "outputs.marker_lifetime_s": ("double", "Marker lifetime (0 = forever)"),
    "outputs.marker_alpha": ("double", "Marker colour alpha in [0, 1]"),
    "outputs.confidence": ("bool", "fill SemanticVoxelGrid.confidence"),
    "inference.queue_size": ("integer", "synchronized sets waiting for the model: 1 = the newest wins (live: "
                                        "never falls behind); N > 1 keeps up to N in order, the oldest dropped as "
                                        "superseded when full (e.g. every key-frame of a bag played faster than the model)"),
    "diagnostics.period_s": ("double", "period of /diagnostics"),
    "diagnostics.max_latency_s": ("double", "/diagnostics warns when the end-to-end p95 latency exceeds this (0 = never)"),
}
RUNTIME_PREFIX = "outputs."  # only these may change while running


def split_names(text: str) -> tuple[str, ...]:
    """'car, truck' -> ('car', 'truck'); '' -> ()."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def validate(values: dict[str, Any]) -> str | None:
    """The reason the values are invalid, or None. Used at start-up and by the parameter callback."""
    checks = {
        "model.precision": lambda v: v in PRECISION_NAMES,
        "model.sparse_conv": lambda v: v in SPARSE_CONV_ALGORITHMS,
        "model.device": lambda v: v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()),
        "model.config": lambda v: bool(v),
        "model.checkpoint": lambda v: bool(v),
        "input_image_type": lambda v: v in IMAGE_KINDS,
        "input_qos": lambda v: v in ("sensor_data", "reliable"),
        "frames.ego": lambda v: bool(v),
        "sync.window_before_s": lambda v: 0.0 <= v <= 1.0,
        "sync.window_after_s": lambda v: 0.0 < v <= 1.0,
        "sync.max_wait_s": lambda v: 0.0 <= v <= 5.0,
        "sync.camera_buffer_size": lambda v: 1 <= v <= 1000,
        "tf.max_wait_s": lambda v: 0.0 <= v <= 5.0,
        "tf.cache_time_s": lambda v: 1.0 <= v <= 3600.0,
        "history.spacing_s": lambda v: 0.0 < v <= 5.0,
        "history.tolerance_s": lambda v: 0.0 <= v,
        "outputs.enabled": lambda v: set(v) <= set(OUTPUTS),
        "outputs.class_filter": lambda v: set(split_names(v)) <= set(CLASS_NAMES) - {CLASS_NAMES[FREE_LABEL]},
        "outputs.marker_max_rate_hz": lambda v: 0.0 <= v <= 1000.0,
        "outputs.marker_lifetime_s": lambda v: 0.0 <= v <= 3600.0,
        "outputs.marker_alpha": lambda v: 0.0 <= v <= 1.0,
        "inference.queue_size": lambda v: 1 <= v <= 100,
        "diagnostics.period_s": lambda v: 0.05 <= v <= 60.0,
        "diagnostics.max_latency_s": lambda v: 0.0 <= v <= 600.0,
    }
    for name, value in values.items():
        if value is None:
            return f"parameter '{name}' is not set (it has no default: set it in the parameters YAML)"
        if name == "model.checkpoint" and not value:
            return "no checkpoint: pass checkpoint:=/path/model.pth (launch) or -p model.checkpoint:=/path/model.pth"
        check = checks.get(name)
        if check is not None and not check(value):
            return f"parameter '{name}' has an invalid value {value!r} ({PARAMETERS[name][1]})"
    if values.get("model.device") == "cpu":  # half precisions, compile and the Triton kernel need CUDA
        if values.get("model.precision", "fp32") != "fp32":
            return f"parameter 'model.precision' {values['model.precision']!r} needs a CUDA device (model.device is cpu): use fp32"
        if values.get("model.compile"):
            return "parameter 'model.compile' is true but model.device is cpu: torch.compile is used on CUDA only"
        if values.get("model.sparse_conv") == "triton":
            return "parameter 'model.sparse_conv' is 'triton' but model.device is cpu: the Triton kernel runs on CUDA only"
    if "history.tolerance_s" in values and "history.spacing_s" in values:
        if not values["history.tolerance_s"] < values["history.spacing_s"]:
            return "parameter 'history.tolerance_s' must be smaller than 'history.spacing_s'"
    return None


def pipeline_settings(p: dict[str, Any]) -> PipelineSettings:
    """The pipeline's settings from a complete, valid parameter set."""
    return PipelineSettings(
        ego_frame=p["frames.ego"],
        fixed_frame=p["frames.fixed"],
        sync_window_before_s=p["sync.window_before_s"],
        sync_window_after_s=p["sync.window_after_s"],
        sync_max_wait_s=p["sync.max_wait_s"],
        camera_buffer_size=p["sync.camera_buffer_size"],
        tf_wait_s=p["tf.max_wait_s"],
        tf_cache_s=p["tf.cache_time_s"],
        history_spacing_s=p["history.spacing_s"],
        history_tolerance_s=p["history.tolerance_s"],
        outputs=tuple(p["outputs.enabled"]),
        class_filter=split_names(p["outputs.class_filter"]),
        marker_lifetime_s=p["outputs.marker_lifetime_s"],
        marker_alpha=p["outputs.marker_alpha"],
        publish_confidence=p["outputs.confidence"],
    )


class ParameterError(ValueError):
    """The parameters cannot be used; str() is the one-line reason (`cannot start: <reason>`)."""


_PY_TYPES: dict[str, type] = {"string": str, "double": float, "integer": int, "bool": bool}
_WANT = {"string": "a string", "double": "a double", "integer": "an integer", "bool": "a bool",
         "string_array": "a list of strings"}
_GOT = {str: "a string", float: "a double", int: "an integer", bool: "a bool", list: "a list", dict: "a mapping"}


def type_problem(name: str, value: Any) -> str | None:
    """Why `value` does not have parameter `name`'s declared type (rclpy refuses it too), or None."""
    ptype = PARAMETERS[name][0]
    if value is None:
        return None  # "not set" is resolve()'s reason
    if ptype == "string_array":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    else:
        ok = type(value) is _PY_TYPES[ptype]
    if ok:
        return None
    hint = f" (write {float(value)!r})" if ptype == "double" and type(value) is int else ""
    return f"parameter '{name}' must be {_WANT[ptype]}, got {_GOT.get(type(value), type(value).__name__)} {value!r}{hint}"


def check_types(values: dict[str, Any]) -> str | None:
    """The first unknown parameter or wrongly typed value in `values`, or None."""
    for name, value in values.items():
        if name not in PARAMETERS:
            return f"unknown parameter '{name}' (a typo? see config/occ_node.yaml for the names)"
        problem = type_problem(name, value)
        if problem:
            return problem
    return None


def _matches(pattern: list[str], name: list[str]) -> bool:
    """rcl's node-name wildcards: `*` is one token, `**` any number of tokens."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, name[i:]) for i in range(len(name) + 1))
    return bool(name) and (head == "*" or head == name[0]) and _matches(rest, name[1:])


def node_section(doc: dict, node_name: str = NODE_NAME, namespace: str = "") -> dict | None:
    """The ros__parameters a node `node_name` in `namespace` takes from a parsed params YAML (as rcl:
    keys are fully qualified names, a leading '/' implied, with wildcards; matches merge in order)."""
    full = [t for t in namespace.split("/") if t] + [node_name]
    merged: dict | None = None
    for key, section in doc.items():
        if not _matches([t for t in str(key).split("/") if t], full):
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ParameterError(f"section '{key}' has no 'ros__parameters:' mapping")
        merged = {**(merged or {}), **section["ros__parameters"]}
    return merged


def load_params_file(path: str | Path, node_name: str = NODE_NAME, namespace: str = "") -> dict[str, Any]:
    """Flat {dotted name: value} that node `node_name` in `namespace` gets from a ROS 2 parameters
    YAML (`/**:` matches any node). Raises ParameterError with a one-line reason."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParameterError(f"parameters file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"cannot read parameters file {path} ({type(exc).__name__})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ParameterError(f"parameters file {path} is not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ParameterError(f"parameters file {path} is not a mapping of node names to 'ros__parameters'")
    try:
        section = node_section(doc, node_name, namespace)
    except ParameterError as exc:
        raise ParameterError(f"parameters file {path}: {exc}") from None
    if section is None:
        raise ParameterError(f"parameters file {path} has no section for node '{node_name}' "
                             "(key it '/**:' to match any node name and namespace)")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", section)
    flat.pop("use_sim_time", None)  # rclpy's own parameter
    return flat


def resolve(values: dict[str, Any]) -> dict[str, Any]:
    """Check a complete parameter set (names, types, presence, values); returns it or raises ParameterError."""
    problem = check_types(values)
    if problem:
        raise ParameterError(problem)
    missing = [n for n in PARAMETERS if values.get(n) is None]
    if missing:
        raise ParameterError(f"parameter '{missing[0]}' is not set (it has no default: set it in the parameters YAML)")
    problem = validate(values)
    if problem:
        raise ParameterError(problem)
    return values

"""The node's parameters: names, types, descriptions, validation and the mapping to settings.

Plain Python (no rclpy) so that `fusionocc-replay` reads the same YAML the node does and a test
can check the launch file and config/occ_node.yaml against this table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL
from fusionocc_ros.pipeline import OUTPUTS, PipelineSettings

NODE_NAME = "fusionocc_occupancy"
# name -> (type, description). All required: values come from the parameters YAML.
PARAMETERS: dict[str, tuple[str, str]] = {
    "model.config": ("string", "model preset name (tiny, official) or a config YAML path"),
    "model.checkpoint": ("string", "checkpoint path: ours (fusionocc-train) or the official FusionOcc .pth"),
    "model.device": ("string", "cpu, cuda or cuda:N"),
    "model.precision": ("string", "fp32, bf16 or fp16 (half precisions on CUDA only)"),
    "model.compile": ("bool", "torch.compile the model (CUDA only)"),
    "image_transport": ("string", "compressed (sensor_msgs/CompressedImage) or raw (sensor_msgs/Image)"),
    "input_qos": ("string", "sensor_data (best effort, depth 2) or reliable (depth 2)"),
    "frames.ego": ("string", "ego frame of the output grid (base_link)"),
    "frames.fixed": ("string", "fixed frame for ego-motion compensation (map); empty = none"),
    "sync.window_before_s": ("double", "camera frames up to this long before the LiDAR stamp match it"),
    "sync.window_after_s": ("double", "camera frames up to this long after the LiDAR stamp match it"),
    "sync.max_wait_s": ("double", "stream time to wait for a late camera before dropping the sweep"),
    "sync.camera_buffer_size": ("integer", "frames buffered per camera"),
    "history.spacing_s": ("double", "spacing of the previous key-frames (images and sweeps)"),
    "history.tolerance_s": ("double", "how far a history frame may be from its ideal time"),
    "outputs.enabled": ("string_array", "outputs to publish: markers, voxels, cloud"),
    "outputs.class_filter": ("string", "comma-separated classes drawn in markers/cloud; empty = all non-free"),
    "outputs.marker_max_rate_hz": ("double", "upper bound on MarkerArray publishing (0 = every frame)"),
    "outputs.marker_lifetime_s": ("double", "Marker lifetime (0 = forever)"),
    "outputs.marker_alpha": ("double", "Marker colour alpha in [0, 1]"),
    "outputs.confidence": ("bool", "fill SemanticVoxelGrid.confidence"),
    "diagnostics.period_s": ("double", "period of /diagnostics"),
}
RUNTIME_PREFIX = "outputs."  # only these may change while running


def split_names(text: str) -> tuple[str, ...]:
    """'car, truck' -> ('car', 'truck'); '' -> ()."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def validate(values: dict[str, Any]) -> str | None:
    """The reason the values are invalid, or None. Used at start-up and by the parameter callback."""
    checks = {
        "model.precision": lambda v: v in ("fp32", "bf16", "fp16"),
        "model.device": lambda v: v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()),
        "model.config": lambda v: bool(v),
        "model.checkpoint": lambda v: bool(v),
        "image_transport": lambda v: v in ("compressed", "raw"),
        "input_qos": lambda v: v in ("sensor_data", "reliable"),
        "frames.ego": lambda v: bool(v),
        "sync.window_before_s": lambda v: 0.0 <= v <= 1.0,
        "sync.window_after_s": lambda v: 0.0 < v <= 1.0,
        "sync.max_wait_s": lambda v: 0.0 <= v <= 5.0,
        "sync.camera_buffer_size": lambda v: 1 <= v <= 1000,
        "history.spacing_s": lambda v: 0.0 < v <= 5.0,
        "history.tolerance_s": lambda v: 0.0 <= v,
        "outputs.enabled": lambda v: set(v) <= set(OUTPUTS),
        "outputs.class_filter": lambda v: set(split_names(v)) <= set(CLASS_NAMES) - {CLASS_NAMES[FREE_LABEL]},
        "outputs.marker_max_rate_hz": lambda v: 0.0 <= v <= 1000.0,
        "outputs.marker_lifetime_s": lambda v: 0.0 <= v <= 3600.0,
        "outputs.marker_alpha": lambda v: 0.0 <= v <= 1.0,
        "diagnostics.period_s": lambda v: 0.05 <= v <= 60.0,
    }
    for name, value in values.items():
        if value is None:
            return f"parameter '{name}' is not set (it has no default: set it in the parameters YAML)"
        check = checks.get(name)
        if check is not None and not check(value):
            return f"parameter '{name}' has an invalid value {value!r} ({PARAMETERS[name][1]})"
    if "history.tolerance_s" in values and "history.spacing_s" in values:
        if not values["history.tolerance_s"] < values["history.spacing_s"]:
            return "parameter 'history.tolerance_s' must be smaller than 'history.spacing_s'"
    return None


def pipeline_settings(p: dict[str, Any]) -> PipelineSettings:
    return PipelineSettings(
        ego_frame=p["frames.ego"],
        fixed_frame=p["frames.fixed"],
        sync_window_before_s=p["sync.window_before_s"],
        sync_window_after_s=p["sync.window_after_s"],
        sync_max_wait_s=p["sync.max_wait_s"],
        camera_buffer_size=p["sync.camera_buffer_size"],
        history_spacing_s=p["history.spacing_s"],
        history_tolerance_s=p["history.tolerance_s"],
        outputs=tuple(p["outputs.enabled"]),
        class_filter=split_names(p["outputs.class_filter"]),
        marker_lifetime_s=p["outputs.marker_lifetime_s"],
        marker_alpha=p["outputs.marker_alpha"],
        publish_confidence=p["outputs.confidence"],
    )


def load_params_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """Flat {dotted name: value} of one node's ros__parameters in a ROS 2 parameters YAML."""
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    section = doc.get(node_name) or doc.get(f"/{node_name}") or doc.get("/**")
    if not isinstance(section, dict) or "ros__parameters" not in section:
        raise ValueError(f"{path}: no '{node_name}: ros__parameters:' section")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", section["ros__parameters"])
    return flat


def default_remappings(cameras: tuple[str, ...]) -> list[tuple[str, str]]:
    """The node's input remappings to the converter's topics, as launch/occ.launch.py sets them."""
    pairs = [("~/input/lidar", "/lidar_top")]
    for cam in (c.lower() for c in cameras):
        pairs.append((f"~/input/{cam}/image", f"/{cam}/image_rect_compressed"))
        pairs.append((f"~/input/{cam}/camera_info", f"/{cam}/camera_info"))
    return pairs


def ros_args(params_file: str | Path, overrides: dict[str, Any], cameras: tuple[str, ...]) -> list[str]:
    """`--ros-args` for starting the node from a shell the way the launch file starts it."""
    args = ["--ros-args", "--params-file", str(params_file)]
    for name, value in overrides.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    for src, dst in default_remappings(cameras):
        args += ["-r", f"{src}:={dst}"]
    return args

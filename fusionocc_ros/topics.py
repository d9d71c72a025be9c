"""The topic table: every topic name and message type the package uses, in one place (no ROS).

The converter writes these topics, `fusionocc-play` publishes them, the launch file remaps the
node's private inputs to them, `fusionocc-replay` reads them, and config/occ.rviz displays them
(a test parses the rviz file against this table). Camera images follow image_transport naming:
the base topic is `/<cam_lower>/image_rect`, the JPEGs travel on `<base>/compressed` and raw
images on the base itself; CameraInfo is `/<cam_lower>/camera_info` (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass

from fusionocc_core.classes import CAMERA_NAMES

NODE_NAME = "fusionocc_occupancy"
EXECUTABLE = "occupancy_node"  # what `ros2 run fusionocc_ros ...` and the launch file start
PACKAGE = "fusionocc_ros"

TF = "/tf"
TF_STATIC = "/tf_static"
LIDAR = "/lidar_top"
GROUND_TRUTH = "/occupancy/gt"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"

TF_TYPE = "tf2_msgs/msg/TFMessage"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
RAW_IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
VOXEL_GRID_TYPE = "fusionocc_msgs/msg/SemanticVoxelGrid"
MARKER_ARRAY_TYPE = "visualization_msgs/msg/MarkerArray"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"

# image input kinds (parameter `input_image_type`): the message type and the image_transport suffix
IMAGE_KINDS: dict[str, tuple[str, str]] = {"compressed": (COMPRESSED_IMAGE_TYPE, "/compressed"), "raw": (RAW_IMAGE_TYPE, "")}

# the node's private outputs: name -> (relative name, message type)
OUTPUTS: dict[str, tuple[str, str]] = {
    "markers": ("output/markers", MARKER_ARRAY_TYPE),
    "voxels": ("output/voxels", VOXEL_GRID_TYPE),
    "cloud": ("output/cloud", CLOUD_TYPE),
}


def image_base_topic(camera: str) -> str:
    """image_transport base topic of a camera, e.g. CAM_FRONT -> /cam_front/image_rect."""
    return f"/{camera.lower()}/image_rect"


def image_topic(camera: str, kind: str = "compressed") -> str:
    """Topic carrying the camera's images of `kind` (compressed: `<base>/compressed`; raw: `<base>`)."""
    return image_base_topic(camera) + IMAGE_KINDS[kind][1]


def camera_info_topic(camera: str) -> str:
    """CameraInfo topic of a camera, e.g. CAM_FRONT -> /cam_front/camera_info."""
    return f"/{camera.lower()}/camera_info"


@dataclass(frozen=True)
class NodeInput:
    """One input of the node: its private name, the launch argument that sets its topic, the
    default topic (the converter's) and the message type."""

    private: str
    argument: str
    default: str
    msgtype: str


def node_inputs(cameras: tuple[str, ...] = CAMERA_NAMES) -> list[NodeInput]:
    """The node's remappable inputs in launch-argument order: LiDAR, then per camera image + info.

    Image inputs are image_transport *base* topics: the node subscribes `<base>/compressed` for
    `input_image_type: compressed` and `<base>` for `raw`, after remapping, as image_transport does."""
    out = [NodeInput("~/input/lidar", "lidar_topic", LIDAR, CLOUD_TYPE)]
    for cam in cameras:
        low = cam.lower()
        out.append(NodeInput(f"~/input/{low}/image", f"{low}_image_topic", image_base_topic(cam), COMPRESSED_IMAGE_TYPE))
        out.append(NodeInput(f"~/input/{low}/camera_info", f"{low}_info_topic", camera_info_topic(cam), CAMERA_INFO_TYPE))
    return out


def node_namespace_prefix(namespace: str = "", node_name: str = NODE_NAME) -> str:
    """Fully qualified node name: '/<ns>/<node>' ('' or '/' namespace = root)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{node_name}"


def output_topic(output: str, namespace: str = "", node_name: str = NODE_NAME) -> str:
    """Resolved topic of one of the node's outputs, e.g. ('voxels', 'robot1') -> /robot1/fusionocc_occupancy/output/voxels."""
    return f"{node_namespace_prefix(namespace, node_name)}/{OUTPUTS[output][0]}"


def output_topics(namespace: str = "", node_name: str = NODE_NAME) -> dict[str, tuple[str, str]]:
    """Output name -> (resolved topic, message type) for a node started in `namespace` as `node_name`."""
    return {name: (output_topic(name, namespace, node_name), msgtype) for name, (_, msgtype) in OUTPUTS.items()}


def bag_topics(cameras: tuple[str, ...] = CAMERA_NAMES, ground_truth: bool = True) -> dict[str, str]:
    """Topic -> message type of a converted bag, in the converter's connection order."""
    topics = {TF_STATIC: TF_TYPE, TF: TF_TYPE}
    for cam in cameras:
        topics[image_topic(cam)] = COMPRESSED_IMAGE_TYPE
        topics[camera_info_topic(cam)] = CAMERA_INFO_TYPE
    topics[LIDAR] = CLOUD_TYPE
    if ground_truth:
        topics[GROUND_TRUTH] = VOXEL_GRID_TYPE
    return topics


def all_topics(namespace: str = "", node_name: str = NODE_NAME) -> dict[str, str]:
    """Every topic of a running system (bag topics, raw image bases, node outputs, diagnostics) -> type."""
    topics = bag_topics()
    topics.update({image_topic(cam, "raw"): RAW_IMAGE_TYPE for cam in CAMERA_NAMES})
    topics.update({topic: msgtype for topic, msgtype in output_topics(namespace, node_name).values()})
    topics[DIAGNOSTICS] = DIAGNOSTICS_TYPE
    return topics

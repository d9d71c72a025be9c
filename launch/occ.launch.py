"""Launch the FusionOcc occupancy node (and optionally rviz2) on the topics fusionocc-convert writes.

    ros2 launch fusionocc_ros occ.launch.py checkpoint:=/path/model.pth device:=cuda
    ros2 launch fusionocc_ros occ.launch.py checkpoint:=/path/model.pth namespace:=robot1 \\
        node_name:=occ_front use_sim_time:=true rviz:=true lidar_topic:=/sensing/lidar/top/points

`ros2 launch fusionocc_ros occ.launch.py --show-args` lists every argument. They are defined,
with their defaults, in fusionocc_ros/launch_args.py (one table shared with the tools and tests
that start the node without launch); the topic defaults come from fusionocc_ros/topics.py.
Empty parameter arguments (checkpoint, model_config, device, precision, compile) keep params_file's values.
"""
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fusionocc_ros.launch_args import LAUNCH_ARGUMENTS, node_launch, rviz_config_for
from fusionocc_ros.resources import rviz_config
from fusionocc_ros.topics import EXECUTABLE, PACKAGE


def _nodes(context, *args, **kwargs):
    """Resolve the arguments, then start the node (and rviz2) the way launch_args.node_launch says."""
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    node = node_launch(values)
    actions = [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=node.name,
            namespace=node.namespace,
            output="screen",
            parameters=[node.params_file, node.overrides],
            remappings=node.remappings,
        )
    ]
    if node.rviz:
        with tempfile.NamedTemporaryFile("w", suffix=".rviz", prefix="fusionocc_", delete=False) as f:
            f.write(rviz_config_for(node, rviz_config()))
        actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", f.name], output="screen",
                            parameters=[{"use_sim_time": node.overrides["use_sim_time"]}]))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )

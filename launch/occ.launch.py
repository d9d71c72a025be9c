"""Launch the FusionOcc occupancy node, remapped to the topics fusionocc-convert/fusionocc-play use.

    ros2 launch fusionocc_ros occ.launch.py checkpoint:=/path/model.pt device:=cuda use_sim_time:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# Model order; topic prefixes are the lower-case names (DESIGN.md §3).
CAMERAS = ("cam_front_left", "cam_front", "cam_front_right", "cam_back_left", "cam_back", "cam_back_right")


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("fusionocc_ros"), "config", "occ_node.yaml")
    remappings = [("~/input/lidar", "/lidar_top")]
    for cam in CAMERAS:
        remappings.append((f"~/input/{cam}/image", f"/{cam}/image_rect_compressed"))
        remappings.append((f"~/input/{cam}/camera_info", f"/{cam}/camera_info"))
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Node parameters YAML (see config/occ_node.yaml)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (true when replaying a bag with --clock)"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or cuda:N"),
        DeclareLaunchArgument("checkpoint", description="Model checkpoint (ours, or the official .pth)"),
        Node(
            package="fusionocc_ros",
            executable="occupancy_node",
            name="fusionocc_occupancy",
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "use_sim_time": LaunchConfiguration("use_sim_time"),
                    "model.device": LaunchConfiguration("device"),
                    "model.checkpoint": LaunchConfiguration("checkpoint"),
                },
            ],
            remappings=remappings,
        ),
    ])

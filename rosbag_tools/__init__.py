"""rosbag_tools: nuScenes -> rosbag2 conversion, bag inspection and bag replay into ROS 2.

Pure Python on `rosbags` (no ROS install needed); only `play` uses rclpy, imported inside it.
"""

"""fusionocc_ros: the ROS 2 adapter around fusionocc_core.

Plain-Python building blocks (no rclpy at import time) shared by the live node, the offline
replay and the tests: `sync` (LiDAR-anchored camera synchronizer), `tf_buffer` (TF tree with
interpolation), `conversions` (ROS messages <-> numpy), `assembler` (synchronized messages + TF
+ intrinsics -> fusionocc_core.frame.FrameSet with history), `encoders` (labels -> serialized
MarkerArray / SemanticVoxelGrid / PointCloud2), `diagnostics` (counters, rates, latencies).
Only `node.py` imports rclpy at import time.
"""

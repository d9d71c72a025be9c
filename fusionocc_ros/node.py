"""`fusionocc_occupancy`: the ROS 2 node. It only wires ROS to `OccupancyPipeline`.

Inputs (sensor-data QoS, remapped by launch/occ.launch.py): `~/input/lidar` (PointCloud2),
`~/input/<cam>/image` (CompressedImage, or Image with image_transport: raw) and
`~/input/<cam>/camera_info` for the six cameras, `/tf`, `/tf_static`. Outputs (reliable):
`~/output/markers` (MarkerArray), `~/output/voxels` (fusionocc_msgs/SemanticVoxelGrid),
`~/output/cloud` (PointCloud2 x y z rgb label), `/diagnostics`. Callbacks only buffer messages;
a worker thread infers on the newest synchronized set (latest wins, never queues behind a slow
model). Every parameter comes from the YAML file (config/occ_node.yaml); none has a code default.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace
from typing import Any, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from fusionocc_core.config import Config, load_config
from fusionocc_ros.diagnostics import Diagnostics
from fusionocc_ros.params import NODE_NAME, PARAMETERS, RUNTIME_PREFIX, pipeline_settings, validate
from fusionocc_ros.pipeline import OccupancyPipeline, PipelineResult
from fusionocc_ros.sync import SyncedSet

PARAMETER_TYPES = {"string": Parameter.Type.STRING, "double": Parameter.Type.DOUBLE, "integer": Parameter.Type.INTEGER,
                   "bool": Parameter.Type.BOOL, "string_array": Parameter.Type.STRING_ARRAY}
class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing checkpoint, absent device); one line."""


class OccupancyNode(Node):
    """Wires subscriptions, the worker thread, publishers and diagnostics to the pipeline."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        for name, (ptype, text) in PARAMETERS.items():
            self.declare_parameter(name, PARAMETER_TYPES[ptype], ParameterDescriptor(description=text))
        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        problem = validate(self.params)
        if problem:
            raise StartupError(problem)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        from fusionocc_core.predictor import Predictor  # heavy (torch): after the parameters are valid

        self.cfg: Config = load_config(self.params["model.config"])
        try:
            self.predictor = Predictor(self.cfg, checkpoint=self.params["model.checkpoint"],
                                       device=self.params["model.device"], precision=self.params["model.precision"],
                                       compile=self.params["model.compile"])
        except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
            raise StartupError(str(exc).splitlines()[0]) from None
        self.pipeline = OccupancyPipeline(self.cfg, self.predictor, pipeline_settings(self.params),
                                          on_problem=self._log_problem_once)
        self.cameras = tuple(self.cfg.data.cameras)
        inputs = ["lidar"] + [f"{c.lower()}/image" for c in self.cameras]
        self.diag = Diagnostics(NODE_NAME, hardware_id=self.params["model.device"], expected_inputs=inputs)

        # --- inputs
        reliable = self.params["input_qos"] == "reliable"
        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                                durability=DurabilityPolicy.VOLATILE) if reliable else qos_profile_sensor_data
        image_type = CompressedImage if self.params["image_transport"] == "compressed" else Image
        self.create_subscription(PointCloud2, "~/input/lidar", self._on_lidar, sensor_qos)
        for cam in self.cameras:
            lower = cam.lower()
            self.create_subscription(image_type, f"~/input/{lower}/image",
                                     lambda m, c=cam: self._on_image(c, m), sensor_qos)
            self.create_subscription(CameraInfo, f"~/input/{lower}/camera_info",
                                     lambda m, c=cam: self._submit(self.pipeline.add_camera_info(c, m)), sensor_qos)
        self.create_subscription(TFMessage, "/tf", lambda m: self._submit(self.pipeline.add_tf(m, static=False)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._submit(self.pipeline.add_tf(m, static=True)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))

        # --- outputs
        out_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        from fusionocc_msgs.msg import SemanticVoxelGrid

        self.publishers_by_output = {
            "markers": self.create_publisher(MarkerArray, "~/output/markers", out_qos),
            "voxels": self.create_publisher(SemanticVoxelGrid, "~/output/voxels", out_qos),
            "cloud": self.create_publisher(PointCloud2, "~/output/cloud", out_qos),
        }
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.params["diagnostics.period_s"], self._publish_diagnostics)
        self._last_marker_ns = 0

        # --- worker: latest wins
        self._cv = threading.Condition()
        self._latest: SyncedSet | None = None
        self._superseded = 0
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="fusionocc_inference", daemon=True)
        self._worker.start()
        self._last_wait_log = 0.0
        self._lidar_rx: dict[int, float] = {}  # LiDAR stamp -> monotonic receive time
        self.get_logger().info(
            f"ready: model '{self.cfg.name}' on {self.params['model.device']} ({self.params['model.precision']}), "
            f"{len(self.cameras)} cameras, outputs {', '.join(self.params['outputs.enabled'])}")

    # --- callbacks (cheap) -----------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_lidar(self, msg: PointCloud2) -> None:
        self.diag.tick_input("lidar", self._now_ns())
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._lidar_rx[stamp] = time.monotonic()  # for the receipt-to-publish latency
        while len(self._lidar_rx) > 64:
            self._lidar_rx.pop(next(iter(self._lidar_rx)))
        self._submit(self.pipeline.add_lidar(msg))

    def _on_image(self, camera: str, msg: Any) -> None:
        self.diag.tick_input(f"{camera.lower()}/image", self._now_ns())
        self._submit(self.pipeline.add_camera(camera, msg))

    def _submit(self, sets: list[SyncedSet]) -> None:
        if not sets:
            if self.pipeline.frames_in and self.pipeline.frames_out == 0:  # start-up gate still closed?
                waiting = self.pipeline.waiting_for()
                now = time.monotonic()
                if waiting and now - self._last_wait_log > 5.0:
                    self._last_wait_log = now
                    self.get_logger().info(f"waiting for {', '.join(waiting)}")
            return
        with self._cv:
            if self._latest is not None:
                self._superseded += 1
            self._superseded += len(sets) - 1
            self._latest = sets[-1]
            self._cv.notify()

    def _log_problem_once(self, reason: str, detail: str) -> None:
        self.get_logger().warning(f"dropping input ({reason}): {detail} [further '{reason}' drops are only counted in /diagnostics]")

    # --- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._latest is None and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                synced, self._latest = self._latest, None
            try:
                result = self.pipeline.infer(synced)
            except Exception as exc:  # never let the worker die; the reason is logged and counted
                self.pipeline.drops["internal_error"] += 1
                self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}")
                continue
            if result is not None:
                self._publish(result)

    def _publish(self, result: PipelineResult) -> None:
        now = self._now_ns()
        for name, data in result.messages.items():
            if name == "markers":
                max_rate = self.params["outputs.marker_max_rate_hz"]
                if max_rate > 0 and now - self._last_marker_ns < 1e9 / max_rate:
                    continue
                self._last_marker_ns = now
            self.publishers_by_output[name].publish(data)  # pre-serialized CDR
            self.diag.tick_output(name, now)
        for stage, ms in result.timings_ms.items():
            self.diag.latency(stage, ms / 1e3)
        # stamp -> publish on the node's clock (sim time when replaying with /clock), and
        # LiDAR message receipt -> publish on the steady clock (the node's own share)
        self.diag.latency("end_to_end", max(self._now_ns() - result.stamp_ns, 0) / 1e9)
        received = self._lidar_rx.get(result.stamp_ns)
        if received is not None:
            self.diag.latency("receipt_to_publish", time.monotonic() - received)

    def _publish_diagnostics(self) -> None:
        counters = self.pipeline.counters()
        counters["superseded"] = self._superseded
        self.diag.set_counters("pipeline", {"drops": counters, "frames_synced": self.pipeline.frames_in,
                                            "frames_published": self.pipeline.frames_out})
        device = self.params["model.device"]
        if device.startswith("cuda"):
            import torch

            self.diag.set_value("device_memory_mb", torch.cuda.max_memory_allocated(device) / 2**20)
        self.diag_pub.publish(self.diag.to_message(self._now_ns()))

    # --- parameters ------------------------------------------------------------------------------

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in PARAMETERS}
        frozen = [n for n in changed if not n.startswith(RUNTIME_PREFIX)]
        if frozen:
            return SetParametersResult(successful=False, reason=f"{', '.join(frozen)} cannot change at runtime: restart the node")
        reason = validate(changed)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self.params.update(changed)
        settings = pipeline_settings(self.params)
        self.pipeline.settings = replace(
            self.pipeline.settings, outputs=settings.outputs, class_filter=settings.class_filter,
            marker_lifetime_s=settings.marker_lifetime_s, marker_alpha=settings.marker_alpha,
            publish_confidence=settings.publish_confidence)
        self.pipeline.rebuild_encoders()
        return SetParametersResult(successful=True)

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._worker.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`fusionocc-node`, `ros2 run fusionocc_ros occupancy_node`)."""
    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    node = None
    try:
        node = OccupancyNode()
        rclpy.spin(node)
    except StartupError as exc:
        print(f"{NODE_NAME}: cannot start: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

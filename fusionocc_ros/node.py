"""`fusionocc_occupancy`: the ROS 2 node. It only wires ROS to `OccupancyPipeline`.

Inputs (sensor-data QoS, remapped by launch/occ.launch.py): `~/input/lidar` (PointCloud2),
`~/input/<cam>/image` (an image_transport base topic: the node subscribes `<base>/compressed`
for CompressedImage, or `<base>` for Image with `input_image_type: raw`, after remapping, as
image_transport subscribers do) and `~/input/<cam>/camera_info` for the six cameras, `/tf`,
`/tf_static`. Outputs (reliable):
`~/output/markers` (MarkerArray), `~/output/voxels` (fusionocc_msgs/SemanticVoxelGrid),
`~/output/cloud` (PointCloud2 x y z rgb label), `/diagnostics`. Callbacks only buffer messages;
a worker thread infers on the synchronized sets in order, at most `inference.queue_size` waiting
(1 = the newest wins: a live node never queues behind a slow model). Every parameter comes from the
YAML file (config/occ_node.yaml); none has a code default.
Any problem with the parameters, the model config or the checkpoint stops the node with one line,
`<node>: cannot start: <reason>`, and exit status 1.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from fusionocc_core.config import Config, load_config
from fusionocc_ros.diagnostics import Diagnostics
from fusionocc_ros.encoders import RateLimiter
from fusionocc_ros.params import (NODE_NAME, PARAMETERS, RUNTIME_PREFIX, ParameterError, check_types,
                                   pipeline_settings, resolve, validate)
from fusionocc_ros.set_queue import SupersedingQueue
from fusionocc_ros.sync import SyncedSet
from fusionocc_ros.topics import DIAGNOSTICS, IMAGE_KINDS, TF, TF_STATIC

if TYPE_CHECKING:
    from fusionocc_ros.pipeline import PipelineResult

PARAMETER_TYPES = {"string": Parameter.Type.STRING, "double": Parameter.Type.DOUBLE, "integer": Parameter.Type.INTEGER,
                   "bool": Parameter.Type.BOOL, "string_array": Parameter.Type.STRING_ARRAY}
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")  # rclpy declares these itself


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing checkpoint, absent device); one line."""


class OccupancyNode(Node):
    """Wires subscriptions, the worker thread, publishers and diagnostics to the pipeline."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        # the same checks, in the same words, as fusionocc-replay --params (params.resolve)
        given = {name: p.value for name, p in getattr(self, "_parameter_overrides", {}).items()
                 if name not in ROS_OWN_PARAMETERS and not name.startswith("qos_overrides.")}
        try:
            self.params = resolve({**{name: None for name in PARAMETERS}, **given})
        except ParameterError as exc:
            raise StartupError(str(exc)) from None
        for name, (ptype, text) in PARAMETERS.items():
            self.declare_parameter(name, PARAMETER_TYPES[ptype], ParameterDescriptor(description=text))
        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.add_on_set_parameters_callback(self._on_set_parameters)

        from fusionocc_core.predictor import Predictor, check_inference_options  # heavy (torch): after the parameters are valid
        from fusionocc_ros.pipeline import OccupancyPipeline, freeze_startup_objects

        try:
            self.cfg: Config = load_config(self.params["model.config"])
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise StartupError(f"model.config: {str(exc).splitlines()[0]}") from None
        checkpoint = self.params["model.checkpoint"]
        try:  # what this machine cannot run (no CUDA, no such GPU, no triton) is not the checkpoint's fault
            check_inference_options(self.params["model.device"], self.params["model.precision"],
                                    self.params["model.compile"], self.params["model.sparse_conv"])
        except ValueError as exc:
            raise StartupError(str(exc).splitlines()[0]) from None
        try:
            self.predictor = Predictor(self.cfg, checkpoint=checkpoint,
                                       device=self.params["model.device"], precision=self.params["model.precision"],
                                       compile=self.params["model.compile"], sparse_conv=self.params["model.sparse_conv"])
        except Exception as exc:  # a missing, foreign or damaged file; an absent device: one line, no traceback
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StartupError(f"cannot load checkpoint {checkpoint}: {text}") from None
        if self.predictor.device.type == "cuda":  # compile, cuDNN autotuning and allocation before frame one
            try:
                seconds = self.predictor.warmup()
            except (RuntimeError, ValueError) as exc:  # e.g. CUDA out of memory: one line
                raise StartupError(f"model warm-up failed: {str(exc).splitlines()[0]}") from None
            self.get_logger().info(f"model warm-up on {self.predictor.device}: {seconds:.1f} s")
        self.pipeline = OccupancyPipeline(self.cfg, self.predictor, pipeline_settings(self.params),
                                          on_problem=self._log_problem_once)
        self.get_logger().info(f"JPEG decoding: {self.pipeline.jpeg_decoding}")
        self.cameras = tuple(self.cfg.data.cameras)
        inputs = ["lidar"] + [f"{c.lower()}/image" for c in self.cameras]
        self.diag = Diagnostics(self.get_name(), hardware_id=self.params["model.device"], expected_inputs=inputs,
                                max_latency_s=self.params["diagnostics.max_latency_s"] or None)

        # --- inputs
        reliable = self.params["input_qos"] == "reliable"
        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                                durability=DurabilityPolicy.VOLATILE) if reliable else qos_profile_sensor_data
        kind = self.params["input_image_type"]
        image_type = CompressedImage if kind == "compressed" else Image
        self.create_subscription(PointCloud2, "~/input/lidar", self._on_lidar, sensor_qos)
        for cam in self.cameras:
            lower = cam.lower()
            # image_transport naming: remap the base topic, subscribe <base>/compressed (or <base>)
            image_topic = self.resolve_topic_name(f"~/input/{lower}/image") + IMAGE_KINDS[kind][1]
            self.create_subscription(image_type, image_topic, lambda m, c=cam: self._on_image(c, m), sensor_qos)
            self.create_subscription(CameraInfo, f"~/input/{lower}/camera_info",
                                     lambda m, c=cam: self._submit(self.pipeline.add_camera_info(c, m)), sensor_qos)
        self.create_subscription(TFMessage, TF, lambda m: self._submit(self.pipeline.add_tf(m, static=False)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(TFMessage, TF_STATIC, lambda m: self._submit(self.pipeline.add_tf(m, static=True)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))

        # --- outputs
        # reliable, a few messages deep: with depth 1 a recorder that is slow to acknowledge one
        # multi-MB result lost it when the next was published (seen in the end-to-end test under load)
        out_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        from fusionocc_msgs.msg import SemanticVoxelGrid

        self.publishers_by_output = {
            "markers": self.create_publisher(MarkerArray, "~/output/markers", out_qos),
            "voxels": self.create_publisher(SemanticVoxelGrid, "~/output/voxels", out_qos),
            "cloud": self.create_publisher(PointCloud2, "~/output/cloud", out_qos),
        }
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        # the clock jumping back (a looping bag under sim time) clears TF history, as tf2_ros does
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_time_jump)
        self.create_timer(self.params["diagnostics.period_s"], self._publish_diagnostics)
        self._marker_limit = RateLimiter(self.params["outputs.marker_max_rate_hz"])

        # --- worker: a bounded queue of sets, the oldest superseded when full (size 1 = latest wins)
        self._queue: SupersedingQueue[SyncedSet] = SupersedingQueue(self.params["inference.queue_size"])
        self._worker = threading.Thread(target=self._work, name="fusionocc_inference", daemon=True)
        self._worker.start()
        self._last_wait_log = 0.0
        freeze_startup_objects()  # no full garbage collection walks the model's objects mid-frame
        self.get_logger().info(
            f"ready: model '{self.cfg.name}' on {self.params['model.device']} ({self.params['model.precision']}), "
            f"{len(self.cameras)} cameras, outputs {', '.join(self.params['outputs.enabled'])}")

    # --- callbacks (cheap) -----------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_lidar(self, msg: PointCloud2) -> None:
        self.diag.tick_input("lidar", self._now_ns())
        self._submit(self.pipeline.add_lidar(msg, received_s=time.monotonic()))  # receipt-to-publish latency

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
        self._queue.put(sets)

    def _on_time_jump(self, jump: TimeJump) -> None:
        self.pipeline.time_jumped(f"the ROS clock jumped by {jump.delta.nanoseconds / 1e9:.3f} s")

    def _log_problem_once(self, reason: str, detail: str) -> None:
        self.get_logger().warning(f"dropping input ({reason}): {detail} [further '{reason}' drops are only counted in /diagnostics]")

    # --- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            synced = self._queue.get()
            if synced is None:  # stop()
                return
            try:
                result = self.pipeline.infer(synced, outputs=self._wanted_outputs())
            except Exception as exc:  # never let the worker die; the reason is logged and counted
                self.pipeline.drops["internal_error"] += 1
                self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}")
                continue
            if result is not None:
                self._publish(result)

    def _wanted_outputs(self) -> list[str]:
        """The enabled outputs worth encoding for the next frame: someone subscribes to them (as
        image_transport's lazy publishers: up to 28 MB of messages per frame at full occupancy are
        built for nobody otherwise), and the marker rate limit lets the markers through."""
        now = self._now_ns()
        return [name for name in self.pipeline.settings.outputs
                if self.publishers_by_output[name].get_subscription_count() > 0
                and (name != "markers" or self._marker_limit.allow(now))]

    def _publish(self, result: PipelineResult) -> None:
        now = self._now_ns()
        for name, data in result.messages.items():
            self.publishers_by_output[name].publish(data)  # pre-serialized CDR
            self.diag.tick_output(name, now)
        for stage, ms in result.timings_ms.items():
            self.diag.latency(stage, ms / 1e3)
        # stamp -> publish on the node's clock (sim time when replaying with /clock), and
        # LiDAR message receipt -> publish on the steady clock (the node's own share)
        self.diag.latency("end_to_end", max(self._now_ns() - result.stamp_ns, 0) / 1e9)
        if result.received_s is not None:
            self.diag.latency("receipt_to_publish", time.monotonic() - result.received_s)

    def _publish_diagnostics(self) -> None:
        counters = self.pipeline.counters()
        counters["superseded"] = self._queue.superseded
        sync = self.pipeline.sync.stats()
        self.diag.set_counters("pipeline", {"drops": counters, "frames_synced": self.pipeline.frames_in,
                                            "frames_published": self.pipeline.frames_out,
                                            "camera_frames_discarded": sync["discarded"],
                                            "missing_by_camera": sync["missing_by_camera"]})
        device = self.params["model.device"]
        if device.startswith("cuda"):
            import torch

            self.diag.set_value("device_memory_mb", torch.cuda.max_memory_allocated(device) / 2**20)
        self.diag_pub.publish(self.diag.to_message(self._now_ns()))

    # --- parameters ------------------------------------------------------------------------------

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in PARAMETERS}
        reason = check_types(changed)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
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
        if "outputs.marker_max_rate_hz" in changed:
            self._marker_limit = RateLimiter(self.params["outputs.marker_max_rate_hz"])
        return SetParametersResult(successful=True)

    def stop(self) -> None:
        self._queue.close()
        self._worker.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`fusionocc-node`, `ros2 run fusionocc_ros occupancy_node`)."""
    args = list(argv) if argv is not None else sys.argv
    node = None
    try:
        _check_params_files(args)  # before rcl, which would log its own lines about a broken file
        try:
            rclpy.init(args=args)
        except Exception as exc:  # e.g. a params file rcl cannot parse: rcl's own message is one line
            raise StartupError(_rcl_reason(exc, args)) from None
        node = OccupancyNode()
        rclpy.spin(node)
    except StartupError as exc:
        print(f"{_node_name(args)}: cannot start: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _node_name(args: Sequence[str]) -> str:
    """The node's name as remapped on the command line (`-r __node:=name`), else NODE_NAME."""
    return _ros_arg(args, "__node") or _ros_arg(args, "__name") or NODE_NAME


def _ros_arg(args: Sequence[str], key: str) -> str | None:
    """The value of `-r <key>:=value` (or a bare `<key>:=value`) in the command line."""
    for arg in args:
        if arg.startswith(f"{key}:="):
            return arg.split(":=", 1)[1]
    return None


def _check_params_files(args: Sequence[str]) -> None:
    """Each --params-file exists and parses, and one of them has a section for this node."""
    from fusionocc_ros.params import load_params_file

    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--params-file"]
    name, namespace = _node_name(args), _ros_arg(args, "__ns") or ""
    problems = []
    for path in files:
        try:
            load_params_file(path, name, namespace)
            return
        except ParameterError as exc:
            if "has no section" not in str(exc):
                raise StartupError(str(exc)) from None
            problems.append(str(exc))
    if problems:
        raise StartupError(problems[0])


def _rcl_reason(exc: Exception, args: Sequence[str]) -> str:
    """One line for rclpy.init failing (rcl parses --params-file and -p/-r arguments there)."""
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--params-file"]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        return f"parameters file {missing[0]} does not exist"
    text = " ".join(str(exc).split())
    if files and ("param" in text.lower() or "yaml" in text.lower()):
        return f"parameters file {files[0]} cannot be parsed: {text[:300]}"
    return f"bad ROS arguments: {text[:300]}"


if __name__ == "__main__":
    sys.exit(main())

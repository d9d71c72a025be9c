"""`fusionocc-replay IN_BAG OUT_BAG`: the node's pipeline on a recorded bag, offline and deterministic.

Reads IN_BAG with rosbags (no ROS install, no DDS), feeds every message in bag order through the
same `OccupancyPipeline` the live node uses (same sync, TF, assembly, model, encoders), infers
every synchronized set, and writes the node's three outputs to OUT_BAG under the node's topic
names. When IN_BAG carries `/occupancy/gt`, it prints mIoU (no visibility mask: the message has
none) with the scorer of `fusionocc-score`. OUT_BAG is built in a hidden `.OUT_BAG.partial-PID`
folder and renamed at the end (its files keep OUT_BAG's name).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from fusionocc_core.cli import ToolError, ToolParser, tool_main
from fusionocc_core.inference_options import PRECISION_NAMES
from fusionocc_ros import topics
from fusionocc_ros.topics import GROUND_TRUTH as GT_TOPIC
from fusionocc_ros.topics import output_topics

__all__ = ["build_parser", "main", "output_topics"]


def build_parser() -> ToolParser:
    p = ToolParser(prog="fusionocc-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("in_bag", type=Path, help="input rosbag2 directory (e.g. from fusionocc-convert)")
    p.add_argument("out_bag", type=Path, help="output rosbag2 directory to create (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_BAG once the new one is complete")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (ours, or the official .pth)")
    p.add_argument("--config", default=None, help="model preset or YAML (default: model.config of --params)")
    p.add_argument("--params", type=Path, default=None,
                   help="node parameters YAML giving sync, TF, history and output settings, as the node reads it "
                        "(default: the installed config/occ_node.yaml)")
    p.add_argument("--node-name", default=topics.NODE_NAME,
                   help="node name whose section of --params applies and whose output topics are written "
                        "(default: %(default)s)")
    p.add_argument("--namespace", default="", help="namespace of the node's output topics (default: none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=PRECISION_NAMES, help="inference precision")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage of OUT_BAG")
    p.add_argument("--camera-topic", default=None,
                   help="image topic pattern in IN_BAG; {cam} = lower-case camera name (default: "
                        f"{topics.image_topic('{CAM}')}, or {topics.image_topic('{CAM}', 'raw')} with "
                        "input_image_type: raw in --params)")
    p.add_argument("--info-topic", default=topics.camera_info_topic("{CAM}"), help="CameraInfo topic pattern (default: %(default)s)")
    p.add_argument("--lidar-topic", default=topics.LIDAR, help="PointCloud2 topic in IN_BAG (default: %(default)s)")
    return p


@tool_main("fusionocc-replay")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    from fusionocc_ros.params import ParameterError

    try:
        params = _params(args)
    except ParameterError as exc:
        print(f"fusionocc-replay: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, params)
    except ToolError:
        raise
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
        raise ToolError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


def _params(args: argparse.Namespace) -> dict:
    """The node's parameters from --params with the command line's model options on top, checked
    as the node checks them (ParameterError: one line)."""
    from fusionocc_ros.params import ParameterError, load_params_file, resolve
    from fusionocc_ros.resources import params_file

    path = args.params
    if path is None:
        try:
            path = params_file()
        except FileNotFoundError as exc:
            raise ParameterError(str(exc)) from None
    params = load_params_file(path, args.node_name, args.namespace)
    params.update({"model.checkpoint": args.checkpoint, "model.device": args.device, "model.precision": args.precision})
    if args.config:
        params["model.config"] = args.config
    try:
        resolve(params)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None
    try:
        from fusionocc_core.config import load_config

        load_config(params["model.config"])
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ParameterError(f"model.config: {str(exc).splitlines()[0]}") from None
    from fusionocc_core.predictor import check_inference_options  # torch: after the cheap checks

    try:  # what this machine cannot run, before the checkpoint loads
        check_inference_options(args.device, args.precision, sparse_conv=params["model.sparse_conv"])
    except ValueError as exc:
        raise ParameterError(str(exc).splitlines()[0]) from None
    if not Path(args.checkpoint).is_file():
        raise ParameterError(f"checkpoint {args.checkpoint} does not exist")
    return params


def _run(args: argparse.Namespace, params: dict) -> int:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from fusionocc_core.config import load_config
    from fusionocc_core.predictor import Predictor
    from fusionocc_core.tools.atomic import atomic_output_dir, exists_message
    from fusionocc_core.tools.score import GroundTruth, format_table, score_pairs
    from fusionocc_ros.conversions import header_stamp_ns, voxel_grid_to_labels
    from fusionocc_ros.params import pipeline_settings
    from fusionocc_ros.pipeline import OccupancyPipeline
    from rosbag_tools.qos import offered_qos
    from rosbag_tools.reading import deserialize, open_bag, read_messages
    from rosbag_tools.typestore import get_store

    if not args.in_bag.is_dir():
        raise ToolError(f"input bag not found: {args.in_bag}")
    if args.out_bag.exists() and not args.overwrite:
        raise ToolError(exists_message(args.out_bag))
    with open_bag(args.in_bag):  # a truncated or corrupt bag fails before the model loads
        pass
    cfg = load_config(params["model.config"])
    predictor = Predictor(cfg, checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                          sparse_conv=params["model.sparse_conv"])
    problems: list[str] = []
    pipeline = OccupancyPipeline(cfg, predictor, pipeline_settings(params),
                                 on_problem=lambda reason, detail: problems.append(f"{reason}: {detail}"))

    camera_topic = args.camera_topic or topics.image_topic("{CAM}", params["input_image_type"])
    cams = {camera_topic.format(cam=c.lower()): c for c in cfg.data.cameras}
    infos = {args.info_topic.format(cam=c.lower()): c for c in cfg.data.cameras}
    store = get_store()
    out_topics = output_topics(args.namespace, args.node_name)
    gt_by_stamp: dict[int, np.ndarray] = {}
    results = []
    t_start = time.perf_counter()
    with open_bag(args.in_bag) as reader, atomic_output_dir(args.out_bag, overwrite=args.overwrite) as tmp:
        writer = Writer(tmp, version=8, storage_plugin=StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3)
        writer.open()
        conns = {name: writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=offered_qos(topic))
                 for name, (topic, msgtype) in out_topics.items() if name in pipeline.settings.outputs}

        def infer_all(sets: list) -> None:
            for synced in sets:
                result = pipeline.infer(synced)
                if result is None:
                    continue
                results.append((result.stamp_ns, result.labels))
                for name, data in result.messages.items():
                    writer.write(conns[name], result.stamp_ns, data)

        wanted = [c for c in reader.connections
                  if c.topic in cams or c.topic in infos or c.topic in (args.lidar_topic, topics.TF, topics.TF_STATIC, GT_TOPIC)]
        if not any(c.topic == args.lidar_topic for c in wanted):
            raise ToolError(f"{args.in_bag}: no {args.lidar_topic} topic")
        total = sum(c.msgcount for c in wanted)
        for conn, _, raw in tqdm(read_messages(reader, args.in_bag, wanted), total=total, desc="replay", unit="msg",
                                 disable=None):
            msg = deserialize(store, raw, conn, args.in_bag)
            topic = conn.topic
            if topic == args.lidar_topic:
                infer_all(pipeline.add_lidar(msg))
            elif topic in cams:
                infer_all(pipeline.add_camera(cams[topic], msg))
            elif topic in infos:
                infer_all(pipeline.add_camera_info(infos[topic], msg))
            elif topic in (topics.TF, topics.TF_STATIC):
                infer_all(pipeline.add_tf(msg, static=topic == topics.TF_STATIC))
            elif topic == GT_TOPIC:
                gt_by_stamp[header_stamp_ns(msg)] = voxel_grid_to_labels(msg)[0].copy()
        infer_all(pipeline.flush())
        writer.close()

    elapsed = time.perf_counter() - t_start
    print(f"fusionocc-replay: {len(results)} frames inferred from {pipeline.frames_in} synchronized sets "
          f"in {elapsed:.1f} s -> {args.out_bag}")
    drops = {k: v for k, v in pipeline.counters().items() if v}
    if drops:
        print("dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
    for line in problems[:10]:
        print(f"  {line}")
    scored = [(labels, gt_by_stamp[stamp]) for stamp, labels in results if stamp in gt_by_stamp]
    if scored:
        print(format_table(score_pairs(((pred, GroundTruth(gt, None, None)) for pred, gt in scored), mask="none")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

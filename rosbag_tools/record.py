"""`fusionocc-record`: record live ROS 2 topics into a rosbag2 (MCAP) with rclpy + rosbags.

Our stand-in for `ros2 bag record` where rosbag2 is not installed. Messages are taken raw
(serialized CDR, no deserialization) and written with their receive time as the bag time, or the
header stamp with --use-header-stamp. The bag is built in a hidden `.OUT.partial-PID` folder and
renamed to OUT when recording ends (duration reached, --count reached, or SIGINT/SIGTERM), so OUT
is never half-written and its files carry OUT's name.
"""
from __future__ import annotations

import signal
import struct
import sys
import time
from pathlib import Path
from typing import Sequence

from rosbags.rosbag2 import StoragePlugin, Writer

from fusionocc_core.cli import ToolError, ToolParser, UsageError, tool_main
from fusionocc_core.tools.atomic import OutputExistsError, atomic_output_dir, exists_message
from rosbag_tools.qos import offered_qos
from rosbag_tools.typestore import get_store

METADATA_VERSION = 8


def header_stamp_ns(cdr: bytes) -> int | None:
    """Stamp of a CDR message whose first field is std_msgs/Header (sec int32, nanosec uint32)."""
    if len(cdr) < 12:
        return None
    sec, nsec = struct.unpack_from("<iI" if cdr[1] == 1 else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nsec


def build_parser() -> ToolParser:
    p = ToolParser(prog="fusionocc-record", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="bag directory to create (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT once the new bag is complete")
    p.add_argument("--topics", nargs="+", required=True, help="topics to record (types are discovered from the graph)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until SIGINT)")
    p.add_argument("--count", type=int, default=0,
                   help="stop once every topic has this many messages (0 = no limit)")
    p.add_argument("--discovery-timeout", type=float, default=30.0,
                   help="seconds to wait for every topic to appear in the graph before failing")
    p.add_argument("--use-header-stamp", action="store_true",
                   help="bag time = the message's header stamp (types whose first field is a Header) "
                        "instead of the receive time")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--ready-file", type=Path, default=None,
                   help="touch this file once all subscriptions exist (for scripts that start a publisher next)")
    return p


@tool_main("fusionocc-record")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    out: Path = args.out
    if min(args.duration, args.count, args.discovery_timeout) < 0:
        raise UsageError("--duration, --count and --discovery-timeout must be >= 0")
    if out.exists() and not args.overwrite:
        raise OutputExistsError(exists_message(out))
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    stop = {"flag": False}

    def _stop(signum: int, frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("fusionocc_record")
    counts = {t: 0 for t in args.topics}
    try:
        types: dict[str, str] = {}
        deadline = time.monotonic() + args.discovery_timeout
        while len(types) < len(args.topics):
            for name, tlist in node.get_topic_names_and_types():
                if name in counts and tlist:
                    types[name] = tlist[0]
            if len(types) == len(args.topics):
                break
            if time.monotonic() > deadline or stop["flag"]:
                missing = sorted(set(args.topics) - set(types))
                raise ToolError(f"topics not found in the graph: {', '.join(missing)}")
            rclpy.spin_once(node, timeout_sec=0.1)

        store = get_store()
        with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
            writer = Writer(tmp, version=METADATA_VERSION,
                            storage_plugin=StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3)
            writer.open()
            conns = {t: writer.add_connection(t, types[t], typestore=store, offered_qos_profiles=offered_qos(t))
                     for t in args.topics}
            import importlib

            def msg_class(msgtype: str) -> type:
                pkg, _, name = msgtype.split("/")
                return getattr(importlib.import_module(f"{pkg}.msg"), name)

            def callback_for(topic: str):
                fields = msg_class(types[topic]).get_fields_and_field_types()
                stamped = args.use_header_stamp and next(iter(fields.items()), ("", ""))[1] == "std_msgs/Header"

                def on_msg(raw: bytes) -> None:
                    stamp = header_stamp_ns(raw) if stamped else None
                    writer.write(conns[topic], stamp if stamp is not None else time.time_ns(), raw)
                    counts[topic] += 1
                return on_msg

            for t in args.topics:
                latched = t == "/tf_static"
                qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
                node.create_subscription(msg_class(types[t]), t, callback_for(t), qos, raw=True)
            if args.ready_file:
                args.ready_file.touch()
            print(f"fusionocc-record: recording {', '.join(args.topics)} -> {out}", flush=True)
            end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
            while not stop["flag"] and time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
                if args.count and all(c >= args.count for c in counts.values()):
                    break
            writer.close()
        print("fusionocc-record: " + ", ".join(f"{t}: {c}" for t, c in counts.items()), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())

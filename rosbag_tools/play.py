"""fusionocc-play: publish a rosbag2 into a live ROS 2 graph with rclpy, at the recorded pace.

Our stand-in for `ros2 bag play` where rosbag2 is not installed: the raw CDR bytes of every
message are published as they are (rclpy's serialized publishing), with the recorded QoS
(/tf_static latched) and, on request, /clock. rclpy is imported inside functions only.
"""
from __future__ import annotations

import importlib
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from fusionocc_core.cli import ToolError, ToolParser, UsageError, tool_main
from rosbag_tools.qos import replay_profile
from rosbag_tools.reading import open_reader, read_messages

PROG = "fusionocc-play"
CLOCK_PERIOD_S = 0.025  # /clock at 40 Hz between messages, as `ros2 bag play --clock` does
# At the end, wait at most this long for reliable subscribers to acknowledge: a sample a reader
# missed (e.g. it had not matched the writer yet) is re-sent at the next heartbeat, every 3 s in
# Fast DDS by default.
FLUSH_TIMEOUT_S = 5.0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class PlayError(ToolError):
    """A bag or message type that cannot be played (one-line reason)."""


def message_class(msgtype: str) -> Any:
    """The rclpy message class of a type name such as 'sensor_msgs/msg/PointCloud2'."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise PlayError(f"message type {msgtype} is not available to rclpy ({type(exc).__name__}: {exc})") from exc



def selected_connections(reader: Any, topics: Sequence[str] | None) -> list[Any]:
    """The bag's connections on `topics` (every one when None); PlayError names a topic not in the bag."""
    if topics is None:
        return list(reader.connections)
    missing = sorted(set(topics) - {c.topic for c in reader.connections})
    if missing:
        raise PlayError(f"topic(s) not in the bag: {', '.join(missing)}")
    return [c for c in reader.connections if c.topic in set(topics)]


def _time_msg(stamp_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def play(
    bag: str | Path,
    rate: float = 1.0,
    loop: bool = False,
    clock: bool = False,
    start_delay: float = 0.0,
    wait_for_subscribers: float = 0.0,
    wait_for_all_acked: float | None = None,
    progress: bool = True,
    topics: Sequence[str] | None = None,
) -> int:
    """Publish every message of `bag` at `rate` x the recorded pace; returns messages published.

    Assumes rclpy is initialised by the caller. `wait_for_subscribers` > 0 waits up to that many
    seconds until every topic has a matched subscriber before playing. `wait_for_all_acked` (s;
    0 = no limit) waits after each publish until reliable subscribers acknowledged it, so that
    no message is lost to a subscriber that matched late (as `ros2 bag play --wait-for-all-acked`).
    `topics` plays only those topics (all when None); a topic not in the bag is a PlayError.
    """
    import rclpy
    from rclpy.duration import Duration
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock

    from tqdm import tqdm

    reader = open_reader(Path(bag))
    try:
        connections = selected_connections(reader, topics)
    except PlayError:
        reader.close()
        raise
    node = rclpy.create_node("fusionocc_play")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    published = 0
    try:
        publishers: dict[int, Any] = {}
        for conn in connections:
            offers = getattr(conn.ext, "offered_qos_profiles", []) or []
            publishers[conn.id] = node.create_publisher(message_class(conn.msgtype), conn.topic, replay_profile(offers))
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None

        deadline = time.monotonic() + wait_for_subscribers
        while wait_for_subscribers > 0 and time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in publishers.values()):
                break
            executor.spin_once(timeout_sec=0.02)
        end = time.monotonic() + start_delay
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

        ack_timeout = None
        if wait_for_all_acked is not None:
            ack_timeout = Duration(seconds=-1) if wait_for_all_acked == 0 else Duration(nanoseconds=int(wait_for_all_acked * 1e9))
        total = sum(c.msgcount for c in connections)
        while True:
            bar = tqdm(total=total, unit="msg", desc=PROG, file=sys.stderr, disable=(not progress) or None,
                       dynamic_ncols=True)
            wall0: float | None = None
            bag0 = clock_ns = 0
            for conn, stamp, raw in read_messages(reader, bag, connections):
                if wall0 is None:
                    wall0, bag0, clock_ns = time.monotonic(), stamp, stamp
                due = wall0 + (stamp - bag0) * 1e-9 / rate
                while True:  # sleep until the message is due, ticking /clock (never past `stamp`)
                    now = time.monotonic()
                    if clock_pub is not None:
                        clock_ns = max(clock_ns, min(stamp, bag0 + int((now - wall0) * rate * 1e9)))
                        clock_pub.publish(Clock(clock=_time_msg(clock_ns)))
                    if now >= due:
                        break
                    time.sleep(min(due - now, CLOCK_PERIOD_S if clock_pub is not None else 0.1))
                if clock_pub is not None and stamp > clock_ns:
                    clock_ns = stamp
                    clock_pub.publish(Clock(clock=_time_msg(clock_ns)))
                pub = publishers[conn.id]
                pub.publish(raw if isinstance(raw, bytes) else bytes(raw))
                if ack_timeout is not None:
                    pub.wait_for_all_acked(ack_timeout)
                published += 1
                bar.update(1)
            bar.close()
            if not loop:
                break
        flush_end = time.monotonic() + FLUSH_TIMEOUT_S  # let reliable writers deliver the tail
        for pub in publishers.values():
            if pub.get_subscription_count() > 0:
                pub.wait_for_all_acked(Duration(nanoseconds=int(max(0.0, flush_end - time.monotonic()) * 1e9)))
    finally:
        reader.close()
        executor.remove_node(node)
        node.destroy_node()
    return published


def build_parser() -> ToolParser:
    """The fusionocc-play argument parser."""
    p = ToolParser(
        prog=PROG,
        description="Publish a rosbag2 (MCAP or sqlite3) into a live ROS 2 graph with rclpy at the "
        "recorded pace, with the recorded QoS (/tf_static latched): a stand-in for `ros2 bag play` "
        "where rosbag2 is not installed. Run consumers with use_sim_time:=true together with --clock.",
    )
    p.add_argument("bag", metavar="BAG", help="rosbag2 directory, e.g. one written by fusionocc-convert")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0 = recorded pace)")
    p.add_argument("--loop", action="store_true", help="start again from the beginning when the bag ends "
                   "(until interrupted)")
    p.add_argument("--clock", action="store_true", help="also publish rosgraph_msgs/Clock on /clock with the "
                   "bag time (at 40 Hz and at every message)")
    p.add_argument("--start-delay", type=float, default=0.0, metavar="S", help="seconds to wait after "
                   "creating the publishers before the first message (lets subscribers discover them)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S", help="wait up to S "
                   "seconds until every topic has a subscriber before playing (default 0: do not wait)")
    p.add_argument("--wait-for-all-acked", type=float, default=None, metavar="S", help="after each message, "
                   "wait up to S seconds (0: no limit) until every reliable subscriber acknowledged it; "
                   "no message is then lost to a subscriber that matched late, at the cost of pace")
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics (default: every topic "
                   "of the bag); --wait-for-subscribers then waits for these only")
    p.add_argument("--quiet", action="store_true", help="do not show the progress bar (the summary line is still printed)")
    return p


@tool_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of fusionocc-play; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    if not args.rate > 0:
        raise UsageError(f"--rate must be > 0, got {args.rate}")
    if min(args.start_delay, args.wait_for_subscribers, args.wait_for_all_acked or 0.0) < 0:
        raise UsageError("--start-delay, --wait-for-subscribers and --wait-for-all-acked must be >= 0")
    bag = Path(args.bag)
    reader = open_reader(bag)  # fail fast, before starting DDS
    try:
        selected_connections(reader, args.topics)
    finally:
        reader.close()

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # our own handlers: Ctrl-C / SIGTERM stop playback cleanly instead of invalidating the context
    # under a publish (rclpy's handlers would shut it down mid-loop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    t0 = time.perf_counter()
    try:
        n = play(bag, args.rate, args.loop, args.clock, args.start_delay, args.wait_for_subscribers,
                 args.wait_for_all_acked, progress=not args.quiet, topics=args.topics)
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    print(f"{PROG}: published {n} messages from {bag} in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

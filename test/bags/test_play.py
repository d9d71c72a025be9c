"""fusionocc-play as a subprocess into real rclpy subscribers over loopback DDS."""
from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from rosbag_tools import play

PLAY = [sys.executable, "-m", "rosbag_tools.play"]


def bag_messages(bag: Path) -> tuple[dict[str, str], dict[str, list[bytes]], int, int]:
    """(topic -> type, topic -> raw CDR messages in order, first stamp, last stamp) of a bag."""
    with Reader(bag) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        raws: dict[str, list[bytes]] = {t: [] for t in types}
        stamps = []
        for c, ts, raw in r.messages():
            raws[c.topic].append(bytes(raw))
            stamps.append(ts)
    return types, raws, min(stamps), max(stamps)


def same_cdr(received: bytes, sent: bytes) -> bool:
    """Byte-identical CDR, allowing the up-to-3 zero bytes DDS pads a payload to 4-byte length with."""
    pad = received[len(sent):]
    return received[: len(sent)] == sent and len(pad) < 4 and not any(pad)


def msg_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


@pytest.fixture()
def ros():
    """A private rclpy context, node and executor; torn down after the test."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    nodes = []

    def make_node(name: str):
        node = rclpy.create_node(name, context=ctx)
        executor.add_node(node)
        nodes.append(node)
        return node

    yield make_node, executor
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()
    rclpy.shutdown(context=ctx)


def spin_until(executor, done, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        executor.spin_once(timeout_sec=0.05)
    return done()


def play_until(executor, args: list[str], done) -> tuple[bool, subprocess.CompletedProcess]:
    """Run fusionocc-play with `args`, spinning until done() (120 s at most); (done, the finished run)."""
    proc = subprocess.Popen(PLAY + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        complete = spin_until(executor, done, 120)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return complete, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def qos_for(topic: str):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    durability = DurabilityPolicy.TRANSIENT_LOCAL if topic == "/tf_static" else DurabilityPolicy.VOLATILE
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=durability)


@pytest.mark.ros
def test_play_delivers_every_message_and_clock(mcap_bags: Path, ros) -> None:
    from rosgraph_msgs.msg import Clock

    bag = sorted(mcap_bags.iterdir())[0]
    types, raws, first, last = bag_messages(bag)
    make_node, executor = ros
    node = make_node("play_listener")
    got: dict[str, list[bytes]] = {t: [] for t in types}
    for topic, msgtype in types.items():
        node.create_subscription(msg_class(msgtype), topic, lambda raw, t=topic: got[t].append(bytes(raw)),
                                 qos_for(topic), raw=True)
    clock: list[int] = []
    node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec * 10**9 + m.clock.nanosec), 100)

    complete, run = play_until(executor, [str(bag), "--clock", "--wait-for-subscribers", "60", "--start-delay", "1",
                                          "--quiet"], lambda: all(len(got[t]) == len(raws[t]) for t in types))
    out, err = run.stdout, run.stderr
    assert run.returncode == 0, err[-800:]
    assert complete, {t: (len(got[t]), len(raws[t])) for t in types if len(got[t]) != len(raws[t])}
    for topic in types:  # the CDR bytes travel untouched, each message once, in bag order per topic
        assert len(got[topic]) == len(raws[topic])
        assert all(same_cdr(a, b) for a, b in zip(got[topic], raws[topic])), topic
    assert f"published {sum(len(v) for v in raws.values())} messages" in out
    assert clock and first <= min(clock) and max(clock) <= last
    assert clock == sorted(clock)


@pytest.mark.ros
def test_late_joining_subscriber_gets_tf_static(mcap_bags: Path, ros) -> None:
    from tf2_msgs.msg import TFMessage

    bag = sorted(mcap_bags.iterdir())[0]
    _, raws, first, last = bag_messages(bag)
    make_node, executor = ros
    early = make_node("early_listener")
    tf_seen: list[float] = []
    early.create_subscription(TFMessage, "/tf", lambda m: tf_seen.append(time.monotonic()), qos_for("/tf"))
    # slow playback so that the player is still alive long after its one /tf_static message
    duration_s = (last - first) * 1e-9
    rate = duration_s / 20.0
    proc = subprocess.Popen(PLAY + [str(bag), "--rate", f"{rate:.6f}", "--start-delay", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert spin_until(executor, lambda: bool(tf_seen), 60), "no /tf from the player"
        # /tf_static is written before the first /tf: it has been published once already
        late = make_node("late_listener")
        statics: list[bytes] = []
        late.create_subscription(TFMessage, "/tf_static", lambda raw: statics.append(bytes(raw)),
                                 qos_for("/tf_static"), raw=True)
        assert spin_until(executor, lambda: bool(statics), 15), "late subscriber did not get /tf_static"
        assert proc.poll() is None, "the player ended: the message may not have come from the latched history"
        assert len(statics) == 1 and same_cdr(statics[0], raws["/tf_static"][0])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 130 and err.strip().endswith("fusionocc-play: interrupted"), err[-500:]


def test_play_rejects_a_path_that_is_not_a_bag(tmp_path: Path, capsys) -> None:
    assert play.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"fusionocc-play: error: {tmp_path} is not a rosbag2 directory (no metadata.yaml)"
    assert play.main([str(tmp_path), "--rate", "0"]) == 2


def test_message_class_resolves_type_names() -> None:
    assert play.message_class("sensor_msgs/msg/PointCloud2").__name__ == "PointCloud2"
    assert play.message_class("fusionocc_msgs/msg/SemanticVoxelGrid").__name__ == "SemanticVoxelGrid"
    with pytest.raises(play.PlayError, match="no_such_msgs/msg/Thing"):
        play.message_class("no_such_msgs/msg/Thing")



@pytest.mark.ros
def test_loop_plays_the_bag_again_until_interrupted(mcap_bags: Path, ros) -> None:
    from tf2_msgs.msg import TFMessage

    bag = sorted(mcap_bags.iterdir())[0]
    _, raws, _, _ = bag_messages(bag)
    make_node, executor = ros
    node = make_node("loop_listener")
    stamps: list[int] = []
    node.create_subscription(TFMessage, "/tf", lambda m: stamps.append(
        m.transforms[0].header.stamp.sec * 10**9 + m.transforms[0].header.stamp.nanosec), qos_for("/tf"))
    proc = subprocess.Popen(PLAY + [str(bag), "--loop", "--rate", "4", "--start-delay", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        n = len(raws["/tf"])
        assert spin_until(executor, lambda: len(stamps) > 2 * n, 90), f"got {len(stamps)} /tf, bag has {n}"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-500:]
    # the stamps start over: the bag's first /tf stamp comes back after its last one
    assert stamps.count(stamps[0]) >= 2 and max(stamps) > stamps[0]


@pytest.mark.ros
def test_topics_plays_only_those_and_waits_only_for_their_subscribers(mcap_bags: Path, ros) -> None:
    bag = sorted(mcap_bags.iterdir())[0]
    types, raws, _, _ = bag_messages(bag)
    chosen = ["/lidar_top", "/cam_front/image_rect/compressed"]
    make_node, executor = ros
    node = make_node("topics_listener")
    got: dict[str, list[bytes]] = {t: [] for t in chosen}
    for topic in chosen:  # no subscriber on the bag's other topics
        node.create_subscription(msg_class(types[topic]), topic, lambda raw, t=topic: got[t].append(bytes(raw)),
                                 qos_for(topic), raw=True)
    # a player that waited for every topic of the bag would still be waiting when the spin below gives up
    complete, run = play_until(executor, [str(bag), "--topics", *chosen, "--wait-for-subscribers", "600",
                                          "--start-delay", "1", "--quiet"],
                               lambda: all(len(got[t]) == len(raws[t]) for t in chosen))
    out, err = run.stdout, run.stderr
    assert run.returncode == 0 and complete, (err[-800:], {t: len(v) for t, v in got.items()})
    assert all(same_cdr(a, b) for t in chosen for a, b in zip(got[t], raws[t]))
    assert f"published {sum(len(raws[t]) for t in chosen)} messages" in out


def test_topics_not_in_the_bag_is_a_one_line_error(mcap_bags: Path) -> None:
    bag = sorted(mcap_bags.iterdir())[0]
    proc = subprocess.run(PLAY + [str(bag), "--topics", "/lidar_top", "/no/such/topic"], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-800:]
    assert "topic(s) not in the bag: /no/such/topic" in lines[0]

"""diagnostics: rates, latency summaries, drop-driven levels and the DiagnosticArray message."""
from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.serialization import deserialize_message, serialize_message

from fusionocc_ros.diagnostics import END_TO_END, OK, WARN, Diagnostics, LatencyStats, RateMeter
from fusionocc_ros.sync import LidarAnchoredSync

S = 1_000_000_000


def test_rate_meter_counts_a_sliding_window():
    meter = RateMeter(window_s=2.0)
    for k in range(40):  # 10 Hz for 4 s
        meter.tick(k * S // 10)
    assert meter.rate(4 * S) == pytest.approx(10.0, abs=0.5)
    assert meter.rate(10 * S) == 0.0 and meter.total == 40


def test_latency_stats():
    stats = LatencyStats(window=10)
    assert stats.summary() == {}
    for v in range(20):
        stats.add(v / 1000)
    s = stats.summary()
    assert s["max"] == pytest.approx(0.019) and s["mean"] == pytest.approx(0.0145) and s["last"] == pytest.approx(0.019)
    assert stats.count == 20


def by_name(statuses):
    return {s.name.split(": ")[1]: s for s in statuses}


def test_levels_follow_quiet_inputs_new_drops_and_latency():
    diag = Diagnostics(expected_inputs=["lidar", "cam_front"], max_latency_s=0.5)
    for k in range(20):
        diag.tick_input("lidar", k * S // 10)
    sync = LidarAnchoredSync(["a"])
    sync.add_lidar(1 * S, None)
    sync.add_lidar(1 * S, None)  # out of order: a drop
    diag.set_counters("sync", sync.stats())
    diag.latency(END_TO_END, 0.8)
    diag.latency("inference", 0.6)
    diag.set_value("device_memory_mb", 12.5)
    diag.tick_output("~/output/voxels", 2 * S)
    st = by_name(diag.statuses(2 * S))
    assert st["inputs"].level == WARN and "cam_front" in st["inputs"].message
    assert st["sync"].level == WARN and "lidar_out_of_order=1" in st["sync"].message
    assert ("drops.lidar_out_of_order", "1") in st["sync"].values
    assert st["latency"].level == WARN and ("end_to_end p95_ms", "800") in st["latency"].values
    assert ("device_memory_mb", "12.5") in st["outputs"].values
    # next report: no new drops -> OK again
    assert by_name(diag.statuses(2 * S))["sync"].level == OK


def test_diagnostic_array_message_round_trips():
    diag = Diagnostics(name="fusionocc_occupancy", hardware_id="cpu", expected_inputs=["lidar"])
    diag.tick_input("lidar", S)
    msg = diag.to_message(now_ns=2 * S, stamp_ns=5 * S + 7)
    assert isinstance(msg, DiagnosticArray) and msg.header.stamp.sec == 5 and msg.header.stamp.nanosec == 7
    assert deserialize_message(serialize_message(msg), DiagnosticArray) == msg
    inputs = msg.status[0]
    assert inputs.name == "fusionocc_occupancy: inputs" and inputs.level == DiagnosticStatus.OK and inputs.hardware_id == "cpu"

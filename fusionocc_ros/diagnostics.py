"""Diagnostics bookkeeping for the node: input/output rates, counters, per-stage latencies.

Contract: plain Python, fed from any thread (`tick`, `latency`, `set_counters`, `set_value`),
and read once per report period with `statuses(now_ns)` -> list[Status] (name, level, message,
hardware_id, key/value strings) -- the content of a diagnostic_msgs/DiagnosticArray, which
`to_message` builds (importing diagnostic_msgs only there). Levels follow DiagnosticStatus:
inputs WARN when an expected topic went quiet, sync WARN when sets were dropped since the last
report, latency WARN when the end-to-end p95 exceeds `max_latency_s`.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3
END_TO_END = "end_to_end"


@dataclass
class Status:
    """One diagnostic_msgs/DiagnosticStatus worth of content."""

    name: str
    level: int
    message: str
    hardware_id: str
    values: list[tuple[str, str]] = field(default_factory=list)


class RateMeter:
    """Events per second over a sliding window of `window_s` (times in ns, any monotonic base)."""

    def __init__(self, window_s: float = 5.0):
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()
        self.total = 0

    def tick(self, now_ns: int) -> None:
        self._times.append(int(now_ns))
        self.total += 1

    def rate(self, now_ns: int) -> float:
        cutoff = int(now_ns) - self.window_ns
        while self._times and self._times[0] <= cutoff:
            self._times.popleft()
        return len(self._times) / (self.window_ns / 1e9)


class LatencyStats:
    """The last `window` samples of one latency, in seconds."""

    def __init__(self, window: int = 100):
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(float(seconds))
        self.count += 1

    def summary(self) -> dict[str, float]:
        """mean, p50, p95, max, last in seconds (empty dict before the first sample)."""
        if not self._samples:
            return {}
        arr = np.fromiter(self._samples, float)
        p50, p95 = np.percentile(arr, [50, 95])
        return {"mean": float(arr.mean()), "p50": float(p50), "p95": float(p95), "max": float(arr.max()), "last": float(arr[-1])}


def _flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(name, value))
        else:
            out[name] = value
    return out


class Diagnostics:
    """Collects the node's health numbers and renders them as DiagnosticStatus content."""

    def __init__(
        self,
        name: str = "fusionocc_occupancy",
        hardware_id: str = "",
        expected_inputs: Iterable[str] = (),
        rate_window_s: float = 5.0,
        latency_window: int = 100,
        min_input_rate_hz: float = 0.1,
        max_latency_s: float | None = None,
    ):
        self.name = name
        self.hardware_id = hardware_id
        self.expected_inputs = tuple(expected_inputs)
        self.rate_window_s = rate_window_s
        self.latency_window = latency_window
        self.min_input_rate_hz = min_input_rate_hz
        self.max_latency_s = max_latency_s
        self._lock = threading.Lock()
        self._inputs: dict[str, RateMeter] = {k: RateMeter(rate_window_s) for k in self.expected_inputs}
        self._outputs: dict[str, RateMeter] = {}
        self._latency: dict[str, LatencyStats] = {}
        self._counters: dict[str, dict[str, Any]] = {}
        self._values: dict[str, Any] = {}
        self._last_drops: dict[str, int] = {}

    # --- feeding ------------------------------------------------------------------------------

    def tick_input(self, topic: str, now_ns: int) -> None:
        with self._lock:
            self._inputs.setdefault(topic, RateMeter(self.rate_window_s)).tick(now_ns)

    def tick_output(self, topic: str, now_ns: int) -> None:
        with self._lock:
            self._outputs.setdefault(topic, RateMeter(self.rate_window_s)).tick(now_ns)

    def latency(self, stage: str, seconds: float) -> None:
        """A per-stage latency sample; stage END_TO_END is LiDAR stamp -> publish."""
        with self._lock:
            self._latency.setdefault(stage, LatencyStats(self.latency_window)).add(seconds)

    def set_counters(self, group: str, counters: Mapping[str, Any]) -> None:
        """Replace a counter group (e.g. the synchronizer's stats(); nested dicts are flattened).

        Keys starting with 'drops.' are summed to decide the group's level.
        """
        with self._lock:
            self._counters[group] = _flatten("", counters)

    def set_value(self, key: str, value: Any) -> None:
        """A free-form value reported under the outputs status (e.g. device memory)."""
        with self._lock:
            self._values[key] = value

    # --- reading ------------------------------------------------------------------------------

    def statuses(self, now_ns: int) -> list[Status]:
        """The current health as DiagnosticStatus content (one status per aspect)."""
        with self._lock:
            out = [self._inputs_status(now_ns)]
            out.extend(self._counter_status(g, c) for g, c in sorted(self._counters.items()))
            out.append(self._latency_status())
            out.append(self._outputs_status(now_ns))
            return out

    def _status(self, aspect: str, level: int, message: str, values: dict[str, Any]) -> Status:
        pairs = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()]
        return Status(f"{self.name}: {aspect}", level, message, self.hardware_id, pairs)

    def _inputs_status(self, now_ns: int) -> Status:
        rates = {topic: meter.rate(now_ns) for topic, meter in sorted(self._inputs.items())}
        quiet = [t for t in self.expected_inputs if rates.get(t, 0.0) < self.min_input_rate_hz]
        values: dict[str, Any] = {f"{t} rate_hz": r for t, r in rates.items()}
        values.update({f"{t} total": self._inputs[t].total for t in sorted(self._inputs)})
        if quiet:
            return self._status("inputs", WARN, f"no data from {', '.join(quiet)}", values)
        return self._status("inputs", OK, "all inputs arriving", values)

    def _counter_status(self, group: str, counters: dict[str, Any]) -> Status:
        drops = {k: int(v) for k, v in counters.items() if k.startswith("drops.")}
        total = sum(drops.values())
        new = total - self._last_drops.get(group, 0)
        self._last_drops[group] = total
        if new > 0:
            reasons = ", ".join(f"{k[6:]}={v}" for k, v in drops.items() if v)
            return self._status(group, WARN, f"{new} dropped since last report ({reasons})", counters)
        return self._status(group, OK, "no drops since last report", counters)

    def _latency_status(self) -> Status:
        values: dict[str, Any] = {}
        for stage, stats in sorted(self._latency.items()):
            for key, value in stats.summary().items():
                values[f"{stage} {key}_ms"] = value * 1e3
        e2e = self._latency.get(END_TO_END)
        summary = e2e.summary() if e2e is not None else {}
        if not summary:
            return self._status("latency", OK, "no output yet", values)
        message = f"end-to-end p95 {summary['p95'] * 1e3:.0f} ms"
        if self.max_latency_s is not None and summary["p95"] > self.max_latency_s:
            return self._status("latency", WARN, f"{message} > {self.max_latency_s * 1e3:.0f} ms", values)
        return self._status("latency", OK, message, values)

    def _outputs_status(self, now_ns: int) -> Status:
        values: dict[str, Any] = {f"{t} rate_hz": m.rate(now_ns) for t, m in sorted(self._outputs.items())}
        values.update({f"{t} total": m.total for t, m in sorted(self._outputs.items())})
        values.update(self._values)
        published = sum(m.total for m in self._outputs.values())
        return self._status("outputs", OK, f"{published} messages published", values)

    def to_message(self, now_ns: int, stamp_ns: int | None = None) -> Any:
        """diagnostic_msgs/msg/DiagnosticArray of statuses(now_ns), stamped stamp_ns (default now)."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        stamp = now_ns if stamp_ns is None else stamp_ns
        msg = DiagnosticArray()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
        for s in self.statuses(now_ns):
            msg.status.append(
                DiagnosticStatus(
                    level=bytes([s.level]),
                    name=s.name,
                    message=s.message,
                    hardware_id=s.hardware_id,
                    values=[KeyValue(key=k, value=v) for k, v in s.values],
                )
            )
        return msg

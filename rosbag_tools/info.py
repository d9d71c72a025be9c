"""fusionocc-bag-info: what a rosbag2 directory holds (topics, types, counts, rates, duration, size).

Works on any rosbag2 (MCAP or sqlite3) without ROS; rates come from each topic's own stamps.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import yaml

from fusionocc_core.cli import ToolError, ToolParser, tool_main
from rosbag_tools.qos import is_latched
from rosbag_tools.reading import open_bag

PROG = "fusionocc-bag-info"


class BagError(ToolError):
    """The path is not a readable rosbag2 directory (one-line reason)."""


@dataclass
class TopicSummary:
    """One topic of a bag."""

    name: str
    msgtype: str
    count: int
    first_ns: int | None = None
    last_ns: int | None = None
    latched: bool = False

    @property
    def rate_hz(self) -> float | None:
        """Mean message rate from the topic's first to last stamp (None below two messages)."""
        if self.count < 2 or self.first_ns is None or self.last_ns is None or self.last_ns <= self.first_ns:
            return None
        return (self.count - 1) / ((self.last_ns - self.first_ns) * 1e-9)


@dataclass
class BagSummary:
    """Everything fusionocc-bag-info prints about a bag."""

    path: str
    storage: str
    version: int
    size_bytes: int
    start_ns: int
    duration_ns: int
    message_count: int
    topics: list[TopicSummary] = field(default_factory=list)
    custom_data: dict[str, str] = field(default_factory=dict)


def summarize(path: str | Path, scan: bool = True) -> BagSummary:
    """Read a bag's metadata (and, when `scan`, every stamp for per-topic rates)."""
    bag = Path(path)
    with open_bag(bag) as reader:  # missing, not a rosbag2 directory, unreadable: BagReadError
        try:
            info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            topics: dict[int, TopicSummary] = {}
            for conn in reader.connections:
                topics[conn.id] = TopicSummary(
                    conn.topic, conn.msgtype, conn.msgcount,
                    latched=is_latched(getattr(conn.ext, "offered_qos_profiles", []) or []),
                )
            if scan:
                counts = {cid: 0 for cid in topics}
                for conn, stamp, _ in reader.messages():
                    t = topics[conn.id]
                    t.first_ns = stamp if t.first_ns is None else min(t.first_ns, stamp)
                    t.last_ns = stamp if t.last_ns is None else max(t.last_ns, stamp)
                    counts[conn.id] += 1
                for cid, n in counts.items():
                    topics[cid].count = n
            summary = BagSummary(
                path=str(bag),
                storage=str(info["storage_identifier"]),
                version=int(info["version"]),
                size_bytes=sum(p.stat().st_size for p in bag.rglob("*") if p.is_file()),
                start_ns=int(info["starting_time"]["nanoseconds_since_epoch"]),
                duration_ns=int(info["duration"]["nanoseconds"]),
                message_count=sum(t.count for t in topics.values()),
                topics=sorted(topics.values(), key=lambda t: t.name),
                custom_data={str(k): str(v) for k, v in (info.get("custom_data") or {}).items()},
            )
        except Exception as exc:  # yaml/rosbags errors, missing keys: a corrupt or unsupported bag
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise BagError(f"cannot read bag {bag}: {detail}") from exc
    return summary


def _stamp(ns: int) -> str:
    utc = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return f"{utc:%Y-%m-%d %H:%M:%S}.{ns % 1_000_000_000:09d} UTC ({ns / 1e9:.6f})"


def format_summary(s: BagSummary) -> str:
    """Human-readable report of a BagSummary."""
    lines = [
        f"Bag:       {s.path}",
        f"Storage:   {s.storage} (metadata version {s.version})",
        f"Size:      {s.size_bytes / 1e6:.2f} MB",
        f"Duration:  {s.duration_ns / 1e9:.3f} s",
        f"Start:     {_stamp(s.start_ns)}",
        f"End:       {_stamp(s.start_ns + s.duration_ns)}",
        f"Messages:  {s.message_count}",
    ]
    lines += [f"Custom:    {k} = {v}" for k, v in sorted(s.custom_data.items())]
    name_w = max([len(t.name) for t in s.topics] + [5])
    type_w = max([len(t.msgtype) for t in s.topics] + [4])
    lines.append(f"Topics:    {len(s.topics)}")
    lines.append(f"  {'topic':<{name_w}}  {'type':<{type_w}}  {'count':>7}  {'rate Hz':>8}")
    for t in s.topics:
        rate = f"{t.rate_hz:8.2f}" if t.rate_hz is not None else f"{'-':>8}"
        latched = "  latched" if t.latched else ""
        lines.append(f"  {t.name:<{name_w}}  {t.msgtype:<{type_w}}  {t.count:>7}  {rate}{latched}")
    return "\n".join(lines)


def build_parser() -> ToolParser:
    """The fusionocc-bag-info argument parser."""
    p = ToolParser(
        prog=PROG,
        description="Print a rosbag2 directory's topics, types, message counts, per-topic rates "
        "(from the messages' own stamps), duration and size. No ROS install needed.",
    )
    p.add_argument("bag", metavar="BAG", help="rosbag2 directory (MCAP or sqlite3), e.g. OUT/scene-0061")
    p.add_argument("--no-scan", action="store_true", help="only read the metadata (fast on large bags); "
                   "rates are then not shown")
    return p


@tool_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of fusionocc-bag-info; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    summary = summarize(args.bag, scan=not args.no_scan)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""QoS offered in our bags, and the rosbag2-player rule that turns recorded offers into a profile.

/tf_static is offered latched (transient-local, keep-last 1, reliable) as tf2's static
broadcaster does; every other topic reliable + volatile so any subscriber matches on replay.
"""
from __future__ import annotations

from typing import Any, Sequence

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

_ZERO = QosTime(sec=0, nsec=0)  # "system default" (infinite) deadline/lifespan/lease


def _qos(depth: int, durability: QosDurability) -> Qos:
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE,
        durability=durability,
        deadline=_ZERO,
        lifespan=_ZERO,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_ZERO,
        avoid_ros_namespace_conventions=False,
    )


TF_STATIC_QOS: Qos = _qos(1, QosDurability.TRANSIENT_LOCAL)
TF_QOS: Qos = _qos(100, QosDurability.VOLATILE)
SENSOR_QOS: Qos = _qos(10, QosDurability.VOLATILE)


def offered_qos(topic: str) -> list[Qos]:
    """The offered_qos_profiles we record for `topic`."""
    if topic == "/tf_static":
        return [TF_STATIC_QOS]
    if topic == "/tf":
        return [TF_QOS]
    return [SENSOR_QOS]


def is_latched(offers: Sequence[Qos]) -> bool:
    """True when every recorded offer is transient-local (rosbag2's rule for latching on replay)."""
    return bool(offers) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offers)


def replay_profile(offers: Sequence[Qos]) -> Any:
    """rclpy QoSProfile for re-publishing a topic recorded with `offers` (rosbag2 player rules).

    Reliable unless every offer was best-effort; transient-local only if all offers were;
    depth = the largest recorded depth (at least 1; 10 when nothing was recorded).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    best_effort = bool(offers) and all(q.reliability == QosReliability.BEST_EFFORT for q in offers)
    depth = max((int(q.depth) for q in offers), default=10)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(depth, 1),
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if is_latched(offers) else DurabilityPolicy.VOLATILE,
    )

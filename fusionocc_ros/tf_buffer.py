"""A small TF buffer (the part of tf2 the node needs), fed from /tf and /tf_static messages.

It follows tf2's rules (ros2/geometry2 Jazzy, buffer_core.cpp and cache.cpp):
  - every sample of a frame stores its own parent, so a frame that is re-parented keeps its
    history under the old parent, and a lookup walks the tree as it was at the lookup time
    (interpolation between samples with different parents returns the older one, as tf2 does);
  - a dynamic frame keeps `cache_time_s` of history behind its newest sample; a message older than
    that is dropped (`old_data`, tf2's TF_OLD_DATA) and the history is kept; a second message
    with a stamp already stored is ignored (`repeated_data`, TF_REPEATED_DATA); a transform that
    would close a loop is refused (`cycle`); malformed transforms (NaN, a quaternion with
    |q|^2 off 1 by 0.01 or more, empty or self-parent frames) are refused with the reason the
    conversion gives; near-unit quaternions are normalised (both in `conversions`);
  - time jumping back (a looping bag, a restarted simulator) clears every dynamic history, as
    tf2_ros does on a ROS clock jump: the node calls `clear_dynamic` from its clock's jump
    callback; `observe_time` detects it from sensor stamps (replay has no clock). Static
    transforms survive both.
Static edges hold one transform (a newer one replaces it). Lookups return (4, 4) float64 matrices
T_target_source (maps source-frame points into the target frame):

  lookup(target, source, t)                           both frames at time t
  lookup_full(target, t_target, source, t_source, fixed)   e.g. camera at t_cam -> base_link
                                                       at t_lidar, through `map`
Time 0 (or None) means "latest common time" of the chain. Failures raise TfError subclasses
(FrameNotFound, ConnectivityError, ExtrapolationError) with a one-line reason. Thread-safe.
"""
from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusionocc_core.data.poses import invert
from fusionocc_ros.conversions import ConversionError, transform_stamped_to_matrix
from fusionocc_ros.rigid import matrix_to_quat, slerp, transform_from_xyzw

REJECT_KINDS = ("malformed", "nan_input", "denormalized_quaternion", "old_data", "repeated_data", "cycle")
TIME_JUMP_S = 1.0  # sensor stamps this far behind the newest, twice in a row, mean time jumped back


class TfError(LookupError):
    """A transform lookup that cannot be answered; str(exc) says why."""


class FrameNotFound(TfError):
    pass


class ConnectivityError(TfError):
    pass


class ExtrapolationError(TfError):
    pass


class TransformRejected(ValueError):
    """A transform the buffer refuses; `kind` is one of REJECT_KINDS, str() the one-line reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass
class _Edge:
    """Transform history of one child frame: per sample its parent, translation and rotation."""

    static: bool
    stamps: list[int] = field(default_factory=list)  # sorted, ns (static: one entry)
    parents: list[str] = field(default_factory=list)
    trans: list[np.ndarray] = field(default_factory=list)  # (3,)
    quats: list[np.ndarray] = field(default_factory=list)  # (4,) x y z w

    def _older(self, t: int) -> int:
        """Index of the newest sample at or before t (the oldest one if t is before all)."""
        return max(bisect.bisect_right(self.stamps, t) - 1, 0)

    def parent_at(self, t: int | None) -> str:
        """The frame's parent at time t (None = the newest sample's), as tf2's TimeCache::getParent."""
        if self.static or t is None:
            return self.parents[-1]
        return self.parents[self._older(t)]

    def at(self, t: int, child: str, tolerance_ns: int) -> np.ndarray:
        """T_parent_child at time t (interpolated); raises ExtrapolationError outside the history."""
        if self.static:
            return transform_from_xyzw(self.trans[-1], self.quats[-1])
        stamps = self.stamps
        i = bisect.bisect_left(stamps, t)
        if i < len(stamps) and stamps[i] == t:
            return transform_from_xyzw(self.trans[i], self.quats[i])
        if i == 0 or i == len(stamps):
            j = 0 if i == 0 else len(stamps) - 1
            gap = abs(stamps[j] - t)
            if gap <= tolerance_ns:
                return transform_from_xyzw(self.trans[j], self.quats[j])
            side = "before the oldest" if i == 0 else "after the newest"
            raise ExtrapolationError(
                f"'{self.parents[j]}' -> '{child}' at {t / 1e9:.6f}s is {gap / 1e6:.1f} ms {side} transform "
                f"(have {stamps[0] / 1e9:.6f}s .. {stamps[-1] / 1e9:.6f}s)"
            )
        if self.parents[i - 1] != self.parents[i]:  # re-parented in between: tf2 takes the older sample
            return transform_from_xyzw(self.trans[i - 1], self.quats[i - 1])
        t0, t1 = stamps[i - 1], stamps[i]
        alpha = (t - t0) / (t1 - t0)
        trans = self.trans[i - 1] + alpha * (self.trans[i] - self.trans[i - 1])
        return transform_from_xyzw(trans, slerp(self.quats[i - 1], self.quats[i], alpha))


def _conversion_kind(reason: str) -> str:
    if "quaternion" in reason:
        return "denormalized_quaternion"
    if "NaN" in reason or "Inf" in reason:
        return "nan_input"
    return "malformed"


class TfBuffer:
    """Static + dynamic transform tree with interpolated lookups (see the module docstring)."""

    def __init__(self, cache_time_s: float = 10.0, extrapolation_tolerance_s: float = 0.0):
        if cache_time_s <= 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        if extrapolation_tolerance_s < 0:
            raise ValueError(f"extrapolation_tolerance_s must be >= 0, got {extrapolation_tolerance_s}")
        self.cache_ns = int(cache_time_s * 1e9)
        self.tolerance_ns = int(extrapolation_tolerance_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()
        self.rejected: Counter[str] = Counter()  # kind -> transforms refused
        self.clears = 0  # dynamic histories cleared after time jumped back
        self._newest_time: int | None = None  # observe_time's view of "now"
        self._jump_candidate: int | None = None

    # --- feeding ------------------------------------------------------------------------------

    def set_transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool = False) -> None:
        """Insert T_parent_child; raises TransformRejected (kind + reason) if tf2 would refuse it."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise TransformRejected("malformed", f"invalid transform '{parent}' -> '{child}'")
        stamp = int(stamp_ns)
        trans = np.array(T[:3, 3], dtype=np.float64)
        quat = matrix_to_quat(np.asarray(T[:3, :3], dtype=np.float64))
        with self._lock:
            if self._would_cycle(parent, child):
                raise TransformRejected("cycle", f"transform '{parent}' -> '{child}' would make a loop in the TF tree")
            edge = self._edges.get(child)
            if edge is None or edge.static != static:
                edge = self._edges[child] = _Edge(static=static)  # a frame moving between /tf and /tf_static
            if static:
                edge.stamps[:], edge.parents[:], edge.trans[:], edge.quats[:] = [stamp], [parent], [trans], [quat]
                return
            if edge.stamps and stamp < edge.stamps[-1] - self.cache_ns:
                raise TransformRejected(
                    "old_data", f"'{parent}' -> '{child}' at {stamp / 1e9:.6f}s is older than the newest "
                    f"({edge.stamps[-1] / 1e9:.6f}s) minus the cache time ({self.cache_ns / 1e9:g} s): dropped")
            i = bisect.bisect_left(edge.stamps, stamp)
            if i < len(edge.stamps) and edge.stamps[i] == stamp:
                raise TransformRejected(
                    "repeated_data", f"'{parent}' -> '{child}' at {stamp / 1e9:.6f}s: a transform with this stamp "
                    "is already stored, the new one is ignored")
            edge.stamps.insert(i, stamp)
            edge.parents.insert(i, parent)
            edge.trans.insert(i, trans)
            edge.quats.insert(i, quat)
            cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
            if cut:
                del edge.stamps[:cut], edge.parents[:cut], edge.trans[:cut], edge.quats[:cut]

    def add_tf_message(self, msg: Any, static: bool = False) -> list[tuple[str, str]]:
        """Feed a tf2_msgs/TFMessage-like object; returns (kind, reason) per rejected transform."""
        rejected: list[tuple[str, str]] = []
        try:
            transforms = list(msg.transforms)
        except (AttributeError, TypeError) as exc:
            rejected.append(("malformed", f"TFMessage: malformed ({exc})"))
            transforms = []
        for ts in transforms:
            try:
                parent, child, stamp, T = transform_stamped_to_matrix(ts)
                self.set_transform(parent, child, stamp, T, static=static)
            except TransformRejected as exc:
                rejected.append((exc.kind, str(exc)))
            except (ConversionError, ValueError) as exc:
                rejected.append((_conversion_kind(str(exc)), str(exc)))
        for kind, _ in rejected:
            self.rejected[kind] += 1
        return rejected

    def clear_dynamic(self) -> None:
        """Forget every dynamic history (time jumped back); static transforms stay, as in tf2."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static}
            self._newest_time, self._jump_candidate = None, None
            self.clears += 1

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._edges.clear()
            self._newest_time, self._jump_candidate = None, None

    def observe_time(self, stamp_ns: int) -> bool:
        """Note a sensor stamp; True (and dynamic histories cleared) when time jumped back: two stamps
        in a row more than TIME_JUMP_S behind the newest (one stray stamp is not a jump)."""
        t, jump = int(stamp_ns), int(TIME_JUMP_S * 1e9)
        with self._lock:
            newest = self._newest_time
            if newest is None or t >= newest - jump:
                self._newest_time = t if newest is None else max(newest, t)
                self._jump_candidate = None
                return False
            candidate, self._jump_candidate = self._jump_candidate, t
            if candidate is None or abs(t - candidate) > jump:
                return False
        self.clear_dynamic()
        with self._lock:
            self._newest_time = max(t, candidate)
        return True

    # --- queries ------------------------------------------------------------------------------

    @property
    def frames(self) -> set[str]:
        with self._lock:
            return self._frames()

    def lookup(self, target: str, source: str, stamp_ns: int | None) -> np.ndarray:
        """T_target_source with both frames at `stamp_ns` (0/None = latest common time)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            return self._lookup(target, source, stamp_ns)

    def lookup_full(self, target: str, target_ns: int | None, source: str, source_ns: int | None, fixed: str) -> np.ndarray:
        """T_target(t_target)_source(t_source), chained through `fixed`, which is assumed not to move."""
        target, source, fixed = target.lstrip("/"), source.lstrip("/"), fixed.lstrip("/")
        with self._lock:
            fixed_from_source = self._lookup(fixed, source, source_ns)
            target_from_fixed = self._lookup(target, fixed, target_ns)
        return target_from_fixed @ fixed_from_source

    def can_transform(self, target: str, source: str, stamp_ns: int | None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TfError:
            return False

    def latest_stamp(self, target: str, source: str) -> int | None:
        """Latest time at which target<-source can be looked up (None if not connected)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            try:
                chain = self._chain(target, source, None)
            except TfError:
                return None
            return self._latest_common(chain)

    # --- internals (hold the lock) ------------------------------------------------------------

    def _would_cycle(self, parent: str, child: str) -> bool:
        """Would child -> parent close a loop in the tree as it is now (newest parents)?"""
        frame, hops = parent, 0
        while hops <= len(self._edges) + 1:
            if frame == child:
                return True
            edge = self._edges.get(frame)
            if edge is None:
                return False
            frame = edge.parent_at(None)
            hops += 1
        return True

    def _ancestors(self, frame: str, t: int | None) -> list[str]:
        """frame, its parent at t, ..., the root."""
        out = [frame]
        while out[-1] in self._edges and len(out) <= len(self._edges) + 1:
            out.append(self._edges[out[-1]].parent_at(t))
        return out

    def _chain(self, target: str, source: str, t: int | None) -> tuple[list[str], list[str]]:
        """Child frames on the way up from source and from target to the common ancestor, at time t."""
        known = self._frames()
        for name in (target, source):
            if name not in known:
                raise FrameNotFound(f"frame '{name}' does not exist in the TF tree")
        up_source, up_target = self._ancestors(source, t), self._ancestors(target, t)
        common = set(up_target)
        for i, frame in enumerate(up_source):
            if frame in common:
                return up_source[:i], up_target[: up_target.index(frame)]
        raise ConnectivityError(
            f"'{source}' and '{target}' are not connected (roots '{up_source[-1]}' and '{up_target[-1]}')"
        )

    def _frames(self) -> set[str]:
        return set(self._edges) | {p for e in self._edges.values() for p in set(e.parents)}

    def _latest_common(self, chain: tuple[list[str], list[str]]) -> int:
        latest = [self._edges[c].stamps[-1] for c in (*chain[0], *chain[1]) if not self._edges[c].static]
        return min(latest) if latest else 0

    def _lookup(self, target: str, source: str, stamp_ns: int | None) -> np.ndarray:
        if target == source:
            if target not in self._frames():
                raise FrameNotFound(f"frame '{target}' does not exist in the TF tree")
            return np.eye(4)
        t = int(stamp_ns) if stamp_ns else self._latest_common(self._chain(target, source, None))
        chain = self._chain(target, source, t if t else None)
        root_from_source = np.eye(4)
        for child in chain[0]:  # source up to the common ancestor
            root_from_source = self._edges[child].at(t, child, self.tolerance_ns) @ root_from_source
        root_from_target = np.eye(4)
        for child in chain[1]:
            root_from_target = self._edges[child].at(t, child, self.tolerance_ns) @ root_from_target
        return invert(root_from_target) @ root_from_source

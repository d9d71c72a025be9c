"""A small TF buffer (the part of tf2 the node needs), fed from /tf and /tf_static messages.

Contract: frames form a tree (each child has one parent). Static edges hold one transform;
dynamic edges hold a time-sorted history bounded to `cache_time_s` behind the newest sample,
interpolated at lookup time (slerp rotation, lerp translation); a sample older than that whole
window means time jumped back (looping bag) and restarts the edge's history. Lookups return (4, 4) float64
matrices T_target_source (maps source-frame points into the target frame):

  lookup(target, source, t)                           both frames at time t
  lookup_full(target, t_target, source, t_source, fixed)   e.g. camera at t_cam -> base_link
                                                       at t_lidar, through `map`
Time 0 (or None) means "latest common time" of the chain. Failures raise TfError subclasses
(FrameNotFound, ConnectivityError, ExtrapolationError) with a one-line reason. Thread-safe.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from fusionocc_ros.conversions import ConversionError, transform_stamped_to_matrix
from fusionocc_ros.rigid import invert, make_transform, matrix_to_quat, slerp


class TfError(LookupError):
    """A transform lookup that cannot be answered; str(exc) says why."""


class FrameNotFound(TfError):
    pass


class ConnectivityError(TfError):
    pass


class ExtrapolationError(TfError):
    pass


@dataclass
class _Edge:
    """Transform history of one child frame relative to its parent."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)  # sorted, ns
    trans: list[np.ndarray] = field(default_factory=list)  # (3,)
    quats: list[np.ndarray] = field(default_factory=list)  # (4,) x y z w
    matrix: np.ndarray | None = None  # static edges only

    def at(self, t: int, child: str, tolerance_ns: int) -> np.ndarray:
        """T_parent_child at time t (interpolated); raises ExtrapolationError outside the history."""
        if self.static:
            return self.matrix  # type: ignore[return-value]
        stamps = self.stamps
        i = bisect.bisect_left(stamps, t)
        if i < len(stamps) and stamps[i] == t:
            return make_transform(self.trans[i], self.quats[i])
        if i == 0 or i == len(stamps):
            j = 0 if i == 0 else len(stamps) - 1
            gap = abs(stamps[j] - t)
            if gap <= tolerance_ns:
                return make_transform(self.trans[j], self.quats[j])
            side = "before the oldest" if i == 0 else "after the newest"
            raise ExtrapolationError(
                f"'{self.parent}' -> '{child}' at {t / 1e9:.6f}s is {gap / 1e6:.1f} ms {side} transform "
                f"(have {stamps[0] / 1e9:.6f}s .. {stamps[-1] / 1e9:.6f}s)"
            )
        t0, t1 = stamps[i - 1], stamps[i]
        alpha = (t - t0) / (t1 - t0)
        trans = self.trans[i - 1] + alpha * (self.trans[i] - self.trans[i - 1])
        return make_transform(trans, slerp(self.quats[i - 1], self.quats[i], alpha))


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
        self.rejected = 0  # transforms refused (malformed, cycles, re-parenting of static frames)

    # --- feeding ------------------------------------------------------------------------------

    def set_transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool = False) -> None:
        """Insert T_parent_child; raises ValueError for a self-loop or a cycle."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"invalid transform '{parent}' -> '{child}'")
        with self._lock:
            if self._would_cycle(parent, child):
                raise ValueError(f"transform '{parent}' -> '{child}' would make a cycle")
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent=parent, static=static)  # (re)start this edge
            if static:
                edge.matrix = np.array(T, dtype=np.float64)
                return
            stamp = int(stamp_ns)
            trans = np.array(T[:3, 3], dtype=np.float64)
            quat = matrix_to_quat(np.asarray(T[:3, :3], dtype=np.float64))
            i = bisect.bisect_left(edge.stamps, stamp)
            if i < len(edge.stamps) and edge.stamps[i] == stamp:
                edge.trans[i], edge.quats[i] = trans, quat  # same stamp: replace
            else:
                if edge.stamps and stamp < edge.stamps[-1] - self.cache_ns:
                    # older than the whole cache window: time jumped back (a looping bag, a
                    # restarted simulator), as tf2 clears its buffer on a clock jump
                    edge.stamps.clear(), edge.trans.clear(), edge.quats.clear()
                    i = 0
                edge.stamps.insert(i, stamp)
                edge.trans.insert(i, trans)
                edge.quats.insert(i, quat)
            cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
            if cut:
                del edge.stamps[:cut], edge.trans[:cut], edge.quats[:cut]

    def add_tf_message(self, msg: Any, static: bool = False) -> list[str]:
        """Feed a tf2_msgs/TFMessage-like object; returns one reason per rejected transform."""
        errors = []
        try:
            transforms = list(msg.transforms)
        except (AttributeError, TypeError) as exc:
            self.rejected += 1
            return [f"TFMessage: malformed ({exc})"]
        for ts in transforms:
            try:
                parent, child, stamp, T = transform_stamped_to_matrix(ts)
                self.set_transform(parent, child, stamp, T, static=static)
            except (ConversionError, ValueError) as exc:
                self.rejected += 1
                errors.append(str(exc))
        return errors

    def clear(self) -> None:
        """Forget everything (e.g. after simulated time jumped backwards)."""
        with self._lock:
            self._edges.clear()

    # --- queries ------------------------------------------------------------------------------

    @property
    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

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
                chain = self._chain(target, source)
            except TfError:
                return None
            return self._latest_common(chain)

    # --- internals (hold the lock) ------------------------------------------------------------

    def _would_cycle(self, parent: str, child: str) -> bool:
        frame, hops = parent, 0
        while frame in self._edges and hops <= len(self._edges):
            if frame == child:
                return True
            frame = self._edges[frame].parent
            hops += 1
        return frame == child

    def _ancestors(self, frame: str) -> list[str]:
        """frame, its parent, ..., the root."""
        out = [frame]
        while out[-1] in self._edges and len(out) <= len(self._edges) + 1:
            out.append(self._edges[out[-1]].parent)
        return out

    def _chain(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Child frames on the way up from source and from target to the common ancestor."""
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for name in (target, source):
            if name not in known:
                raise FrameNotFound(f"frame '{name}' does not exist in the TF tree")
        up_source, up_target = self._ancestors(source), self._ancestors(target)
        common = set(up_target)
        for i, frame in enumerate(up_source):
            if frame in common:
                return up_source[:i], up_target[: up_target.index(frame)]
        raise ConnectivityError(
            f"'{source}' and '{target}' are not connected (roots '{up_source[-1]}' and '{up_target[-1]}')"
        )

    def _latest_common(self, chain: tuple[list[str], list[str]]) -> int:
        latest = [self._edges[c].stamps[-1] for c in (*chain[0], *chain[1]) if not self._edges[c].static]
        return min(latest) if latest else 0

    def _lookup(self, target: str, source: str, stamp_ns: int | None) -> np.ndarray:
        if target == source:
            if target not in self._edges and not any(e.parent == target for e in self._edges.values()):
                raise FrameNotFound(f"frame '{target}' does not exist in the TF tree")
            return np.eye(4)
        chain = self._chain(target, source)
        t = int(stamp_ns) if stamp_ns else self._latest_common(chain)
        root_from_source = np.eye(4)
        for child in chain[0]:  # source up to the common ancestor
            root_from_source = self._edges[child].at(t, child, self.tolerance_ns) @ root_from_source
        root_from_target = np.eye(4)
        for child in chain[1]:
            root_from_target = self._edges[child].at(t, child, self.tolerance_ns) @ root_from_target
        return invert(root_from_target) @ root_from_source


def missing_transforms(buffer: TfBuffer, pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The (target, source) pairs not yet connected in `buffer`, as 'target<-source' (start-up gate)."""
    return [f"{t}<-{s}" for t, s in pairs if buffer.latest_stamp(t, s) is None]

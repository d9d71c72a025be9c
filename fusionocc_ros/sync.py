"""LiDAR-anchored camera synchronizer: one deterministic code path for live, replay and tests.

Contract: every LiDAR sweep (stamp t) yields at most one SyncedSet. For each camera it takes the
buffered frame nearest t within [t - before, t + after] (ties go to the later frame; a camera
frame may serve two sweeps). The default window [t - 60 ms, t + 10 ms] is nuScenes' timing: a
LiDAR scan is stamped at the END of its rotation and each camera is triggered during it, so the
key-frame images lie 0.5-43 ms BEFORE the LiDAR stamp, and the next camera cycle (~83 ms later,
+40 ms and more) stays outside the window.

A camera's choice is final once it has delivered a frame stamped >= t (later frames can only be
farther away), or once its next frame cannot be nearer within the window: frames of a camera are
taken to be at least 7/8 of its smallest recent interval apart (the minimum of its last
INTERVAL_HISTORY intervals, once MIN_INTERVALS are known), so with cameras buffered before the
LiDAR the set is decided as soon as the LiDAR arrives. (A camera that suddenly speeds up may so
get an in-window frame that a later, nearer one would have beaten.) A sweep still waiting for a
camera is decided anyway once a later sweep's stamp passes t + after + max_wait (the LiDAR is the
stream clock: a graph whose LiDAR stops has nothing to decide). Everything is a pure function of the stamps and the per-topic call order -- no wall clock -- so the same input
gives the same sets.

Each sweep that yields no set is counted in `drops` under one reason:
  missing_camera      a camera had no frame in the window when the sweep was decided
  lidar_out_of_order  the sweep's stamp was <= the previous sweep's (small step back)
  buffer_overflow     too many sweeps waiting; the oldest was given up
  time_jump           pending when the LiDAR stamps jumped back by > reset_jump (bag loop)
Camera frames thrown away are counted in `discarded` (camera_out_of_order, camera_late,
camera_buffer_overflow, camera_time_jump). Thread-safe: callbacks may come from any thread;
`on_drop(reason, lidar_stamp_ns, detail)` is called for every drop (e.g. to log it).
"""
from __future__ import annotations

import bisect
import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

NS = 1_000_000_000

DROP_REASONS = ("missing_camera", "lidar_out_of_order", "buffer_overflow", "time_jump")
DISCARD_REASONS = ("camera_out_of_order", "camera_late", "camera_buffer_overflow", "camera_time_jump")
INTERVAL_HISTORY = 8  # a camera's frame interval is the smallest of its last 8 ...
MIN_INTERVALS = 3  # ... once 3 are known (before that, a set waits for a frame >= t)


@dataclass(frozen=True)
class SyncedSet:
    """One LiDAR sweep with the chosen frame of every camera (payloads are passed through)."""

    lidar_stamp_ns: int
    lidar: Any
    camera_stamps_ns: tuple[int, ...]  # in the synchronizer's camera order
    cameras: tuple[Any, ...]

    @property
    def max_offset_ns(self) -> int:
        """Largest |camera stamp - LiDAR stamp| in the set."""
        return max(abs(s - self.lidar_stamp_ns) for s in self.camera_stamps_ns)


class _CameraBuffer:
    """Time-sorted frames of one camera (stamps strictly increasing)."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.payloads: list[Any] = []
        self.newest: int | None = None  # newest stamp ever accepted (survives pruning)
        self.intervals: deque[int] = deque(maxlen=INTERVAL_HISTORY)  # between successive frames

    def clear(self) -> None:
        self.stamps.clear()
        self.payloads.clear()
        self.newest = None
        self.intervals.clear()

    def advance(self, stamp: int) -> None:
        """Record `stamp` (> newest) as the newest frame and the interval to the previous one."""
        if self.newest is not None:
            self.intervals.append(stamp - self.newest)
        self.newest = stamp

    @property
    def min_interval(self) -> int | None:
        """Smallest recent interval between frames, or None while too few are known."""
        return min(self.intervals) if len(self.intervals) >= MIN_INTERVALS else None

    def drop_before(self, stamp: int) -> None:
        cut = bisect.bisect_left(self.stamps, stamp)
        if cut:
            del self.stamps[:cut], self.payloads[:cut]

    def nearest(self, t: int, lo: int, hi: int) -> int | None:
        """Index of the frame nearest t within [lo, hi] (ties: the later frame), or None."""
        i = bisect.bisect_left(self.stamps, t)
        best, best_gap = None, None
        for j in (i, i - 1):  # first frame >= t, last frame < t
            if 0 <= j < len(self.stamps) and lo <= self.stamps[j] <= hi:
                gap = abs(self.stamps[j] - t)
                if best_gap is None or gap < best_gap:
                    best, best_gap = j, gap
        return best


class LidarAnchoredSync:
    """Pairs each LiDAR sweep with the nearest frame of every camera (see the module docstring)."""

    def __init__(
        self,
        camera_names: Sequence[str],
        window_before_s: float = 0.06,
        window_after_s: float = 0.01,
        max_wait_s: float = 0.1,
        camera_buffer_size: int = 16,
        max_pending: int = 8,
        reset_jump_s: float = 1.0,
        on_drop: Callable[[str, int, str], None] | None = None,
    ):
        if not camera_names or len(set(camera_names)) != len(camera_names):
            raise ValueError(f"camera_names must be non-empty and unique, got {list(camera_names)}")
        for name, value in (("window_before_s", window_before_s), ("window_after_s", window_after_s), ("max_wait_s", max_wait_s)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if window_before_s + window_after_s <= 0:
            raise ValueError("the window [t - before, t + after] is empty")
        for name, value in (("camera_buffer_size", camera_buffer_size), ("max_pending", max_pending)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not reset_jump_s > 0:
            raise ValueError(f"reset_jump_s must be > 0, got {reset_jump_s}")
        self.camera_names = tuple(camera_names)
        self.before_ns = int(round(window_before_s * NS))
        self.after_ns = int(round(window_after_s * NS))
        self.max_wait_ns = int(round(max_wait_s * NS))
        self.camera_buffer_size = int(camera_buffer_size)
        self.max_pending = int(max_pending)
        self.reset_jump_ns = int(round(reset_jump_s * NS))
        self.on_drop = on_drop

        self._lock = threading.RLock()  # on_drop may read stats() while it is held
        self._cams = {name: _CameraBuffer() for name in self.camera_names}
        self._pending: deque[tuple[int, Any]] = deque()
        self._last_lidar: int | None = None  # the stream clock
        self._events: list[tuple[str, int, str]] = []
        self.emitted = 0
        self.drops: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
        self.discarded: Counter[str] = Counter({r: 0 for r in DISCARD_REASONS})
        self.missing_by_camera: Counter[str] = Counter({n: 0 for n in self.camera_names})

    # --- inputs -------------------------------------------------------------------------------

    def add_lidar(self, stamp_ns: int, payload: Any) -> list[SyncedSet]:
        """Register a sweep; returns the sets decided by it (oldest first)."""
        t = int(stamp_ns)
        with self._lock:
            if self._last_lidar is not None and t <= self._last_lidar:
                if self._last_lidar - t > self.reset_jump_ns:
                    self._reset_to(t)
                else:
                    self._drop("lidar_out_of_order", t, f"stamp {t / NS:.6f}s <= previous {self._last_lidar / NS:.6f}s")
                    return self._finish([])
            self._last_lidar = t
            self._pending.append((t, payload))
            while len(self._pending) > self.max_pending:
                old, _ = self._pending.popleft()
                self._drop("buffer_overflow", old, f"more than {self.max_pending} sweeps waiting for cameras")
            return self._finish(self._decide())

    def add_camera(self, name: str, stamp_ns: int, payload: Any) -> list[SyncedSet]:
        """Register a camera frame; returns the sets decided by it. Unknown names raise KeyError."""
        if name not in self._cams:
            raise KeyError(f"unknown camera '{name}' (expected one of {', '.join(self.camera_names)})")
        t = int(stamp_ns)
        with self._lock:
            buf = self._cams[name]
            if buf.newest is not None and t <= buf.newest:
                if buf.newest - t > self.reset_jump_ns:
                    buf.clear()
                    self.discarded["camera_time_jump"] += 1
                else:
                    self.discarded["camera_out_of_order"] += 1
                    return self._finish([])
            buf.advance(t)
            needed = self._oldest_needed()
            if needed is not None and needed - self.reset_jump_ns <= t < needed:
                self.discarded["camera_late"] += 1  # every sweep it could serve is decided
                return self._finish(self._decide())
            # (far older than the LiDAR: a new timeline, e.g. a looping bag; kept for its sweeps)
            buf.stamps.append(t)
            buf.payloads.append(payload)
            if len(buf.stamps) > self.camera_buffer_size:
                del buf.stamps[0], buf.payloads[0]
                self.discarded["camera_buffer_overflow"] += 1
            return self._finish(self._decide())

    def flush(self) -> list[SyncedSet]:
        """Decide every waiting sweep now with the frames at hand (end of a bag)."""
        with self._lock:
            return self._finish(self._decide(force=True))

    # --- introspection ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics: emitted sets, drops by reason, discarded frames, misses per camera."""
        with self._lock:
            return {
                "emitted": self.emitted,
                "pending": len(self._pending),
                "drops": dict(self.drops),
                "discarded": dict(self.discarded),
                "missing_by_camera": dict(self.missing_by_camera),
            }

    # --- internals (called with the lock held) ------------------------------------------------

    def _drop(self, reason: str, stamp: int, detail: str) -> None:
        self.drops[reason] += 1
        self._events.append((reason, stamp, detail))

    def _finish(self, sets: list[SyncedSet]) -> list[SyncedSet]:
        """Report the drops of this call to on_drop (runs under the lock) and return the sets."""
        events, self._events = self._events, []
        if self.on_drop is not None:
            for event in events:
                self.on_drop(*event)
        return sets

    def _oldest_needed(self) -> int | None:
        """Camera frames older than this can no longer serve any sweep."""
        if self._pending:
            return self._pending[0][0] - self.before_ns
        if self._last_lidar is not None:
            return self._last_lidar - self.before_ns
        return None

    def _reset_to(self, t: int) -> None:
        """LiDAR time jumped back to t: drop waiting sweeps and camera frames from the old timeline."""
        for old, _ in self._pending:
            self._drop("time_jump", old, f"LiDAR stamps jumped back to {t / NS:.6f}s")
        self._pending.clear()
        for buf in self._cams.values():
            if buf.newest is not None and buf.newest > t + self.reset_jump_ns:
                buf.clear()  # this camera has not jumped yet: its next frame starts afresh
        self._last_lidar = None

    def _settled(self, buf: _CameraBuffer, t: int, lo: int, hi: int) -> bool:
        """True when no frame this camera may still deliver could be its pick for the sweep at t."""
        if buf.newest is None:
            return False
        if buf.newest >= t:
            return True  # later frames are farther from t
        interval = buf.min_interval
        if interval is None:
            return False
        idx = buf.nearest(t, lo, hi)
        # a later frame wins only inside the window and no farther than the pick (ties: the later);
        # the next frame may come up to an eighth of an interval early (trigger jitter)
        reach = hi if idx is None else min(hi, 2 * t - buf.stamps[idx])
        return buf.newest + interval - interval // 8 > reach

    def _decide(self, force: bool = False) -> list[SyncedSet]:
        out: list[SyncedSet] = []
        while self._pending:
            t, payload = self._pending[0]
            due = force or (self._last_lidar is not None and self._last_lidar > t + self.after_ns + self.max_wait_ns)
            lo, hi = t - self.before_ns, t + self.after_ns
            if not due and not all(self._settled(buf, t, lo, hi) for buf in self._cams.values()):
                break  # a camera may still deliver a nearer frame
            self._pending.popleft()
            picks = {name: buf.nearest(t, lo, hi) for name, buf in self._cams.items()}
            missing = [name for name, idx in picks.items() if idx is None]
            if missing:
                self.missing_by_camera.update(missing)
                self._drop("missing_camera", t, f"no frame within [-{self.before_ns / 1e6:.0f}, +{self.after_ns / 1e6:.0f}] ms from {', '.join(missing)}")
                continue
            stamps = tuple(self._cams[n].stamps[picks[n]] for n in self.camera_names)  # type: ignore[index]
            payloads = tuple(self._cams[n].payloads[picks[n]] for n in self.camera_names)  # type: ignore[index]
            out.append(SyncedSet(t, payload, stamps, payloads))
            self.emitted += 1
        cut = self._oldest_needed()
        if cut is not None:
            for buf in self._cams.values():
                if buf.newest is not None and buf.newest < cut - self.reset_jump_ns:
                    continue  # this camera already jumped to a new timeline: keep its frames
                buf.drop_before(cut)
        return out

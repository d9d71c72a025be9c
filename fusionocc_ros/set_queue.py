"""The node's hand-over from the ROS callbacks to the inference thread: a bounded FIFO whose oldest
entry is superseded when it is full (size 1 = the newest set wins, a live robot never falls behind).
Plain threading, no rclpy, so it is tested on its own."""
from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")


class SupersedingQueue(Generic[T]):
    """put() never blocks; get() waits for an item or close(). `superseded` counts items dropped
    because newer ones arrived while the queue was full."""

    def __init__(self, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.size = int(size)
        self.superseded = 0
        self._items: deque[T] = deque()
        self._cv = threading.Condition()
        self._closed = False

    def put(self, items: Iterable[T]) -> None:
        """Append items in order; when over the size, the oldest are dropped (and counted)."""
        with self._cv:
            self._items.extend(items)
            while len(self._items) > self.size:
                self._items.popleft()
                self.superseded += 1
            self._cv.notify()

    def get(self) -> T | None:
        """The oldest waiting item; None once closed (waiting items are then abandoned)."""
        with self._cv:
            while not self._items and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            return self._items.popleft()

    def close(self) -> None:
        """Wake every get() with None."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

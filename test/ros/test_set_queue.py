"""SupersedingQueue: the node's hand-over to its inference thread (inference.queue_size)."""
from __future__ import annotations

import threading

import pytest

from fusionocc_ros.set_queue import SupersedingQueue


def test_size_one_keeps_the_newest_and_counts_the_rest():
    q: SupersedingQueue[int] = SupersedingQueue(1)
    q.put([1])
    q.put([2, 3])
    assert q.get() == 3 and q.superseded == 2


def test_size_n_keeps_order_and_drops_the_oldest_when_full():
    q: SupersedingQueue[int] = SupersedingQueue(3)
    q.put([1, 2])
    q.put([3, 4, 5])
    assert [q.get() for _ in range(3)] == [3, 4, 5] and q.superseded == 2


def test_get_waits_for_a_put_and_close_wakes_it():
    q: SupersedingQueue[int] = SupersedingQueue(2)
    got: list = []
    worker = threading.Thread(target=lambda: got.extend([q.get(), q.get()]))
    worker.start()
    q.put([7])
    worker.join(timeout=0.2)
    assert worker.is_alive()  # waiting for a second item
    q.close()
    worker.join(timeout=10)
    assert not worker.is_alive() and got == [7, None]


def test_size_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        SupersedingQueue(0)

"""Test-wide settings: keep DDS on loopback with a domain id unique to each test process, one torch
thread budget per process, and data that xdist workers build once and share."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Callable

import pytest

# Set before anything imports rclpy or torch; child processes inherit them.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
if "FUSIONOCC_TEST_DOMAIN_ID" not in os.environ:
    # one base per test run, random across runs (xdist workers inherit the controller's base)
    os.environ["FUSIONOCC_TEST_DOMAIN_ID"] = str(random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little")).randint(1, 100))
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist, else ""
_WORKER_INDEX = int(_WORKER[2:]) if _WORKER.startswith("gw") else 0
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
# each worker its own domain (base + index, wrapped into 1..100), so parallel ROS tests never meet
os.environ["ROS_DOMAIN_ID"] = str((int(os.environ["FUSIONOCC_TEST_DOMAIN_ID"]) - 1 + _WORKER_INDEX) % 100 + 1)
# torch intra-op threads: the cores shared out between the workers (2 cores, 2 workers: 1 each);
# FUSIONOCC_TEST_THREADS overrides. Tools the tests start as subprocesses get the same number.
TEST_THREADS = int(os.environ.get("FUSIONOCC_TEST_THREADS") or max(1, min(2, (os.cpu_count() or 2) // _WORKERS)))
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)
if "torch" in __import__("sys").modules:  # imported by a plugin before this file: tell it directly
    __import__("torch").set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def build_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], None]], Path]:
    """build_once(name, make) -> a folder that make(folder) filled once for the whole test run:
    xdist workers share it (the first one builds it under a file lock, the others wait and reuse
    it). Tests must treat it as read-only."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if _WORKER:
        root = root.parent  # the run's folder above every worker's own basetemp

    def get(name: str, make: Callable[[Path], None]) -> Path:
        folder = root / f"shared-{name}"
        with FileLock(str(folder) + ".lock"):
            if not (folder / ".complete").exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                (folder / ".complete").touch()
        return folder

    return get


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a test marked slow run first (each file's tests stay together and in order), so
    that under xdist the long ones start early instead of ending the run on one busy worker."""
    has_slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in has_slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """With FUSIONOCC_TEST_CPU_LOG=<file>: append each test's CPU seconds (setup + call + teardown,
    this process and the subprocesses it waited for) as `<seconds>\\t<node id>` lines, to find the
    tests that cost the cores most (BENCHMARKS.md, "Test suite duration")."""
    log = os.environ.get("FUSIONOCC_TEST_CPU_LOG")
    if not log:
        yield
        return
    import resource

    def cpu() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    start = cpu()
    yield
    with open(log, "a") as f:
        f.write(f"{cpu() - start:.2f}\t{item.nodeid}\n")


def pytest_configure(config: pytest.Config) -> None:
    """Tests stop the tools they start with SIGINT (Ctrl-C). A shell starting pytest in the
    background (`make test &`, some CI runners) leaves SIGINT ignored, which every child would
    inherit: the tools' Ctrl-C handling was then untestable (a training ignored the SIGINT test's
    signal). Give this process, and so its children, the default Ctrl-C behaviour."""
    import signal

    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

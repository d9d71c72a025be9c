"""Run the live graph once: the node, a recorder and a bag player as separate processes over DDS.

Used by the demo and the end-to-end test: start `fusionocc-node` the way the launch file would
(parameters YAML + remappings), start `fusionocc-record` on the node's outputs, play a bag with
`fusionocc-play`, wait until every key-frame's outputs are recorded (or a timeout), then stop the
recorder and the node with SIGINT. No rclpy in this process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionocc_ros.params import NODE_NAME, ros_args

BIN = Path(sys.executable).parent


@dataclass
class LiveRunResult:
    out_bag: Path
    node_log: str
    node_returncode: int
    recorder_log: str


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def run_live(bag: Path, out_bag: Path, checkpoint: Path, params_file: Path, expected_frames: int,
             overrides: dict[str, Any] | None = None, rate: float = 0.25, timeout_s: float = 300.0,
             log_dir: Path | None = None, cameras: tuple[str, ...] | None = None,
             sim_time: bool = False, settle_s: float | None = None) -> LiveRunResult:
    """Play `bag` into a live node and record its outputs to `out_bag` (see the module docstring)."""
    from fusionocc_core.classes import CAMERA_NAMES

    log_dir = Path(log_dir or out_bag.parent)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    params = {"model.checkpoint": str(checkpoint), "input_qos": "reliable", **(overrides or {})}
    if sim_time:  # the player publishes /clock; the node runs on bag time
        params["use_sim_time"] = True
    node_log = log_dir / "node.log"
    rec_log = log_dir / "record.log"
    ready = log_dir / ".record_ready"
    ready.unlink(missing_ok=True)
    outputs = [f"/{NODE_NAME}/output/{o}" for o in ("voxels", "markers", "cloud")]
    with open(node_log, "w") as nlog, open(rec_log, "w") as rlog:
        node = subprocess.Popen([_tool("fusionocc-node"), *ros_args(params_file, params, cameras or CAMERA_NAMES)],
                                stdout=nlog, stderr=subprocess.STDOUT, env=env)
        recorder = None
        try:
            recorder = subprocess.Popen(
                [_tool("fusionocc-record"), str(out_bag), "--topics", *outputs, "/diagnostics",
                 "--count", str(expected_frames), "--use-header-stamp", "--ready-file", str(ready),
                 "--discovery-timeout", "120"],
                stdout=rlog, stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + 150
            while not ready.exists():
                if recorder.poll() is not None or node.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the node or the recorder did not come up: see " + str(log_dir))
                time.sleep(0.2)
            subprocess.run([_tool("fusionocc-play"), str(bag), "--rate", str(rate), "--wait-for-subscribers", "60",
                            "--quiet", *(["--clock"] if sim_time else [])], check=True, env=env,
                           stdout=subprocess.DEVNULL, timeout=timeout_s)
            try:
                # the recorder exits once --count frames are in; else give the node settle_s more
                recorder.wait(timeout=settle_s if settle_s is not None else max(timeout_s / 2, 30))
            except subprocess.TimeoutExpired:
                _stop(recorder)
        finally:
            if recorder is not None:
                _stop(recorder)
            node_rc = _stop(node)
    return LiveRunResult(out_bag, node_log.read_text(), node_rc, rec_log.read_text())

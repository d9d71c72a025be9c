"""Run the live graph once: the node, a recorder and a bag player as separate processes over DDS.

Used by the demo and the end-to-end tests: start `fusionocc-node` the way the launch file does
(`launch_args.node_launch`: name, namespace, parameters YAML, overrides, remappings), start `fusionocc-record` on the node's outputs, play a bag with
`fusionocc-play`, wait until every key-frame's outputs are recorded (or a timeout), then stop the
recorder and the node with SIGINT. No rclpy in this process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fusionocc_ros import topics
from fusionocc_ros.launch_args import node_launch

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
             sim_time: bool = False, settle_s: float | None = None, launch_args: dict[str, str] | None = None
             ) -> LiveRunResult:
    """Play `bag` into a live node and record its outputs to `out_bag` (see the module docstring).

    `launch_args` are the launch file's arguments (e.g. namespace, node_name, a topic); `overrides`
    are further node parameters (`-p name:=value`)."""
    if cameras is not None and tuple(cameras) != topics.CAMERA_NAMES:
        raise ValueError("run_live starts the node with the launch file's inputs: the six nuScenes cameras")
    log_dir = Path(log_dir or out_bag.parent)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launch = node_launch({"params_file": str(params_file), "checkpoint": str(checkpoint),
                          "use_sim_time": "true" if sim_time else "false",  # the player publishes /clock
                          **(launch_args or {})})
    launch = replace(launch, overrides={**launch.overrides, "input_qos": "reliable", **(overrides or {})})
    node_log = log_dir / "node.log"
    rec_log = log_dir / "record.log"
    ready = log_dir / ".record_ready"
    ready.unlink(missing_ok=True)
    outputs = [launch.output_topics()[o][0] for o in ("voxels", "markers", "cloud")]
    with open(node_log, "w") as nlog, open(rec_log, "w") as rlog:
        node = subprocess.Popen([_tool("fusionocc-node"), *launch.ros_args()],
                                stdout=nlog, stderr=subprocess.STDOUT, env=env)
        recorder = None
        try:
            recorder = subprocess.Popen(
                [_tool("fusionocc-record"), str(out_bag), "--topics", *outputs, topics.DIAGNOSTICS,
                 "--count", str(expected_frames), "--use-header-stamp", "--ready-file", str(ready),
                 "--discovery-timeout", "120"],
                stdout=rlog, stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + 150
            while not ready.exists():
                if recorder.poll() is not None or node.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the node or the recorder did not come up: see " + str(log_dir))
                time.sleep(0.2)
            # only what the node reads (not e.g. the ground truth): the player waits until each has a
            # subscriber, then 1 s more for the subscribers' side of the matching (a reader that has not
            # matched the writer yet loses the first message)
            subprocess.run([_tool("fusionocc-play"), str(bag), "--rate", str(rate), "--wait-for-subscribers", "60",
                            "--start-delay", "1", "--topics", *launch.input_topics(), "--quiet",
                            *(["--clock"] if sim_time else [])], check=True, env=env, stdout=subprocess.DEVNULL,
                           timeout=timeout_s)
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

"""Every parameter mistake stops the node and `fusionocc-replay --params` with one line,
`cannot start: <reason>`, a non-zero exit status and no traceback. The node runs for real
(`fusionocc-node` with `--ros-args`, as `ros2 run` starts it); replay through its `main`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusionocc_ros import replay
from fusionocc_ros.launch_args import node_launch

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "config" / "occ_node.yaml").read_text())


def _params_file(tmp_path: Path, edit=None, text: str | None = None) -> Path:
    """A copy of the shipped params file with `edit(ros__parameters)` applied (or raw `text`)."""
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
        return path
    doc = yaml.safe_load(yaml.safe_dump(SHIPPED))
    if edit is not None:
        edit(doc["/**"]["ros__parameters"])
    path.write_text(yaml.safe_dump(doc))
    return path


def _drop(section: str, key: str):
    return lambda p: p[section].pop(key)


def _set(section: str, key: str, value):
    return lambda p: p[section].__setitem__(key, value)


# name -> (params edit or raw text, extra launch arguments, words the one line must contain)
CASES = {
    "missing parameter": (_drop("sync", "window_after_s"), {}, "'sync.window_after_s' is not set"),
    "int for a double": (_set("sync", "window_after_s", 1), {}, "'sync.window_after_s' must be a double, got an integer 1 (write 1.0)"),
    "unknown parameter": (_set("sync", "window_afte_s", 0.1), {}, "unknown parameter 'sync.window_afte_s'"),
    "unknown preset": (None, {"model_config": "tinyy"}, "config 'tinyy' is neither a preset"),
    "checkpoint missing": (None, {"checkpoint": "/nonexistent/model.pth"}, "/nonexistent/model.pth"),
    "no checkpoint given": (None, {"checkpoint": ""}, "no checkpoint"),
    "out-of-range value": (_set("outputs", "marker_alpha", 2.0), {}, "'outputs.marker_alpha' has an invalid value 2.0"),
    "compile on the CPU": (None, {"device": "cpu", "compile": "true"}, "'model.compile' is true but model.device is cpu"),
    "half precision on the CPU": (None, {"device": "cpu", "precision": "bf16"}, "'model.precision' 'bf16' needs a CUDA device"),
    "Triton kernel on the CPU": (_set("model", "sparse_conv", "triton"), {"device": "cpu"},
                                 "'model.sparse_conv' is 'triton' but model.device is cpu"),
    "unknown sparse conv": (_set("model", "sparse_conv", "spconv"), {}, "'model.sparse_conv' has an invalid value 'spconv'"),
    "a GPU this machine lacks": (None, {"device": "cuda:7"}, "cannot start: device 'cuda:7'"),
    "malformed YAML": ("/**:\n  ros__parameters:\n    model: [unclosed\n", {}, "params.yaml"),
    "no section for the node": ("other_node:\n  ros__parameters:\n    x: 1\n", {}, None),
}


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_node_refuses_bad_parameters_with_one_line(case: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    edit, extra, words = CASES[case]
    params = _params_file(tmp_path, text=edit) if isinstance(edit, str) else _params_file(tmp_path, edit)
    launch = node_launch({"params_file": str(params), "checkpoint": str(tiny_checkpoint), "namespace": "robot7",
                          "node_name": "occ_test", **extra})
    proc = subprocess.run([str(Path(sys.executable).parent / "fusionocc-node"), *launch.ros_args()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = _one_line(proc.stderr)
    assert line.startswith("occ_test: cannot start: "), line
    if words:
        assert words in line, line


def test_node_with_a_text_file_as_checkpoint_says_so(tmp_path: Path) -> None:
    fake = tmp_path / "model.pth"
    fake.write_text("not a checkpoint\n")
    launch = node_launch({"params_file": str(REPO / "config" / "occ_node.yaml"), "checkpoint": str(fake)})
    proc = subprocess.run([str(Path(sys.executable).parent / "fusionocc-node"), *launch.ros_args()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"fusionocc_occupancy: cannot start: cannot load checkpoint {fake}: " in _one_line(proc.stderr)


def test_node_without_a_params_file_says_so(tmp_path: Path) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "fusionocc-node")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "cannot start: parameter 'model.config' is not set" in _one_line(proc.stderr)
    missing = tmp_path / "nowhere.yaml"
    proc = subprocess.run([str(Path(sys.executable).parent / "fusionocc-node"), "--ros-args", "--params-file", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"cannot start: parameters file {missing} does not exist" in _one_line(proc.stderr)


@pytest.mark.parametrize("case", [c for c in CASES if c not in ("no checkpoint given", "compile on the CPU")])
def test_replay_refuses_bad_parameters_with_one_line(case: str, tmp_path: Path, tiny_checkpoint: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    edit, extra, words = CASES[case]
    params = _params_file(tmp_path, text=edit) if isinstance(edit, str) else _params_file(tmp_path, edit)
    argv = [str(tmp_path / "in_bag"), str(tmp_path / "out"), "--params", str(params),
            "--checkpoint", extra.get("checkpoint", str(tiny_checkpoint))]
    for arg, option in (("model_config", "--config"), ("device", "--device"), ("precision", "--precision")):
        if arg in extra:
            argv += [option, extra[arg]]
    assert replay.main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("fusionocc-replay: cannot start: "), line
    if words:
        assert words in line, line
    assert not (tmp_path / "out").exists()


def test_replay_without_the_params_file_says_so(tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert replay.main([str(tmp_path), str(tmp_path / "out"), "--params", str(tmp_path / "none.yaml"),
                        "--checkpoint", str(tiny_checkpoint)]) == 1
    assert "cannot start: parameters file" in _one_line(capsys.readouterr().err)


def test_params_file_sections_match_like_rcl(tmp_path: Path) -> None:
    from fusionocc_ros.params import load_params_file

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"a": 1, "b": 1}},
        "/robot1/*": {"ros__parameters": {"b": 2}},
        "fusionocc_occupancy": {"ros__parameters": {"c": 3}},  # root namespace only (no leading '/': implied)
    }))
    assert load_params_file(path, "occ", "/robot1") == {"a": 1, "b": 2}
    assert load_params_file(path, "fusionocc_occupancy", "") == {"a": 1, "b": 1, "c": 3}
    assert load_params_file(path, "fusionocc_occupancy", "robot2") == {"a": 1, "b": 1}

"""Every fusionocc-* tool against a catalogue of hostile files and user mistakes.

Each case plants its inputs in a fresh sandbox, runs the tool and checks: the exit code (1 error, 2 usage), exactly one line on stderr that names the problem, no
'Traceback', no file created outside the case's output folder, no pre-existing file changed (the
sandbox and the shared generated world), and no planted code run (its canary file never appears).
The world (one synthetic scene, its info file, its bag, the shipped tiny checkpoint) is built once.
The first case of each tool runs its console script as a subprocess; the offline tools' other cases
call the same entry point (`main(argv)`) in this process, which spares each a torch import (~1 s
of a case's ~1.1 s); the ROS tools (play, record) always run as subprocesses.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from fusionocc_core.classes import GRID_SHAPE
from fusionocc_core.data.prepare import create_infos, write_infos

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHECKPOINT = REPO / "demo" / "tiny_synth.pth"
VERSION = "v1.0-mini"
CANARY = "PWNED"
IS_ROOT = os.geteuid() == 0


# ----------------------------------------------------------------------------------- the shared world


@dataclass
class World:
    base: Path
    root: Path  # synthetic nuScenes root (1 scene x 2 key-frames, Occ3D gts)
    infos: Path  # its fusionocc-prepare info file
    scene: str
    bag: Path  # its fusionocc-convert bag (MCAP + zstd), /occupancy/gt holds SemanticVoxelGrid
    mcap: Path  # the bag's storage file
    preds: Path  # a valid prediction folder for fusionocc-score

    def info_data(self) -> dict:
        from fusionocc_core.data.io import read_infos

        return read_infos(self.infos)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from fusionocc_synth import generate
    from rosbag_tools import convert

    base = tmp_path_factory.mktemp("hostile_world")
    root = Path(generate(base / "root", scenes=1, keyframes=2, seed=3, version=VERSION, render_scale=0.1))
    data = create_infos(root, VERSION, progress=False)
    write_infos(data, base / "infos.pkl")
    assert convert.main(["--data-root", str(root), "--version", VERSION, "--out", str(base / "bags")]) == 0
    scene = data["metadata"]["scenes"][0]
    bag = base / "bags" / scene
    preds = base / "preds"
    preds.mkdir()
    for info in data["infos"]:
        np.savez_compressed(preds / f"{info['token']}.npz", semantics=np.full(GRID_SHAPE, 17, np.uint8))
    return World(base, root, base / "infos.pkl", scene, bag, next(bag.glob("*.mcap")), preds)


# ----------------------------------------------------------------------------------- hostile files


class Planted:
    """Pickles to a call of os.system that creates the canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def evil_infos(w: World, sb: Path) -> Path:
    """The real info file with a planted os.system call beside the infos (the issue's exploit)."""
    data = w.info_data()
    data["metadata"]["evil"] = Planted(sb / CANARY)
    path = sb / "in" / "evil.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def infos_with(w: World, sb: Path, name: str, **changes) -> Path:
    """The real info file with the first info's fields replaced (written by fusionocc-prepare's writer)."""
    data = w.info_data()
    for key, value in changes.items():
        if callable(value):
            for info in data["infos"]:
                info[key] = value(info[key])
        else:
            data["infos"][0][key] = value
    return write_infos(data, sb / "in" / name)


def file_with(sb: Path, name: str, data: bytes) -> Path:
    path = sb / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bag_copy(w: World, sb: Path, damage: Callable[[bytes], bytes]) -> Path:
    """A copy of the world's bag whose storage file is damaged by `damage`."""
    dst = sb / "in" / w.bag.name
    shutil.copytree(w.bag, dst)
    mcap = dst / w.mcap.name
    mcap.write_bytes(damage(mcap.read_bytes()))
    return dst


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def scramble_middle(data: bytes) -> bytes:
    """Random bytes over 10-85% of the file (header and summary intact): damaged chunks."""
    rng = np.random.default_rng(0)
    a, b = int(len(data) * 0.1), int(len(data) * 0.85)
    return data[:a] + rng.integers(0, 256, b - a, dtype=np.uint8).tobytes() + data[b:]


def root_with_scene_name(w: World, sb: Path, name: str) -> Path:
    """A hard-linked copy of the world's root whose scene.json names the scene `name`."""
    import json

    dst = sb / "in" / "root"
    shutil.copytree(w.root, dst, copy_function=os.link)
    table = dst / VERSION / "scene.json"
    scenes = json.loads(table.read_text())
    scenes[0]["name"] = name
    table.unlink()  # break the hard link: the world's table stays intact
    table.write_text(json.dumps(scenes))
    return dst


def evil_checkpoint(sb: Path) -> Path:
    path = sb / "in" / "evil.pth"
    torch.save({"state_dict": {}, "x": Planted(sb / CANARY)}, path)
    return path


def evil_npz(w: World, sb: Path) -> Path:
    """A prediction folder whose file holds a pickled object array (np.load runs it if allowed)."""
    d = sb / "in" / "preds"
    d.mkdir(parents=True)
    arr = np.empty(1, dtype=object)
    arr[0] = Planted(sb / CANARY)
    np.savez(d / sorted(w.preds.iterdir())[0].name, semantics=arr)
    return d


def gt_root_with(w: World, sb: Path, damage: Callable[[bytes], bytes]) -> Path:
    """A copy of the world's gts whose first labels.npz is damaged; predictions match its tokens."""
    dst = sb / "in" / "gts"
    shutil.copytree(w.root / "gts", dst)
    first = sorted(dst.glob("*/*/labels.npz"))[0]
    first.write_bytes(damage(first.read_bytes()))
    return dst


def preds_with(w: World, sb: Path, array: np.ndarray) -> Path:
    d = sb / "in" / "preds"
    shutil.copytree(w.preds, d)
    first = sorted(d.iterdir())[0]
    np.savez_compressed(first, semantics=array)
    return d


# ----------------------------------------------------------------------------------- the catalogue


@dataclass
class Case:
    id: str
    tool: str
    argv: Callable[[World, Path], list[str]]  # (world, sandbox) -> arguments; may plant files
    needle: str | Callable[[World, Path], str]  # must appear in the one stderr line
    code: int = 1
    out: str = "out"  # the output folder, relative to the sandbox: the only place files may appear
    marks: tuple = ()


def _s(p: Path) -> str:
    return str(p)


def eval_args(w: World, sb: Path, infos: Path | None = None, checkpoint: Path | None = None, *extra: str) -> list[str]:
    return ["--config", "tiny", "--checkpoint", _s(checkpoint or CHECKPOINT), "--data-root", _s(w.root),
            "--infos", _s(infos or w.infos), "--out", _s(sb / "out"), "--device", "cpu", "--no-progress", *extra]


def train_args(w: World, sb: Path, infos: Path | None = None, work: Path | None = None, *extra: str) -> list[str]:
    return ["--config", "tiny", "--data-root", _s(w.root), "--infos", _s(infos or w.infos),
            "--work-dir", _s(work or sb / "out"), "--device", "cpu", "--max-iters", "1", "--no-progress", *extra]


def replay_args(w: World, sb: Path, bag: Path | None = None, checkpoint: Path | None = None) -> list[str]:
    return [_s(bag or w.bag), _s(sb / "out"), "--checkpoint", _s(checkpoint or CHECKPOINT), "--config", "tiny"]


def extract_args(w: World, sb: Path, infos: Path | None = None, bag: Path | None = None, *extra: str) -> list[str]:
    return [_s(bag or w.bag), "--infos", _s(infos or w.infos), "--out", _s(sb / "out"), "--topic", "/occupancy/gt",
            *extra]


def make_file(sb: Path, rel: str, text: str = "precious") -> Path:
    path = sb / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def nonempty_dir(sb: Path) -> Path:
    make_file(sb, "out/latest.pth", "an older run")
    return sb / "out"


ROS = (pytest.mark.ros,)

CASES = [
    # --- code execution through info pickles (the exploits) and other pickle-bearing files
    Case("eval-evil-infos", "fusionocc-eval", lambda w, sb: eval_args(w, sb, evil_infos(w, sb)), "refused global posix.system"),
    Case("score-evil-infos", "fusionocc-score", lambda w, sb: ["--pred-dir", _s(w.preds), "--gt-dir", _s(w.root / "gts"),
         "--rayiou", "--infos", _s(evil_infos(w, sb)), "--quiet"], "refused global posix.system"),
    Case("extract-evil-infos", "fusionocc-bag-extract", lambda w, sb: extract_args(w, sb, evil_infos(w, sb)),
         "refused global posix.system"),
    Case("train-evil-infos", "fusionocc-train", lambda w, sb: train_args(w, sb, evil_infos(w, sb)),
         "refused global posix.system"),
    Case("eval-evil-checkpoint", "fusionocc-eval", lambda w, sb: eval_args(w, sb, None, evil_checkpoint(sb)),
         "holds a pickled posix.system"),
    Case("replay-evil-checkpoint", "fusionocc-replay", lambda w, sb: replay_args(w, sb, None, evil_checkpoint(sb)),
         "holds a pickled posix.system"),
    Case("score-pickled-npz", "fusionocc-score", lambda w, sb: ["--pred-dir", _s(evil_npz(w, sb)), "--gt-dir",
         _s(w.root / "gts"), "--allow-missing", "--quiet"], "Object arrays cannot be loaded"),
    # --- names from data that would write outside the output folder
    Case("convert-scene-dotdot", "fusionocc-convert", lambda w, sb: ["--data-root", _s(root_with_scene_name(w, sb, "../../X")),
         "--version", VERSION, "--out", _s(sb / "w" / "out")], "scene name '../../X'", out="w/out"),
    Case("convert-scene-absolute", "fusionocc-convert", lambda w, sb: ["--data-root",
         _s(root_with_scene_name(w, sb, str(sb / "victim"))), "--version", VERSION, "--out", _s(sb / "out")],
         "holds a path separator"),
    Case("convert-scene-is-dotdot", "fusionocc-convert", lambda w, sb: ["--data-root", _s(root_with_scene_name(w, sb, "..")),
         "--version", VERSION, "--out", _s(sb / "w" / "out")], "scene name '..'", out="w/out"),
    Case("convert-scene-newline", "fusionocc-convert", lambda w, sb: ["--data-root",
         _s(root_with_scene_name(w, sb, "a\nb")), "--version", VERSION, "--out", _s(sb / "out")], "control character"),
    Case("eval-token-absolute", "fusionocc-eval", lambda w, sb: eval_args(w, sb, infos_with(w, sb, "abs.pkl",
         token=str(sb / "victim"))), lambda w, sb: f"sample token '{sb / 'victim'}' (in {sb / 'in' / 'abs.pkl'}) cannot be used"),
    Case("eval-token-dotdot", "fusionocc-eval", lambda w, sb: eval_args(w, sb, infos_with(w, sb, "rel.pkl",
         token="../victim")), "sample token '../victim'"),
    Case("extract-token-absolute", "fusionocc-bag-extract", lambda w, sb: extract_args(w, sb, infos_with(w, sb, "abs.pkl",
         token=str(sb / "victim"))), "cannot be used as a file name"),
    # --- checkpoints that are not checkpoints
    Case("eval-checkpoint-text", "fusionocc-eval", lambda w, sb: eval_args(w, sb, None, file_with(sb, "c.pth",
         b"model weights are in the other folder\n")), "not a readable PyTorch checkpoint"),
    Case("eval-checkpoint-random", "fusionocc-eval", lambda w, sb: eval_args(w, sb, None, file_with(sb, "c.pth",
         np.random.default_rng(1).bytes(5000))), "not a readable PyTorch checkpoint"),
    Case("eval-checkpoint-truncated", "fusionocc-eval", lambda w, sb: eval_args(w, sb, None, file_with(sb, "c.pth",
         truncate(CHECKPOINT.read_bytes()))), "not a readable PyTorch checkpoint"),
    Case("eval-checkpoint-empty", "fusionocc-eval", lambda w, sb: eval_args(w, sb, None, file_with(sb, "c.pth", b"")),
         "not a readable PyTorch checkpoint"),
    Case("replay-checkpoint-text", "fusionocc-replay", lambda w, sb: replay_args(w, sb, None, file_with(sb, "c.pth",
         b"hello\n")), "not a readable PyTorch checkpoint"),
    # --- info files that are not info files
    Case("eval-infos-text", "fusionocc-eval", lambda w, sb: eval_args(w, sb, file_with(sb, "i.pkl", b"token,path\n")),
         "not a readable info pickle"),
    Case("eval-infos-truncated", "fusionocc-eval", lambda w, sb: eval_args(w, sb, file_with(sb, "i.pkl",
         truncate(w.infos.read_bytes()))), "not a readable info pickle"),
    Case("score-infos-random", "fusionocc-score", lambda w, sb: ["--pred-dir", _s(w.preds), "--gt-dir", _s(w.root / "gts"),
         "--rayiou", "--infos", _s(file_with(sb, "i.pkl", np.random.default_rng(2).bytes(300))), "--quiet"],
         "not a readable info pickle"),
    Case("eval-infos-empty-list", "fusionocc-eval", lambda w, sb: eval_args(w, sb, file_with(sb, "i.pkl",
         pickle.dumps({"infos": []}))), "holds no samples"),
    Case("extract-infos-no-timestamp", "fusionocc-bag-extract", lambda w, sb: extract_args(w, sb, file_with(sb, "i.pkl",
         pickle.dumps({"infos": [{"token": "t"}]}))), "no integer 'lidar_timestamp'"),
    Case("extract-infos-match-no-grid", "fusionocc-bag-extract", lambda w, sb: extract_args(w, sb, infos_with(w, sb,
         "shifted.pkl", lidar_timestamp=lambda t: t + 7)), "matches a key-frame LiDAR stamp"),
    # --- damaged bags
    Case("bag-info-truncated", "fusionocc-bag-info", lambda w, sb: [_s(bag_copy(w, sb, truncate))], "cannot read bag"),
    Case("bag-info-scrambled", "fusionocc-bag-info", lambda w, sb: [_s(bag_copy(w, sb, scramble_middle))], "cannot read bag"),
    Case("bag-info-metadata-garbage", "fusionocc-bag-info", lambda w, sb: [_s(file_with(sb, "bag/metadata.yaml",
         b"{{{ not yaml").parent)], "cannot read bag"),
    Case("extract-bag-truncated", "fusionocc-bag-extract", lambda w, sb: extract_args(w, sb, None,
         bag_copy(w, sb, truncate)), "cannot read bag"),
    Case("extract-bag-scrambled", "fusionocc-bag-extract", lambda w, sb: extract_args(w, sb, None,
         bag_copy(w, sb, scramble_middle)), "cannot read bag"),
    Case("replay-bag-truncated", "fusionocc-replay", lambda w, sb: replay_args(w, sb, bag_copy(w, sb, truncate)),
         "cannot read bag"),
    Case("replay-bag-scrambled", "fusionocc-replay", lambda w, sb: replay_args(w, sb, bag_copy(w, sb, scramble_middle)),
         "cannot read bag"),
    Case("replay-bag-missing", "fusionocc-replay", lambda w, sb: replay_args(w, sb, sb / "nowhere"), "input bag not found"),
    Case("play-bag-truncated", "fusionocc-play", lambda w, sb: [_s(bag_copy(w, sb, truncate)), "--quiet"], "cannot read bag"),
    Case("play-bag-scrambled", "fusionocc-play", lambda w, sb: [_s(bag_copy(w, sb, scramble_middle)), "--quiet",
         "--rate", "100"], "cannot read bag", marks=ROS),
    # --- damaged Occ3D files and predictions
    Case("score-gt-truncated", "fusionocc-score", lambda w, sb: ["--pred-dir", _s(w.preds), "--gt-dir",
         _s(gt_root_with(w, sb, truncate)), "--quiet"], "corrupt npz"),
    Case("score-pred-wrong-dtype", "fusionocc-score", lambda w, sb: ["--pred-dir", _s(preds_with(w, sb, np.zeros(GRID_SHAPE,
         np.float32))), "--gt-dir", _s(w.root / "gts"), "--quiet"], "has dtype float32, expected uint8"),
    Case("score-pred-wrong-shape", "fusionocc-score", lambda w, sb: ["--pred-dir", _s(preds_with(w, sb, np.zeros((200, 200),
         np.uint8))), "--gt-dir", _s(w.root / "gts"), "--quiet"], "has shape (200, 200), expected (200, 200, 16)"),
    Case("convert-scene-json-truncated", "fusionocc-convert", lambda w, sb: ["--data-root", _s(_truncated_table(w, sb)),
         "--version", VERSION, "--out", _s(sb / "out")], "cannot load nuScenes v1.0-mini"),
    Case("prepare-scene-json-truncated", "fusionocc-prepare", lambda w, sb: ["--data-root", _s(_truncated_table(w, sb)),
         "--version", VERSION, "--out", _s(sb / "out" / "i.pkl"), "--quiet"], "cannot load this nuScenes root"),
    # --- user mistakes: outputs that exist, work dirs, options
    Case("extract-out-exists", "fusionocc-bag-extract", lambda w, sb: (make_file(sb, "out/keep.npz"), extract_args(w, sb))[1],
         "already exists (remove it, choose another path, or pass --overwrite"),
    Case("replay-out-exists", "fusionocc-replay", lambda w, sb: (make_file(sb, "out/keep"), replay_args(w, sb))[1],
         "pass --overwrite"),
    Case("record-out-exists", "fusionocc-record", lambda w, sb: (make_file(sb, "out/keep"), [_s(sb / "out"), "--topics",
         "/x"])[1], "pass --overwrite"),
    Case("convert-out-is-file", "fusionocc-convert", lambda w, sb: ["--data-root", _s(w.root), "--version", VERSION,
         "--out", _s(make_file(sb, "out"))], "exists and is not a directory"),
    Case("train-work-dir-is-file", "fusionocc-train", lambda w, sb: train_args(w, sb, None, make_file(sb, "out")),
         "exists and is not a directory"),
    Case("train-work-dir-not-empty", "fusionocc-train", lambda w, sb: train_args(w, sb, None, nonempty_dir(sb)),
         "is not empty (latest.pth): pass --resume"),
    Case("train-work-dir-read-only", "fusionocc-train", lambda w, sb: train_args(w, sb, None, _read_only_dir(sb)),
         "is not writable", marks=(pytest.mark.skipif(IS_ROOT, reason="root ignores directory permissions"),)),
    Case("train-config-garbage", "fusionocc-train", lambda w, sb: ["--config", _s(file_with(sb, "c.yaml", b"model: [1, 2\n")),
         *train_args(w, sb)[2:]], "c.yaml"),
    Case("eval-config-missing", "fusionocc-eval", lambda w, sb: ["--config", _s(sb / "nope.yaml"), *eval_args(w, sb)[2:]],
         "nope.yaml"),
    Case("synth-out-is-file", "fusionocc-synth", lambda w, sb: [_s(make_file(sb, "out")), "--scenes", "1"],
         "output exists and is not an empty directory"),
    Case("train-max-iters-zero", "fusionocc-train", lambda w, sb: train_args(w, sb) + ["--max-iters", "0"],
         "--max-iters must be >= 1", code=2),
    Case("convert-jobs-zero", "fusionocc-convert", lambda w, sb: ["--data-root", _s(w.root), "--version", VERSION, "--out",
         _s(sb / "out"), "--jobs", "0"], "--jobs must be >= 1", code=2),
    Case("score-unknown-option", "fusionocc-score", lambda w, sb: ["--pred-dir", "p", "--gt-dir", "g", "--colour"],
         "unrecognized arguments: --colour", code=2),
    Case("play-rate-zero", "fusionocc-play", lambda w, sb: [_s(w.bag), "--rate", "0"], "--rate must be > 0", code=2),
    Case("record-negative-count", "fusionocc-record", lambda w, sb: [_s(sb / "out"), "--topics", "/x", "--count", "-1"],
         "must be >= 0", code=2),
    Case("eval-missing-required", "fusionocc-eval", lambda w, sb: ["--config", "tiny"], "the following arguments are required",
         code=2),
]


def _truncated_table(w: World, sb: Path) -> Path:
    dst = sb / "in" / "root"
    shutil.copytree(w.root, dst, copy_function=os.link)
    table = dst / VERSION / "scene.json"
    text = table.read_bytes()
    table.unlink()
    table.write_bytes(text[: len(text) // 2])
    return dst


def _read_only_dir(sb: Path) -> Path:
    d = sb / "out"
    d.mkdir()
    d.chmod(0o555)
    return d


# ----------------------------------------------------------------------------------- the checks


def snapshot(root: Path, hash_files: bool = True) -> dict[str, tuple]:
    """relative path -> (kind, size, content hash or mtime) of everything under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(kind) and hash_files:
            ident = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            ident = st.st_mtime_ns if stat.S_ISREG(kind) else None
        out[str(p.relative_to(root))] = (kind, st.st_size if stat.S_ISREG(kind) else None, ident)
    return out


def run_tool(tool: str, argv: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FUSIONOCC_DEBUG"}
    return subprocess.run([str(BIN / tool), *argv], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def run_tool_in_process(tool: str, argv: list[str]) -> subprocess.CompletedProcess:
    """The console script's entry point called in this process, with what it prints captured and
    what it may set for the whole process (signal handlers, torch's thread count and determinism,
    FUSIONOCC_DEBUG) given back afterwards; the result reads like run_tool's."""
    from importlib.metadata import entry_points

    (entry,) = entry_points(group="console_scripts", name=tool)
    main = entry.load()
    out, err = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    torch_state = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                   torch.get_num_threads())
    debug = os.environ.pop("FUSIONOCC_DEBUG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.use_deterministic_algorithms(torch_state[0], warn_only=torch_state[1])
        torch.set_num_threads(torch_state[2])
        if debug is not None:
            os.environ["FUSIONOCC_DEBUG"] = debug
    return subprocess.CompletedProcess([tool, *argv], code, out.getvalue(), err.getvalue())


SUBPROCESS_ONLY = ("fusionocc-play", "fusionocc-record")  # rclpy in the process: never in a test worker


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_hostile_input(case: Case, world: World, tmp_path: Path) -> None:
    sb = tmp_path / "sandbox"
    (sb / "in").mkdir(parents=True)
    make_file(sb, "victim", "precious")  # pre-existing files a crafted name aims at
    make_file(sb, "victim.npz", "precious")
    argv = case.argv(world, sb)
    before, world_before = snapshot(sb), snapshot(world.base, hash_files=False)
    first_of_tool = next(c for c in CASES if c.tool == case.tool) is case
    try:
        if first_of_tool or case.tool in SUBPROCESS_ONLY:
            proc = run_tool(case.tool, argv)
        else:
            proc = run_tool_in_process(case.tool, argv)
    finally:
        for p in sb.rglob("*"):  # undo a read-only plant so that pytest can clean up
            if p.is_dir():
                p.chmod(0o755)
    err_lines = proc.stderr.strip().splitlines()
    needle = case.needle(world, sb) if callable(case.needle) else case.needle
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == case.code, (proc.returncode, proc.stderr[-2000:])
    assert len(err_lines) == 1, proc.stderr[-2000:]
    assert err_lines[0].startswith(f"{case.tool}: error: "), err_lines[0]
    assert needle in err_lines[0], err_lines[0]
    assert not (sb / CANARY).exists() and not (tmp_path / CANARY).exists(), "planted code ran"
    after = snapshot(sb)
    changed = [p for p, v in before.items() if after.get(p) != v]
    assert not changed, f"pre-existing files changed or removed: {changed}"
    created = [p for p in after if p not in before and not (p == case.out or p.startswith(case.out + "/"))]
    assert not created, f"files created outside the output folder {case.out}: {created}"
    assert snapshot(world.base, hash_files=False) == world_before, "the shared world was modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sandbox"], "something was written beside the sandbox"


def test_planted_pickle_really_runs_with_plain_pickle(world: World, tmp_path: Path) -> None:
    """The catalogue's exploit is real: the standard unpickler runs it (so its absence above means something)."""
    sb = tmp_path / "sb"
    (sb / "in").mkdir(parents=True)
    pickle.loads(evil_infos(world, sb).read_bytes())
    assert (sb / CANARY).exists()


def test_debug_flag_and_env_show_the_traceback(world: World, tmp_path: Path) -> None:
    bad = file_with(tmp_path, "i.pkl", b"garbage")
    args = ["--pred-dir", _s(world.preds), "--gt-dir", _s(world.root / "gts"), "--rayiou", "--infos", _s(bad), "--quiet"]
    plain = run_tool("fusionocc-score", args)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    debug = run_tool("fusionocc-score", args + ["--debug"])
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
    env = subprocess.run([str(BIN / "fusionocc-score"), *args], capture_output=True, text=True,
                         env={**os.environ, "FUSIONOCC_DEBUG": "1"}, timeout=120)
    assert env.returncode == 1 and "Traceback (most recent call last)" in env.stderr


# ----------------------------------------------------------------------------------- outputs: names, stale partials


def test_convert_removes_stale_partials_of_dead_processes_and_overwrites_on_request(world: World, tmp_path: Path) -> None:
    out = tmp_path / "bags"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / f".{world.scene}.partial-{dead.pid}-123"
    (stale / world.scene).mkdir(parents=True)
    live = out / f".{world.scene}.partial-{os.getpid()}-456"  # a live process's (this one's) folder is kept
    live.mkdir()
    other = out / f".other-scene.partial-{dead.pid}"  # a partial folder of a scene this run does not write
    other.mkdir()
    base = ["--data-root", _s(world.root), "--version", VERSION, "--out", _s(out)]
    first = run_tool("fusionocc-convert", base)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not stale.exists() and live.is_dir() and other.is_dir()
    assert sorted(p.name for p in (out / world.scene).iterdir()) == ["metadata.yaml", f"{world.scene}.mcap"]
    again = run_tool("fusionocc-convert", base)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 1 and len(lines) == 1 and "pass --overwrite" in lines[0], again.stderr
    marker = out / world.scene / "old-run-marker"
    marker.write_text("x")
    replaced = run_tool("fusionocc-convert", base + ["--overwrite"])
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(p.name for p in (out / world.scene).iterdir()) == ["metadata.yaml", f"{world.scene}.mcap"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted([live.name, other.name])


def test_extract_writes_normal_names_and_replay_bag_keeps_its_name(world: World, tmp_path: Path) -> None:
    out = tmp_path / "preds"
    proc = run_tool("fusionocc-bag-extract", [_s(world.bag), "--infos", _s(world.infos), "--out", _s(out),
                                              "--topic", "/occupancy/gt"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    tokens = sorted(i["token"] for i in world.info_data()["infos"])
    assert sorted(p.name for p in out.iterdir()) == [f"{t}.npz" for t in tokens]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds"]  # no partial folder left beside it


@pytest.mark.slow
def test_replay_output_bag_has_its_normal_file_names(world: World, tmp_path: Path) -> None:
    out = tmp_path / "occ_bag"
    proc = run_tool("fusionocc-replay", [_s(world.bag), _s(out), "--checkpoint", _s(CHECKPOINT), "--config", "tiny"],
                    timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "occ_bag.mcap"]
    assert "occ_bag.mcap" in (out / "metadata.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occ_bag"]


# ----------------------------------------------------------------------------------- fusionocc-train: interrupt


@pytest.mark.slow
def test_train_sigint_exits_130_with_one_line(world: World, tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "FUSIONOCC_DEBUG"}
    proc = subprocess.Popen([str(BIN / "fusionocc-train"), *train_args(world, tmp_path, None, work)[:-3],
                             "--max-iters", "1000", "--log-interval", "1", "--no-progress", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        # the first checkpoint interval has not passed; wait until the model is built and iterating
        while time.monotonic() < deadline and proc.poll() is None and not (work / "log.csv").exists():
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["fusionocc-train: interrupted"], err[-2000:]

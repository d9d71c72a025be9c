"""The shared tool plumbing: names from data as file names, atomic output folders with stale-partial
clean-up, and the exit-code / one-line-error wrapper every fusionocc-* tool uses."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionocc_core import cli
from fusionocc_core.safe_paths import UnsafeNameError, check_name, child_path, name_problem
from fusionocc_core.tools.atomic import OutputExistsError, atomic_output_dir, atomic_write, partial_dir, remove_stale_partials


# ----------------------------------------------------------------------------------- names


@settings(max_examples=400, deadline=None)
@given(name=st.one_of(st.text(max_size=40), st.sampled_from(["..", ".", "", "../x", "a/b", "/abs", "a\\b", "x\n",
                                                             "a/../../b", "scene-0061", "3e8750f331d7499e9b5123e9eb70f2e2"])))
def test_accepted_names_stay_directly_in_the_output_folder(name: str, tmp_path_factory) -> None:
    root = tmp_path_factory.getbasetemp() / "names_root"
    root.mkdir(exist_ok=True)
    if name_problem(name) is None:
        path = child_path(root, name, "sample token", ".npz")
        assert path.parent == root and path.resolve().parent == root.resolve() and "\n" not in name
    else:
        with pytest.raises(UnsafeNameError) as err:
            child_path(root, name, "sample token", ".npz", source="infos.pkl")
        assert "\n" not in str(err.value) and "(in infos.pkl)" in str(err.value)
        # the refused names include everything that could climb out or hide a separator
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        assert name_problem(name) is not None


def test_real_nuscenes_names_pass_and_a_symlink_out_is_refused(tmp_path: Path) -> None:
    assert check_name("scene-0061", "scene name") == "scene-0061"
    assert check_name("ca9a282c9e77460f8360f564131a8af5", "sample token")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link.npz").symlink_to(tmp_path / "victim.npz")
    with pytest.raises(UnsafeNameError, match="would resolve outside"):
        child_path(tmp_path / "out", "link", "sample token", ".npz")


# ----------------------------------------------------------------------------------- output folders


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_atomic_output_dir_renames_on_success_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    final = tmp_path / "bag"
    with atomic_output_dir(final) as tmp:
        assert tmp.name == "bag" and tmp.parent == partial_dir(final)
        tmp.mkdir()
        (tmp / "bag.mcap").write_text("data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    assert (final / "bag.mcap").read_text() == "data"
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        with atomic_output_dir(final):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(final, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "bag.mcap").write_text("half")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"] and (final / "bag.mcap").read_text() == "data"
    with atomic_output_dir(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "bag.mcap").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"] and (final / "bag.mcap").read_text() == "new"


def test_atomic_write_replaces_whole_files_readable_like_ordinary_ones(tmp_path: Path) -> None:
    """The one atomic-write helper (checkpoints, info pickles, JSON/npz outputs): a failing writer
    leaves the old file and no temporary; a new file is 0644, not mkstemp's private 0600."""
    out = tmp_path / "sub" / "x.bin"
    atomic_write(out, lambda f: f.write(b"old"))
    assert out.read_bytes() == b"old" and (out.stat().st_mode & 0o777) == 0o644

    def fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(out, fail)
    assert out.read_bytes() == b"old" and sorted(p.name for p in out.parent.iterdir()) == ["x.bin"]


def test_stale_partials_of_dead_processes_only_are_removed(tmp_path: Path) -> None:
    pid = dead_pid()
    stale = [tmp_path / f".bag.partial-{pid}", tmp_path / f".bag.partial-{pid}-1700000000"]
    keep = [tmp_path / f".bag.partial-{os.getpid()}-1", tmp_path / f".bag.partial-1",  # live (this, init)
            tmp_path / f".other.partial-{pid}", tmp_path / ".bag.partial-x", tmp_path / "bag.partial-5"]
    for d in stale + keep:
        (d / "bag").mkdir(parents=True)
    assert sorted(remove_stale_partials(tmp_path / "bag")) == sorted(stale)
    assert all(d.is_dir() for d in keep) and not any(d.exists() for d in stale)


# ----------------------------------------------------------------------------------- the wrapper


def test_exit_codes_and_one_line_messages(capsys) -> None:
    def body(exc: BaseException | None, code: int = 0):
        def run():
            if exc is not None:
                raise exc
            return code
        return run

    cases = [(body(None, 0), 0, ""), (body(cli.ToolError("bad\ninput  file")), 1, "tool: error: bad input file"),
             (body(cli.UsageError("--x must be >= 1")), 2, "tool: error: --x must be >= 1"),
             (body(KeyboardInterrupt()), 130, "tool: interrupted"),
             (body(FileNotFoundError(2, "No such file or directory", "/x/y")), 1,
              "tool: error: No such file or directory: /x/y"),
             (body(KeyError("cams")), 1, "tool: error: KeyError: 'cams' (unexpected; run with --debug")]
    for run, code, line in cases:
        assert cli.run_tool("tool", run) == code
        err = capsys.readouterr().err
        assert err.count("\n") == (1 if line else 0) and err.startswith(line) and "Traceback" not in err
    assert cli.run_tool("tool", body(cli.ToolError("x")), debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1] == "tool: error: x"


def test_debug_request_and_usage_errors(capsys, monkeypatch) -> None:
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.debug_requested(["--debug"]) and not cli.debug_requested(["--", "--debug"])
    assert not cli.debug_requested(["a"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.debug_requested([])
    parser = cli.ToolParser(prog="fusionocc-x")
    parser.add_argument("--n", type=int, required=True)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--n", "many"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fusionocc-x: error: argument --n: invalid int value")
    assert "--debug" in parser.format_help()

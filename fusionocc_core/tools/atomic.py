"""Atomic file output for the offline tools: write to a temporary sibling, then os.replace.

A crash, a full disk or a kill mid-write leaves the previous file (or nothing), never half a file.
Output folders (bags, prediction folders) are built as `<parent>/.<name>.partial-<pid>[-<tag>]/<name>`
and renamed to `<parent>/<name>` when complete, so the finished output keeps its normal inner file
names (rosbags names the storage file after its folder); a later run removes the partial folders
that dead processes left behind.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from fusionocc_core.cli import ToolError

_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)(?:-[0-9]+)?$")


class OutputExistsError(ToolError, FileExistsError):
    """The output path exists and the user did not ask to replace it."""


def exists_message(path: Path, flag: str = "--overwrite") -> str:
    """The one-line 'already exists' error, saying how to proceed."""
    return (f"output path {path} already exists (remove it, choose another path, or pass {flag} to replace it "
            "once the new output is complete)")


def partial_dir(final: str | Path, tag: str | None = None) -> Path:
    """The hidden sibling folder `final` is built in: <parent>/.<name>.partial-<pid>[-<tag>]."""
    final = Path(final)
    return final.parent / f".{final.name}.partial-{os.getpid()}{'-' + tag if tag else ''}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def remove_stale_partials(final: str | Path) -> list[Path]:
    """Remove the `.<name>.partial-<pid>...` folders of `final` whose process is gone; returns them."""
    final = Path(final)
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m and m["name"] == final.name and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def install_output(built: Path, final: Path, overwrite: bool = False) -> None:
    """Rename the finished `built` to `final`; with `overwrite` an existing `final` is moved aside into
    built's (temporary) parent first, so it is removed with it and never half-replaced."""
    if os.path.lexists(final):
        if not overwrite:
            raise OutputExistsError(exists_message(final))
        os.rename(final, built.parent / f".replaced-{final.name}")
    os.rename(built, final)


@contextmanager
def atomic_output_dir(final: str | Path, overwrite: bool = False, tag: str | None = None) -> Iterator[Path]:
    """Yield the path (not yet existing) to build the output folder at; on a normal exit it becomes
    `final`. On any error nothing is left but what existed before. Stale partial folders of `final`
    from dead processes are removed first."""
    final = Path(final)
    remove_stale_partials(final)
    if os.path.lexists(final) and not overwrite:
        raise OutputExistsError(exists_message(final))
    scratch = partial_dir(final, tag)
    scratch.mkdir(parents=True)
    try:
        yield scratch / final.name
        install_output(scratch / final.name, final, overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

import numpy as np


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call `write(f)` on a temporary file next to `path`, fsync it, and rename it over `path`
    (mode 0644 like an ordinary new file, not mkstemp's 0600). The one atomic-write helper."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON (NaN/inf become null) atomically."""
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def atomic_save_npz(path: str | Path, compressed: bool = True, **arrays: np.ndarray) -> Path:
    """np.savez(_compressed) to `path` atomically (the name is kept exactly, no '.npz' added)."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda f: save(f, **arrays))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj

"""Names taken from data (scene names, sample tokens) checked before they become file names.

A name must be one path component: not empty, not `.`/`..`, no `/` or `\\`, no NUL or other
control character, at most 200 bytes. `child_path` also checks that the resolved result lies
under the output folder, so a crafted name (or a symlink) never writes outside it.
"""
from __future__ import annotations

from pathlib import Path

from fusionocc_core.cli import ToolError

MAX_NAME_BYTES = 200


class UnsafeNameError(ToolError, ValueError):
    """A name from data that cannot be used as a file or folder name (one-line reason)."""


def name_problem(name: object) -> str | None:
    """Why `name` is not a single safe path component, or None if it is."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if name in ("", ".", ".."):
        return "is not a file name"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(name: object, what: str, source: str | Path | None = None) -> str:
    """`name` if it is one safe path component; else UnsafeNameError naming `what` (e.g. 'scene name')
    and the file it came from."""
    problem = name_problem(name)
    if problem:
        where = f" (in {source})" if source else ""
        raise UnsafeNameError(f"{what} {name!r}{where} cannot be used as a file name: it {problem}")
    return name  # type: ignore[return-value]


def child_path(root: str | Path, name: object, what: str, suffix: str = "", source: str | Path | None = None) -> Path:
    """root / (name + suffix) after checking `name` and that the resolved path stays under root."""
    check_name(name, what, source)
    root = Path(root)
    path = root / f"{name}{suffix}"
    base = root.resolve()
    if path.resolve().parent != base:
        raise UnsafeNameError(f"{what} {name!r}: {path} would resolve outside {root}")
    return path

"""How every `fusionocc-*` tool ends: exit codes, one-line errors, and `--debug` tracebacks.

Exit codes: 0 ok, 1 error, 2 usage (bad command line), 130 interrupted (Ctrl-C).
A user error is one line on stderr, `<prog>: error: <reason>`, never a traceback; `--debug`
(or FUSIONOCC_DEBUG=1) adds the traceback. Tools build their parser with `ToolParser` and wrap
their `main` with `tool_main(prog)`; their own error classes derive from `ToolError`.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from typing import Callable, Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "FUSIONOCC_DEBUG"
MAX_MESSAGE = 600  # characters of one error line


class ToolError(Exception):
    """A user-facing failure (bad input, missing file, ...): its message is the one line shown."""


class UsageError(ToolError):
    """A bad command line found after parsing (exit code 2)."""


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) collapsed, shortened to MAX_MESSAGE."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 3] + "..."


class ToolParser(argparse.ArgumentParser):
    """argparse with `--debug` and one-line usage errors (exit code 2)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"on an error, also print the Python traceback (or set {DEBUG_ENV}=1)")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def debug_requested(argv: Sequence[str]) -> bool:
    """True with `--debug` among the options (before a `--`) or FUSIONOCC_DEBUG set to a true value."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--debug":
            return True
    return False


def describe(exc: BaseException) -> str:
    """The one-line reason shown for an exception that ended a tool."""
    if isinstance(exc, ToolError):
        return one_line(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        return one_line(f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror)
    if isinstance(exc, MemoryError):
        return one_line(f"out of memory {exc}".strip())
    detail = one_line(exc)
    return one_line(f"{type(exc).__name__}{': ' + detail if detail else ''} "
                    f"(unexpected; run with --debug or {DEBUG_ENV}=1 for the traceback)")


def run_tool(prog: str, body: Callable[[], int | None], debug: bool = False) -> int:
    """Run a tool's body and turn how it ended into an exit code and at most one stderr line."""
    try:
        code = body()
    except SystemExit:
        raise  # argparse: --help (0) and usage errors (2)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the tool boundary: nothing escapes as a traceback
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {describe(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
    return int(code or 0)


def tool_main(prog: str) -> Callable[[Callable[[Sequence[str] | None], int | None]], Callable[..., int]]:
    """Decorator for a tool's `main(argv=None)`: runs it through `run_tool`."""
    def wrap(body: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
        @functools.wraps(body)
        def main(argv: Sequence[str] | None = None) -> int:
            args = list(sys.argv[1:] if argv is None else argv)
            return run_tool(prog, lambda: body(argv), debug_requested(args))
        return main
    return wrap

"""Reading a rosbag2 that may be truncated or corrupt: every failure becomes one `BagReadError`.

rosbags raises `ReaderError` for a bad header or index, the zstd decompressor its own errors for a
damaged chunk, and the CDR deserialiser struct/index errors for garbage bytes; the tools that read
bags (fusionocc-replay, -bag-extract, -play, -bag-info) go through these helpers so that each of
them is one line naming the bag. Only the reading is wrapped: errors of the caller's own code
inside a loop over `read_messages` pass through unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from rosbags.rosbag2 import Reader

from fusionocc_core.cli import ToolError, one_line


class BagReadError(ToolError):
    """A bag that cannot be read (missing, truncated, corrupt); one line naming it."""


def _reason(exc: BaseException) -> str:
    detail = one_line(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def open_reader(bag: str | Path) -> Reader:
    """An opened rosbags Reader of `bag` (the caller closes it); a missing, truncated or corrupt bag
    is a BagReadError."""
    bag = Path(bag)
    if not bag.exists():
        raise BagReadError(f"bag {bag} does not exist")
    if not (bag / "metadata.yaml").is_file():
        raise BagReadError(f"{bag} is not a rosbag2 directory (no metadata.yaml)")
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags/yaml/zstd errors of a damaged bag
        raise BagReadError(f"cannot read bag {bag} (corrupt or truncated?): {_reason(exc)}") from None
    return reader


@contextmanager
def open_bag(bag: str | Path) -> Iterator[Reader]:
    """`open_reader` as a context manager that closes the bag."""
    reader = open_reader(bag)
    try:
        yield reader
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing a damaged bag must not hide the first error
            pass


def read_messages(reader: Reader, bag: str | Path, connections: Iterable[Any] | None = None
                  ) -> Iterator[tuple[Any, int, bytes]]:
    """reader.messages(), with a read/decompression failure mid-bag turned into BagReadError."""
    kwargs = {} if connections is None else {"connections": list(connections)}
    it = iter(reader.messages(**kwargs))
    count = 0
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - ReaderError, zstd errors, struct errors of a damaged chunk
            raise BagReadError(f"cannot read bag {bag} after {count} messages (corrupt or truncated?): "
                               f"{_reason(exc)}") from None
        count += 1
        yield item


def deserialize(store: Any, raw: bytes, conn: Any, bag: str | Path) -> Any:
    """store.deserialize_cdr for one message; garbage bytes are a BagReadError naming the topic."""
    try:
        return store.deserialize_cdr(raw, conn.msgtype)
    except Exception as exc:  # noqa: BLE001 - struct/index/unicode errors of corrupt CDR
        raise BagReadError(f"bag {bag}: a {conn.msgtype} message on {conn.topic} cannot be decoded "
                           f"({_reason(exc)})") from None

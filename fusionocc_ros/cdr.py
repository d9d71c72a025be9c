"""CDR (XCDR1 little-endian, as ROS 2 publishes) serialisation driven by the .msg definitions.

Contract: `serialize(typename, value)` walks the message definition held by our rosbags
typestore (`rosbag_tools.typestore`, the same definitions the bags are written with) and returns
the bytes (with the 4-byte encapsulation header) that rclpy's `Publisher.publish(bytes)`,
`deserialize_message` and rosbags' reader accept. A message value is a dict of field name ->
value; fields left out take their zero value (0, "", empty sequence, zeroed nested message).
The one hand-written part is the bulk path: a sequence or array of primitives, or of a message
made of one primitive type (geometry_msgs/Point, std_msgs/ColorRGBA...), may be given as a
C-contiguous little-endian numpy array whose rows are the elements; it is copied as raw bytes.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
from rosbags.interfaces import Nodetype

from fusionocc_ros.conversions import ns_to_sec_nsec

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"

_ZEROS = b"\x00" * 8
# primitive -> (struct format, size); ROS 2 char/byte/octet are one unsigned byte
_PRIMITIVES: dict[str, tuple[str, int]] = {
    "bool": ("<?", 1), "byte": ("<B", 1), "octet": ("<B", 1), "char": ("<B", 1),
    "int8": ("<b", 1), "uint8": ("<B", 1), "int16": ("<h", 2), "uint16": ("<H", 2),
    "int32": ("<i", 4), "uint32": ("<I", 4), "int64": ("<q", 8), "uint64": ("<Q", 8),
    "float32": ("<f", 4), "float64": ("<d", 8),
}


class CdrWriter:
    """Append-only CDR buffer: primitives aligned to their size (measured after the encapsulation
    header), strings as uint32 length incl. NUL + bytes + NUL, sequences as uint32 count then
    elements (aligned only when non-empty). Padding is zeros."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [ENCAPSULATION_CDR_LE]
        self._pos = 0  # offset from the end of the encapsulation header

    def align(self, size: int) -> None:
        pad = -self._pos % size
        if pad:
            self._parts.append(_ZEROS[:pad])
            self._pos += pad

    def raw(self, data: bytes | memoryview) -> None:
        self._parts.append(data)
        self._pos += len(data)

    def primitive(self, fmt: str, size: int, value: Any) -> None:
        self.align(size)
        self._parts.append(struct.pack(fmt, value))
        self._pos += size

    def u32(self, value: int) -> None:
        self.primitive("<I", 4, value)

    def string(self, value: str) -> None:
        data = value.encode("utf-8")
        self.u32(len(data) + 1)
        self.raw(data + b"\x00")

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def _store() -> Any:
    from rosbag_tools.typestore import get_store

    return get_store()


@lru_cache(maxsize=None)
def _fields(typename: str) -> tuple[tuple[str, Any], ...]:
    """(field name, definition node) of a message type, in wire order."""
    return tuple(_store().fielddefs[typename][1])


@lru_cache(maxsize=None)
def _bulk_element(node: tuple) -> tuple[int, int]:
    """(element bytes, alignment) of a sequence/array element that may be given as numpy rows:
    a primitive, or a message made of a single primitive type (no padding inside)."""
    kind, detail = node
    if kind == Nodetype.BASE and detail[0] in _PRIMITIVES:
        size = _PRIMITIVES[detail[0]][1]
        return size, size
    if kind == Nodetype.NAME:
        sizes = set()
        for _, sub in _fields(detail):
            if sub[0] != Nodetype.BASE or sub[1][0] not in _PRIMITIVES:
                break
            sizes.add(_PRIMITIVES[sub[1][0]][1])
        else:
            if len(sizes) == 1:
                size = sizes.pop()
                return size * len(_fields(detail)), size
    raise TypeError(f"no bulk (numpy) layout for elements of type {detail}")


def _write(w: CdrWriter, node: tuple, value: Any) -> None:
    kind, detail = node
    if kind == Nodetype.BASE:
        name = detail[0]
        if name == "string":
            w.string(value or "")
        else:
            fmt, size = _PRIMITIVES[name]
            w.primitive(fmt, size, value or 0)
    elif kind == Nodetype.NAME:
        _write_message(w, detail, value or {})
    else:  # ARRAY (fixed length) or SEQUENCE
        sub, length = detail
        if kind == Nodetype.SEQUENCE:
            count = 0 if value is None else len(value)
            w.u32(count)
        else:
            count = length
        if isinstance(value, np.ndarray):
            size, alignment = _bulk_element(sub)
            data = np.ascontiguousarray(value)
            if data.dtype.byteorder == ">" or data.nbytes != size * count:
                raise ValueError(f"numpy {data.dtype}{data.shape} is not {count} little-endian elements of {size} bytes")
            if count:
                w.align(alignment)
                w.raw(memoryview(data.reshape(-1).view(np.uint8)))  # copied once, by getvalue's join
        elif value is None:
            for _ in range(count):  # a fixed array left out: zero elements
                _write(w, sub, None)
        else:
            if kind == Nodetype.ARRAY and len(value) != length:
                raise ValueError(f"fixed array of {length} elements given {len(value)}")
            for item in value:
                _write(w, sub, item)


@lru_cache(maxsize=None)
def _packed(typename: str) -> tuple[struct.Struct, int, tuple[str, ...]] | None:
    """(struct, alignment, field names) of a message made of one primitive type (Time, Point,
    ColorRGBA...): written with one pack call; None for other messages."""
    try:
        size, alignment = _bulk_element((Nodetype.NAME, typename))
    except TypeError:
        return None
    fields = _fields(typename)
    fmt = "<" + "".join(_PRIMITIVES[node[1][0]][0][1] for _, node in fields)
    return struct.Struct(fmt), alignment, tuple(name for name, _ in fields)


@lru_cache(maxsize=None)
def _zero_message(typename: str, offset: int) -> bytes:
    """Bytes of a message with every field zero/empty, starting at `offset` mod 8 (padding included)."""
    w = CdrWriter()
    w.raw(_ZEROS[:offset])
    _write_fields(w, typename, {})
    return w.getvalue()[len(ENCAPSULATION_CDR_LE) + offset :]


def _write_message(w: CdrWriter, typename: str, value: Mapping[str, Any]) -> None:
    if not value:
        w.raw(_zero_message(typename, w._pos % 8))
        return
    packed = _packed(typename)
    if packed is not None:
        layout, alignment, names = packed
        if not _field_names(typename).issuperset(value):
            unknown = set(value) - set(names)
            raise KeyError(f"{typename} has no field(s) {sorted(unknown)}")
        w.align(alignment)
        w.raw(layout.pack(*(value.get(n) or 0 for n in names)))
        return
    _write_fields(w, typename, value)


@lru_cache(maxsize=None)
def _field_names(typename: str) -> frozenset[str]:
    return frozenset(name for name, _ in _fields(typename))


def _write_fields(w: CdrWriter, typename: str, value: Mapping[str, Any]) -> None:
    fields = _fields(typename)
    if not _field_names(typename).issuperset(value):
        unknown = set(value) - _field_names(typename)
        raise KeyError(f"{typename} has no field(s) {sorted(unknown)}")
    for name, node in fields:
        _write(w, node, value.get(name))


def prepare(typename: str) -> None:
    """Load the definitions now (the typestore parses .msg text once, ~0.1 s), not on the first frame."""
    _zero_message(typename, 0)


def serialize(typename: str, value: Mapping[str, Any]) -> bytes:
    """CDR bytes of one `typename` message (e.g. 'visualization_msgs/msg/MarkerArray') from a dict."""
    w = CdrWriter()
    _write_message(w, typename, value)
    return w.getvalue()


def header(stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """std_msgs/Header value at `stamp_ns` (ROS time: sec, nanosec >= 0)."""
    sec, nanosec = ns_to_sec_nsec(stamp_ns)
    return {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": frame_id}

"""A minimal little-endian CDR (XCDR1, as ROS 2 publishes) writer with numpy bulk arrays.

Contract: `CdrWriter` appends fields in message order with the alignment rules of ROS 2's
serializer (primitives aligned to their size, measured from after the 4-byte encapsulation
header; strings are uint32 length incl. NUL + bytes + NUL; sequences are uint32 count then
elements, aligned only when non-empty). `getvalue()` returns bytes that rclpy's
`Publisher.publish(bytes)`, `deserialize_message` and rosbags' writer accept. Padding is zeros.
"""
from __future__ import annotations

import struct

import numpy as np

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"

_ZEROS = b"\x00" * 8


class CdrWriter:
    """Append-only CDR buffer; callers write the fields of a message definition in order."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [ENCAPSULATION_CDR_LE]
        self._pos = 0  # offset from the end of the encapsulation header

    def align(self, size: int) -> None:
        pad = -self._pos % size
        if pad:
            self._parts.append(_ZEROS[:pad])
            self._pos += pad

    def raw(self, data: bytes) -> None:
        self._parts.append(data)
        self._pos += len(data)

    def _pack(self, fmt: str, size: int, value: float | int) -> None:
        self.align(size)
        self._parts.append(struct.pack(fmt, value))
        self._pos += size

    def bool(self, value: bool) -> None:
        self._parts.append(b"\x01" if value else b"\x00")
        self._pos += 1

    def u8(self, value: int) -> None:
        self._parts.append(struct.pack("<B", value))
        self._pos += 1

    def i32(self, value: int) -> None:
        self._pack("<i", 4, value)

    def u32(self, value: int) -> None:
        self._pack("<I", 4, value)

    def f32(self, value: float) -> None:
        self._pack("<f", 4, value)

    def f64(self, value: float) -> None:
        self._pack("<d", 8, value)

    def f64s(self, values: tuple[float, ...] | list[float]) -> None:
        """Consecutive float64 fields (e.g. a Pose: 7 doubles)."""
        self.align(8)
        self.raw(struct.pack(f"<{len(values)}d", *values))

    def string(self, value: str) -> None:
        data = value.encode("utf-8")
        self.u32(len(data) + 1)
        self.raw(data + b"\x00")

    def sequence(self, array: np.ndarray, element_align: int) -> None:
        """A sequence of fixed-size elements given as a C-contiguous little-endian numpy array.

        `array.shape[0]` is the element count (e.g. (N, 3) float64 for geometry_msgs/Point[]).
        """
        count = int(array.shape[0]) if array.ndim else 0
        self.u32(count)
        if count:
            self.align(element_align)
            self.raw(np.ascontiguousarray(array).tobytes())

    def header(self, sec: int, nanosec: int, frame_id: str) -> None:
        """std_msgs/Header."""
        self.i32(sec)
        self.u32(nanosec)
        self.string(frame_id)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)

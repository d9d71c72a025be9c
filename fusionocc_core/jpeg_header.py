"""Read a JPEG's size from its header without decoding it (the converter checks camera files with
it, the node checks a CompressedImage before handing it to OpenCV). Size order: (height, width)."""
from __future__ import annotations

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame (not DHT, JPG, DAC)
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RSTn: no length field
_MAX_SEGMENTS = 4096


class JpegHeaderError(ValueError):
    """The bytes do not hold a whole, readable JPEG header (the message says why)."""


def is_jpeg(data: bytes) -> bool:
    """True when the bytes start with a JPEG start-of-image marker."""
    return data[:2] == b"\xff\xd8"


def has_end_marker(data: bytes) -> bool:
    """True when the JPEG ends with its end-of-image marker (trailing zero padding tolerated)."""
    return bytes(data[-4096:]).rstrip(b"\x00")[-2:] == b"\xff\xd9"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the start-of-frame segment; JpegHeaderError if there is none.

    Walks the few header segments only (give it the first 64 KiB of a large file)."""
    if not is_jpeg(data):
        raise JpegHeaderError("not a JPEG (no start-of-image marker)")
    pos, n, segments = 2, len(data), 0
    while pos + 4 <= n:
        segments += 1
        if segments > _MAX_SEGMENTS:
            raise JpegHeaderError("JPEG has too many header segments")
        if data[pos] != 0xFF:
            raise JpegHeaderError(f"corrupt JPEG header at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            raise JpegHeaderError("corrupt JPEG segment length")
        if marker in _SOF_MARKERS:
            if pos + 9 > n:
                break
            return (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8]
        if marker in (0xDA, 0xD9):  # start of scan / end of image before any frame header
            break
        pos += 2 + length
    raise JpegHeaderError("JPEG has no frame header (truncated or corrupt)")

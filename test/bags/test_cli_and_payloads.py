"""The CLIs document every option; payload checks reject arbitrary bytes cleanly (hypothesis)."""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rosbag_tools import convert, info, messages, play


@pytest.mark.parametrize("module", [convert, info, play])
def test_every_option_is_explained_in_help(module) -> None:
    parser = module.build_parser()
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and len(action.help) > 15, action.dest
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0


def test_convert_rejects_bad_jobs(capsys) -> None:
    assert convert.main(["--data-root", "x", "--version", "v", "--out", "o", "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(90, 160, 3), (37, 51, 3), (900, 1600, 3)])
def test_jpeg_size_reads_the_frame_header(shape) -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros(shape, np.uint8))
    assert ok
    assert messages.jpeg_size(buf.tobytes(), "x.jpg") == (shape[0], shape[1])
    with pytest.raises(messages.PayloadError, match="truncated JPEG x.jpg"):
        messages.jpeg_size(buf.tobytes()[:-100], "x.jpg")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_jpeg_size_never_crashes_on_arbitrary_bytes(data: bytes, framed: bool) -> None:
    if framed:  # start and end like a JPEG so the marker walk is exercised
        data = b"\xff\xd8" + data + b"\xff\xd9"
    try:
        height, width = messages.jpeg_size(data, "f.jpg")
    except messages.PayloadError as exc:
        assert "f.jpg" in str(exc) and "\n" not in str(exc)
    else:
        assert 0 <= width < 65536 and 0 <= height < 65536


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_lidar_cloud_accepts_only_whole_points(data: bytes) -> None:
    try:
        cloud = messages.lidar_cloud(5, "lidar_top", data, "p.bin")
    except messages.PayloadError as exc:
        assert len(data) % 20 or not data
        assert "p.bin" in str(exc)
    else:
        assert cloud.width == len(data) // 20 and cloud.data.tobytes() == data

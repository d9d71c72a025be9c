"""conversions: PointCloud2/Image/CompressedImage/CameraInfo/Transform <-> numpy, and fuzzing
of hostile messages: every input either converts to a valid array or raises ConversionError."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from fusionocc_ros.conversions import (
    ConversionError,
    camera_info_to_k,
    compressed_image_to_rgb,
    header_stamp_ns,
    image_msg_to_rgb,
    image_to_rgb,
    matrix_to_transform_stamped,
    pointcloud2_to_xyzir,
    pointfields_from_dtype,
    transform_stamped_to_matrix,
    transform_to_matrix,
    xyzir_to_pointcloud2,
)
from fusionocc_ros.rigid import transform_from_xyzw

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
rng = np.random.default_rng(0)


def cloud_msg(records: np.ndarray, big_endian: bool = False, row_pad: int = 0, height: int = 1) -> PointCloud2:
    """A PointCloud2 holding a structured array (any layout) as a ROS driver would publish it."""
    msg = PointCloud2()
    msg.height, msg.width = height, records.size // height
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in pointfields_from_dtype(records.dtype)]
    msg.is_bigendian = big_endian
    msg.point_step = records.dtype.itemsize
    rows = records.reshape(height, -1).view(np.uint8).reshape(height, -1)
    msg.row_step = rows.shape[1] + row_pad
    msg.data = np.concatenate([rows, np.full((height, row_pad), 0xAB, np.uint8)], axis=1).tobytes()
    return msg


# --- PointCloud2 -----------------------------------------------------------------------------


def test_nuscenes_layout_round_trip_is_zero_copy():
    pts = rng.normal(size=(1000, 5)).astype(np.float32)
    msg = xyzir_to_pointcloud2(pts, 1_533_201_470_448_696_000, "lidar_top")
    out = pointcloud2_to_xyzir(msg)
    np.testing.assert_array_equal(out, pts)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert header_stamp_ns(msg) == 1_533_201_470_448_696_000 and msg.header.frame_id == "lidar_top"


def test_other_layouts_endianness_and_row_padding():
    n = 64
    xyz = rng.normal(size=(n, 3)) * 10
    for endian in "<>":
        dtype = np.dtype({"names": ["ring", "z", "x", "y", "intensity"],
                          "formats": [endian + "u2", endian + "f8", endian + "f4", endian + "f4", "u1"],
                          "offsets": [0, 4, 12, 16, 22], "itemsize": 32})
        rec = np.zeros(n, dtype)
        rec["x"], rec["y"], rec["z"] = xyz.T
        rec["intensity"] = np.arange(n)
        rec["ring"] = np.arange(n) % 32
        out = pointcloud2_to_xyzir(cloud_msg(rec, big_endian=endian == ">", row_pad=12, height=4))
        np.testing.assert_allclose(out[:, :3], xyz.astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(out[:, 3], np.arange(n))
        np.testing.assert_array_equal(out[:, 4], np.arange(n) % 32)


def test_missing_intensity_and_ring_read_as_zero_and_nan_points_are_dropped():
    rec = np.zeros(5, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))
    rec["x"] = [1, np.nan, 3, np.inf, 5]
    out = pointcloud2_to_xyzir(cloud_msg(rec))
    np.testing.assert_array_equal(out, [[1, 0, 0, 0, 0], [3, 0, 0, 0, 0], [5, 0, 0, 0, 0]])
    assert pointcloud2_to_xyzir(cloud_msg(rec), drop_invalid=False).shape == (5, 5)


def test_empty_cloud():
    msg = xyzir_to_pointcloud2(np.zeros((0, 5), np.float32), 0, "lidar_top")
    assert pointcloud2_to_xyzir(msg).shape == (0, 5)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: setattr(m, "data", m.data[:-1]), "bytes, expected row_step"),
        (lambda m: setattr(m, "row_step", 10), "row_step"),
        (lambda m: setattr(m, "point_step", 0), "point_step"),
        (lambda m: setattr(m, "fields", m.fields[1:]), "lacks x"),
        (lambda m: setattr(m, "fields", [*m.fields, m.fields[0]]), "duplicate field 'x'"),
        (lambda m: setattr(m.fields[2], "datatype", 9), "datatype=9"),
        (lambda m: setattr(m.fields[4], "offset", 18), "does not fit point_step"),
        (lambda m: setattr(m.fields[0], "count", 0), "does not fit"),
        (lambda m: setattr(m, "width", 1 << 30), "exceeds the limit"),
        (lambda m: setattr(m, "height", 0), r"height\*width = 0"),
    ],
)
def test_malformed_clouds_raise_one_conversion_error(mutate, reason):
    msg = xyzir_to_pointcloud2(np.ones((4, 5), np.float32), 0, "lidar_top")
    mutate(msg)
    with pytest.raises(ConversionError, match=reason):
        pointcloud2_to_xyzir(msg)


def test_plain_objects_and_numpy_buffers_work_too():
    """rosbags messages carry numpy uint8 arrays and plain attributes."""
    pts = rng.normal(size=(10, 5)).astype(np.float32)
    fields = [SimpleNamespace(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("x y z intensity ring".split())]
    msg = SimpleNamespace(height=1, width=10, fields=fields, is_bigendian=False, point_step=20, row_step=200,
                          data=pts.view(np.uint8).reshape(-1), is_dense=True)
    np.testing.assert_array_equal(pointcloud2_to_xyzir(msg), pts)
    msg.data = pts.astype(np.float64).view(np.uint8).reshape(-1)[:199]  # wrong length
    with pytest.raises(ConversionError):
        pointcloud2_to_xyzir(msg)
    msg.data = "not bytes"
    with pytest.raises(ConversionError, match="unsupported buffer"):
        pointcloud2_to_xyzir(msg)


point_fields = st.lists(
    st.builds(PointField, name=st.sampled_from(["x", "y", "z", "intensity", "ring", "t", ""]),
              offset=st.integers(0, 40), datatype=st.integers(0, 10), count=st.integers(0, 3)),
    max_size=7,
)


@FUZZ
@given(height=st.integers(0, 4), width=st.integers(0, 300), point_step=st.integers(0, 40),
       row_extra=st.integers(-4, 8), fields=point_fields, big=st.booleans(), data_delta=st.integers(-3, 3),
       fill=st.sampled_from([0x00, 0x7F, 0xFF]))
def test_fuzz_hostile_pointcloud2(height, width, point_step, row_extra, fields, big, data_delta, fill):
    msg = PointCloud2()
    msg.height, msg.width, msg.point_step, msg.is_bigendian, msg.fields = height, width, point_step, big, fields
    msg.row_step = max(width * point_step + row_extra, 0)
    size = max(msg.row_step * height + data_delta, 0)
    data = np.full(size, fill, np.uint8)
    data[::7] = rng.integers(0, 256, data[::7].size)
    msg.data = data.tobytes()
    try:
        out = pointcloud2_to_xyzir(msg)
    except ConversionError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 5
    assert out.shape[0] <= height * width and np.isfinite(out).all()


@FUZZ
@given(order=st.permutations(["x", "y", "z", "intensity", "ring"]),
       types=st.lists(st.sampled_from(["f4", "f8", "i2", "u2", "i4", "u1"]), min_size=5, max_size=5),
       endian=st.sampled_from("<>"), pad=st.integers(0, 7), n=st.integers(1, 50))
def test_fuzz_valid_layouts_give_the_right_values(order, types, endian, pad, n):
    dtype = np.dtype([(name, (endian + t) if t != "u1" else t) for name, t in zip(order, types)])
    dtype = np.dtype({"names": dtype.names, "formats": [dtype[k] for k in dtype.names],
                      "offsets": [dtype.fields[k][1] for k in dtype.names], "itemsize": dtype.itemsize + pad})
    rec = np.zeros(n, dtype)
    want = np.zeros((n, 5), np.float32)
    for col, name in enumerate(["x", "y", "z", "intensity", "ring"]):
        vals = rng.integers(0, 100, n)
        rec[name] = vals
        want[:, col] = vals
    out = pointcloud2_to_xyzir(cloud_msg(rec, big_endian=endian == ">"))
    np.testing.assert_array_equal(out, want)


# --- images ----------------------------------------------------------------------------------


def rgb_image(h=37, w=53):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_msg(arr: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = arr.shape[:2]
    rows = arr.reshape(h, -1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1] + pad)
    msg.data = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1).tobytes()
    return msg


def test_raw_encodings_give_rgb():
    rgb = rgb_image()
    out = image_to_rgb(raw_msg(rgb, "rgb8"))
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(image_to_rgb(raw_msg(rgb[..., ::-1].copy(), "bgr8", pad=3)), rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(raw_msg(rgba, "rgba8")), rgb)
    np.testing.assert_array_equal(image_to_rgb(raw_msg(rgba[..., [2, 1, 0, 3]].copy(), "bgra8")), rgb)
    mono = rgb[..., 0].copy()
    np.testing.assert_array_equal(image_to_rgb(raw_msg(mono, "mono8", pad=1)), np.repeat(mono[..., None], 3, axis=2))
    msg = raw_msg(rgb, "rgb8")
    assert np.shares_memory(image_msg_to_rgb(msg), np.frombuffer(msg.data, np.uint8))  # zero-copy


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: setattr(m, "encoding", "16UC1"), "encoding '16UC1'"),
        (lambda m: setattr(m, "step", 10), "step=10"),
        (lambda m: setattr(m, "data", m.data[:-1]), "bytes, expected step"),
        (lambda m: setattr(m, "height", 0), "empty image"),
        (lambda m: (setattr(m, "height", 40000), setattr(m, "width", 40000)), "size limit"),
    ],
)
def test_malformed_raw_images(mutate, reason):
    msg = raw_msg(rgb_image(), "rgb8")
    mutate(msg)
    with pytest.raises(ConversionError, match=reason):
        image_to_rgb(msg)


def jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", arr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def test_jpeg_and_png_decode_to_rgb():
    smooth = np.zeros((48, 64, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 64)[None, :]  # red ramp
    smooth[..., 2] = 200
    out = compressed_image_to_rgb(CompressedImage(format="jpeg", data=jpeg(smooth)))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 3  # RGB order kept (not BGR)
    arr = rgb_image()
    ok, png = cv2.imencode(".png", arr[..., ::-1])
    np.testing.assert_array_equal(image_msg_to_rgb(CompressedImage(format="png", data=png.tobytes())), arr)


def sof_jpeg(height: int, width: int) -> bytes:
    """A JPEG whose frame header claims height x width (body from a real 8x8 JPEG)."""
    data = bytearray(jpeg(rgb_image(8, 8)))
    i = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "is 0 bytes"),
        (b"GIF89a" + bytes(100), "unsupported or corrupt"),
        (None, "truncated JPEG"),
        (sof_jpeg(60000, 60000), "size limit"),
        (sof_jpeg(0, 8), "height 0"),
        (b"\xff\xd8\xff\xe0\x00\x02" + bytes(64) + b"\xff\xd9", "corrupt JPEG header|no frame header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(8) + b"JUNK" + bytes(20), "corrupt PNG"),
    ],
)
def test_corrupt_compressed_images(data, reason):
    if data is None:
        data = jpeg(rgb_image(64, 64))[:-300]
    with pytest.raises(ConversionError, match=reason):
        compressed_image_to_rgb(CompressedImage(format="jpeg", data=data))


JPEG_SAMPLE = jpeg(rgb_image(32, 48), quality=80)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(JPEG_SAMPLE) - 1), st.integers(0, 255)), max_size=12),
       cut=st.integers(0, len(JPEG_SAMPLE)), junk=st.binary(max_size=64))
def test_fuzz_hostile_jpeg(edits, cut, junk):
    data = bytearray(JPEG_SAMPLE)
    for pos, value in edits:
        data[pos] = value
    data = bytes(data[:cut]) + junk
    try:
        out = compressed_image_to_rgb(CompressedImage(format="jpeg", data=data))
    except ConversionError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.size > 0


@FUZZ
@given(height=st.integers(0, 70000), width=st.integers(0, 70000), step_delta=st.integers(-5, 5),
       encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "", "RGB8", "32FC1"]),
       size_delta=st.integers(-3, 3))
def test_fuzz_hostile_raw_images(height, width, step_delta, encoding, size_delta):
    channels = {"rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding, 3)
    step = max(width * channels + step_delta, 0)
    size = step * height + size_delta
    assume(0 <= size <= 1 << 22)
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(size)
    try:
        out = image_to_rgb(msg)
    except ConversionError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.shape == (height, width, 3) and out.dtype == np.uint8


# --- CameraInfo ------------------------------------------------------------------------------

K = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]


def test_camera_info_gives_k():
    info = CameraInfo(height=900, width=1600, k=K)
    np.testing.assert_array_equal(camera_info_to_k(info), np.reshape(K, (3, 3)))


@pytest.mark.parametrize(
    "k, size, reason",
    [
        ([0.0] * 9, (900, 1600), "focal lengths"),
        ([float("nan")] + K[1:], (900, 1600), "NaN"),
        (K[:8] + [2.0], (900, 1600), "not a pinhole"),
        (K, (0, 1600), "empty image"),
        (K[:6], (900, 1600), "has 6 values"),
    ],
)
def test_bad_camera_info(k, size, reason):
    info = SimpleNamespace(k=k, height=size[0], width=size[1])
    with pytest.raises(ConversionError, match=reason):
        camera_info_to_k(info)


@FUZZ
@given(k=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=9, max_size=9),
       height=st.integers(0, 100000), width=st.integers(0, 100000))
def test_fuzz_camera_info(k, height, width):
    try:
        out = camera_info_to_k(CameraInfo(height=height, width=width, k=k))
    except ConversionError:
        return
    assert out.shape == (3, 3) and np.isfinite(out).all() and out[0, 0] > 0 and out[1, 1] > 0


# --- transforms ------------------------------------------------------------------------------


def test_transform_round_trip():
    q = np.array([0.1, -0.2, 0.3, 0.9])
    T = transform_from_xyzw(np.array([1.0, -2.0, 3.5]), q / np.linalg.norm(q))
    msg = matrix_to_transform_stamped(T, "map", "base_link", 1_500_000_000_250)
    parent, child, stamp, back = transform_stamped_to_matrix(msg)
    assert (parent, child, stamp) == ("map", "base_link", 1_500_000_000_250)
    np.testing.assert_allclose(back, T, atol=1e-12)
    msg.header.stamp.nanosec = 1_000_000_000
    with pytest.raises(ConversionError, match="nanosec"):
        transform_stamped_to_matrix(msg)
    with pytest.raises(ConversionError, match="malformed"):
        transform_to_matrix(SimpleNamespace(translation=None, rotation=None))


def test_plumbing_modules_import_without_ros():
    """Layering: only node.py may import rclpy (or message packages) at import time."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "import fusionocc_ros.sync, fusionocc_ros.tf_buffer, fusionocc_ros.conversions, fusionocc_ros.assembler,"
        " fusionocc_ros.encoders, fusionocc_ros.diagnostics, fusionocc_ros.cdr, fusionocc_ros.rigid\n"
        "ros = sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy' or m.split('.')[0].endswith('_msgs'))\n"
        "assert not ros, ros\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert result.returncode == 0, result.stderr


def test_jpeg_with_zero_padding_after_the_end_marker_decodes():
    arr = rgb_image(16, 16)
    out = compressed_image_to_rgb(CompressedImage(format="jpeg", data=jpeg(arr) + bytes(1000)))
    assert out.shape == (16, 16, 3)
    with pytest.raises(ConversionError, match="truncated"):
        compressed_image_to_rgb(CompressedImage(format="jpeg", data=jpeg(arr) + b"trailing junk"))

"""fusionocc-convert on a generated scene: read back with rosbags AND with Foxglove's mcap readers."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader

import bag_expect as E
from bag_expect import VERSION
from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, PALETTE
from rosbag_tools import convert


def raw_messages(bag: Path) -> list[tuple[str, int, bytes]]:
    """(topic, bag time, CDR bytes) of every message, in time order."""
    with Reader(bag) as r:
        return [(c.topic, ts, bytes(raw)) for c, ts, raw in r.messages()]


def scene_names(nusc) -> list[str]:
    return sorted(s["name"] for s in nusc.scene)


@pytest.fixture(scope="module")
def first_bag(mcap_bags: Path, nusc) -> tuple[str, Path, dict, dict]:
    name = scene_names(nusc)[0]
    conns, msgs = E.read_bag(mcap_bags / name)
    return name, mcap_bags / name, conns, msgs


def test_one_complete_bag_per_scene_and_nothing_else(mcap_bags: Path, nusc) -> None:
    assert sorted(os.listdir(mcap_bags)) == scene_names(nusc)  # no leftover temporary directories
    for name in scene_names(nusc):
        assert sorted(os.listdir(mcap_bags / name)) == ["metadata.yaml", f"{name}.mcap"]


def test_topics_types_and_counts(mcap_bags: Path, nusc, data_root: Path) -> None:
    for name in scene_names(nusc):
        conns, msgs = E.read_bag(mcap_bags / name)
        expected = E.expected_counts(nusc, data_root, name, sweeps=False)
        assert "/occupancy/gt" in expected, "the generated root should carry Occ3D gts"
        assert {t: len(v) for t, v in msgs.items()} == expected
        assert {t: c.msgtype for t, c in conns.items()} == {t: E.EXPECTED_TYPES[t] for t in expected}


def test_payloads_byte_identical_to_source_files(first_bag, nusc, data_root: Path) -> None:
    name, _, _, msgs = first_bag
    by_key = {(sd["channel"].lower(), sd["timestamp"] * 1000): sd for sd in E.scene_sample_data(nusc, name, False)}
    checked = 0
    for topic, frame_kind in [(f"/{c.lower()}/image_rect/compressed", c.lower()) for c in E.CAMERA_NAMES] + [
        ("/lidar_top", "lidar_top")
    ]:
        for ts, msg in msgs[topic]:
            assert E.stamp_ns(msg.header) == ts
            assert msg.header.frame_id == frame_kind
            sd = by_key[(frame_kind, ts)]
            source = (data_root / sd["filename"]).read_bytes()
            assert msg.data.tobytes() == source, f"{topic} at {ts} differs from {sd['filename']}"
            checked += 1
    assert checked == 7 * len(E.scene_samples(nusc, name))
    for _, cloud in msgs["/lidar_top"]:
        assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
            (n, 4 * i, 7, 1) for i, n in enumerate(["x", "y", "z", "intensity", "ring"])
        ]
        assert (cloud.point_step, cloud.height, cloud.is_bigendian) == (20, 1, False)
        assert cloud.width * 20 == cloud.row_step == len(cloud.data)
    for _, img in msgs["/cam_front/image_rect/compressed"]:
        assert img.format == "jpeg"


def test_camera_info_matches_calibration_and_image(first_bag, nusc) -> None:
    name, _, _, msgs = first_bag
    for cam in E.CAMERA_NAMES:
        topic = f"/{cam.lower()}"
        infos, images = msgs[f"{topic}/camera_info"], msgs[f"{topic}/image_rect/compressed"]
        assert [t for t, _ in infos] == [t for t, _ in images]
        for (ts, info), (_, img) in zip(infos, images):
            sd = next(s for s in E.scene_sample_data(nusc, name, False) if s["channel"] == cam and s["timestamp"] * 1000 == ts)
            k = np.array(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
            np.testing.assert_array_equal(info.k.reshape(3, 3), k)
            np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([k, np.zeros((3, 1))]))
            np.testing.assert_array_equal(info.r.reshape(3, 3), np.eye(3))
            assert info.distortion_model == "plumb_bob" and not info.d.any()
            assert info.header.frame_id == img.header.frame_id == cam.lower()
            assert E.stamp_ns(info.header) == E.stamp_ns(img.header) == ts
            decoded = cv2.imdecode(img.data, cv2.IMREAD_COLOR)
            assert decoded.shape[:2] == (info.height, info.width)


def test_tf_static_is_one_latched_message_with_every_sensor(first_bag, nusc) -> None:
    name, _, conns, msgs = first_bag
    (qos,) = conns["/tf_static"].ext.offered_qos_profiles
    assert qos.durability == QosDurability.TRANSIENT_LOCAL and qos.depth == 1
    assert all(c.ext.offered_qos_profiles[0].durability == QosDurability.VOLATILE
               for t, c in conns.items() if t != "/tf_static")
    ((ts, tf_static),) = msgs["/tf_static"]
    first_stamp = min(ts for topic in msgs.values() for ts, _ in topic)
    assert ts == first_stamp
    by_child = {t.child_frame_id: t for t in tf_static.transforms}
    assert sorted(by_child) == sorted(c.lower() for c in E.CHANNELS)
    for sd in E.scene_sample_data(nusc, name, False)[:7]:
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        t = by_child[sd["channel"].lower()]
        assert t.header.frame_id == "base_link"
        tr, q = t.transform.translation, t.transform.rotation
        np.testing.assert_allclose([tr.x, tr.y, tr.z], cs["translation"])
        np.testing.assert_allclose([q.w, q.x, q.y, q.z], cs["rotation"])


def test_tf_has_ego_pose_at_every_sample_data_stamp(first_bag, nusc) -> None:
    name, _, _, msgs = first_bag
    expected = {}
    for sd in E.scene_sample_data(nusc, name, False):
        expected.setdefault(sd["timestamp"] * 1000, nusc.get("ego_pose", sd["ego_pose_token"]))
    got = {}
    for ts, msg in msgs["/tf"]:
        (t,) = msg.transforms
        assert (t.header.frame_id, t.child_frame_id) == ("map", "base_link")
        assert E.stamp_ns(t.header) == ts
        got[ts] = t
    assert sorted(got) == sorted(expected)
    for ts, pose in expected.items():
        tr, q = got[ts].transform.translation, got[ts].transform.rotation
        np.testing.assert_allclose([tr.x, tr.y, tr.z], pose["translation"])
        np.testing.assert_allclose([q.w, q.x, q.y, q.z], pose["rotation"])


def test_occupancy_gt_matches_labels_npz(first_bag, nusc, data_root: Path) -> None:
    name, _, _, msgs = first_bag
    samples = E.scene_samples(nusc, name)
    assert len(msgs["/occupancy/gt"]) == len(samples)
    for (ts, grid), sample in zip(msgs["/occupancy/gt"], samples):
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert ts == E.stamp_ns(grid.header) == lidar["timestamp"] * 1000
        assert grid.header.frame_id == "base_link"
        semantics = np.load(data_root / "gts" / name / sample["token"] / "labels.npz")["semantics"]
        np.testing.assert_array_equal(grid.labels.reshape(grid.size_x, grid.size_y, grid.size_z), semantics)
        assert (grid.size_x, grid.size_y, grid.size_z) == (200, 200, 16)
        p, o = grid.origin.position, grid.origin.orientation
        assert (p.x, p.y, p.z, o.x, o.y, o.z, o.w) == (-40.0, -40.0, -1.0, 0.0, 0.0, 0.0, 1.0)
        assert grid.resolution == pytest.approx(0.4)
        assert tuple(grid.class_names) == CLASS_NAMES and grid.free_label == FREE_LABEL
        colors = np.array([[c.r, c.g, c.b] for c in grid.class_colors])
        np.testing.assert_allclose(colors * 255, PALETTE, atol=1e-3)
        assert len(grid.confidence) == 0


def test_bag_time_is_header_stamp_and_written_in_time_order(first_bag) -> None:
    name, bag, _, msgs = first_bag
    for topic, items in msgs.items():
        stamps = [ts for ts, _ in items]
        assert stamps == sorted(stamps), f"{topic} stamps go backwards"
        for ts, msg in items:
            header = msg.transforms[0].header if topic in ("/tf", "/tf_static") else msg.header
            assert E.stamp_ns(header) == ts
    with open(bag / f"{name}.mcap", "rb") as f:  # file order, not a time-sorted view
        log_times = [m.log_time for _, _, m in make_reader(f).iter_messages(log_time_order=False)]
    assert log_times == sorted(log_times)


def test_metadata_is_version_8_with_qos_strings(first_bag) -> None:
    name, bag, _, _ = first_bag
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == [f"{name}.mcap"]
    assert info["compression_mode"] == ""  # zstd is MCAP-native chunk compression, not rosbag2's
    for topic in info["topics_with_message_count"]:
        qos = topic["topic_metadata"]["offered_qos_profiles"]
        assert isinstance(qos, str) and "durability:" in qos  # Humble parses a YAML string of ints
    assert info["custom_data"]["fusionocc.scene"] == name
    # the converter's faster YAML path is scoped to its own writes: rosbags is left as it was
    import rosbags.rosbag2.metadata as rosbags_metadata
    import rosbags.rosbag2.writer as rosbags_writer
    from ruamel.yaml import YAML

    assert rosbags_writer.YAML is YAML and rosbags_writer.dump_qos_v8 is rosbags_metadata.dump_qos_v8


def test_mcap_ros2_reader_decodes_every_message(first_bag, data_root: Path, nusc) -> None:
    name, bag, _, msgs = first_bag
    counts: dict[str, int] = {}
    with open(bag / f"{name}.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        assert reader.get_header().profile == "ros2"
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
        assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
        assert {ci.compression for ci in summary.chunk_indexes} == {"zstd"}
        assert any(md.name == "rosbag2" for md in reader.iter_metadata())
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert schema.name == E.EXPECTED_TYPES[channel.topic]
            if channel.topic == "/cam_back/image_rect/compressed":
                sd = next(s for s in E.scene_sample_data(nusc, name, False)
                          if s["channel"] == "CAM_BACK" and s["timestamp"] * 1000 == message.log_time)
                assert bytes(decoded.data) == (data_root / sd["filename"]).read_bytes()
            if channel.topic == "/occupancy/gt":
                assert len(decoded.labels) == 200 * 200 * 16 and list(decoded.class_names) == list(CLASS_NAMES)
    assert counts == {t: len(v) for t, v in msgs.items()}


def test_sqlite3_storage_holds_the_same_messages(data_root: Path, nusc, mcap_bags: Path, tmp_path: Path) -> None:
    name = scene_names(nusc)[-1]
    out = tmp_path / "sq"
    rc = convert.main(["--data-root", str(data_root), "--version", VERSION, "--scenes", name,
                       "--storage", "sqlite3", "--out", str(out)])
    assert rc == 0 and sorted(os.listdir(out / name)) == ["metadata.yaml", f"{name}.db3"]

    assert raw_messages(out / name) == raw_messages(mcap_bags / name)
    conns, _ = E.read_bag(out / name)
    assert conns["/tf_static"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL


def test_parallel_jobs_write_the_same_bags(data_root: Path, nusc, mcap_bags: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "jobs2"
    rc = convert.main(["--data-root", str(data_root), "--version", VERSION, "--jobs", "2", "--out", str(out)])
    assert rc == 0
    summary = capsys.readouterr().out
    assert "2 scene(s)" in summary and "MB/s" in summary and "key-frames/s" in summary
    assert sorted(os.listdir(out)) == scene_names(nusc)
    for name in scene_names(nusc):
        assert raw_messages(out / name) == raw_messages(mcap_bags / name)


def test_sweeps_writes_every_sample_data(sweeps_root: Path, tmp_path: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=VERSION, dataroot=str(sweeps_root), verbose=False)
    out = tmp_path / "sweeps"
    assert convert.main(["--data-root", str(sweeps_root), "--version", VERSION, "--sweeps", "--out", str(out)]) == 0
    (name,) = scene_names(nusc)
    conns, msgs = E.read_bag(out / name)
    expected = E.expected_counts(nusc, sweeps_root, name, sweeps=True)
    assert {t: len(v) for t, v in msgs.items()} == expected
    assert expected["/lidar_top"] > 2 * len(E.scene_samples(nusc, name)), "the generated root has sweeps"
    files = {(sd["channel"].lower(), sd["timestamp"] * 1000): sd["filename"]
             for sd in E.scene_sample_data(nusc, name, sweeps=True)}
    for _, cloud in msgs["/lidar_top"]:
        ts = E.stamp_ns(cloud.header)
        assert cloud.data.tobytes() == (sweeps_root / files[("lidar_top", ts)]).read_bytes()
    for topic, items in msgs.items():
        stamps = [ts for ts, _ in items]
        assert stamps == sorted(stamps), topic
    # key-frames only from the same root: just the key-frame sample_data
    out_kf = tmp_path / "kf"
    assert convert.main(["--data-root", str(sweeps_root), "--version", VERSION, "--out", str(out_kf)]) == 0
    _, kf_msgs = E.read_bag(out_kf / name)
    assert {t: len(v) for t, v in kf_msgs.items()} == E.expected_counts(nusc, sweeps_root, name, sweeps=False)

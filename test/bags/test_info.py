"""fusionocc-bag-info on converted bags (MCAP and sqlite3) and on things that are not bags."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import bag_expect as E
from rosbag_tools import info


def test_summary_matches_the_bag(mcap_bags: Path, nusc, data_root: Path) -> None:
    bag = sorted(mcap_bags.iterdir())[0]
    s = info.summarize(bag)
    expected = E.expected_counts(nusc, data_root, bag.name, sweeps=False)
    assert {t.name: t.count for t in s.topics} == expected
    assert {t.name: t.msgtype for t in s.topics} == {t: E.EXPECTED_TYPES[t] for t in expected}
    assert s.message_count == sum(expected.values())
    assert (s.storage, s.version) == ("mcap", 8)
    assert s.size_bytes == sum(p.stat().st_size for p in bag.iterdir())
    samples = E.scene_samples(nusc, bag.name)
    lidar = [nusc.get("sample_data", x["data"]["LIDAR_TOP"])["timestamp"] for x in samples]
    by_name = {t.name: t for t in s.topics}
    assert by_name["/lidar_top"].rate_hz == pytest.approx((len(lidar) - 1) / ((lidar[-1] - lidar[0]) * 1e-6))
    assert by_name["/tf_static"].latched and by_name["/tf_static"].rate_hz is None
    assert not by_name["/tf"].latched
    records = E.scene_sample_data(nusc, bag.name, False)
    assert s.duration_ns == (max(sd["timestamp"] for sd in records) - min(sd["timestamp"] for sd in records)) * 1000
    assert s.custom_data["fusionocc.scene"] == bag.name


def test_cli_prints_every_topic(mcap_bags: Path, capsys) -> None:
    bag = sorted(mcap_bags.iterdir())[0]
    assert info.main([str(bag)]) == 0
    out = capsys.readouterr().out
    for topic in E.EXPECTED_TYPES:
        assert topic in out
    assert "Duration:" in out and "Size:" in out and "rate Hz" in out and "latched" in out
    assert info.main([str(bag), "--no-scan"]) == 0
    assert "/lidar_top" in capsys.readouterr().out


def test_bad_paths_give_one_line_errors(mcap_bags: Path, tmp_path: Path, capsys) -> None:
    assert info.main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"fusionocc-bag-info: error: bag {tmp_path / 'nope'} does not exist"
    assert info.main([str(tmp_path)]) == 1
    assert "is not a rosbag2 directory" in capsys.readouterr().err
    bag = sorted(mcap_bags.iterdir())[0]
    broken = tmp_path / bag.name
    shutil.copytree(bag, broken)
    mcap = broken / f"{bag.name}.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    assert info.main([str(broken)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fusionocc-bag-info: error: cannot read bag {broken}") and "\n" not in err

"""The class table and the config loader: the single sources other parts build on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionocc_core import load_config
from fusionocc_core.classes import CAMERA_NAMES, CLASS_NAMES, FREE_LABEL, GRID_SHAPE, NUM_CLASSES, PALETTE
from fusionocc_core.config import config_from_dict


def test_class_table_follows_occ3d_order() -> None:
    assert NUM_CLASSES == 18 and FREE_LABEL == 17 and CLASS_NAMES[FREE_LABEL] == "free"
    assert CLASS_NAMES[:5] == ("others", "barrier", "bicycle", "bus", "car")
    assert CLASS_NAMES[11] == "driveable_surface" and CLASS_NAMES[16] == "vegetation"
    assert PALETTE.shape == (18, 3) and PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE.tolist()}) == 18, "two classes share a colour"
    with pytest.raises(ValueError):
        PALETTE[0, 0] = 1  # read-only: nobody repaints a class by accident
    assert CAMERA_NAMES[0] == "CAM_FRONT_LEFT" and len(CAMERA_NAMES) == 6


@pytest.mark.parametrize("preset", ["official", "tiny"])
def test_presets_load_and_keep_the_occ3d_grid(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.name == preset
    assert cfg.grid.shape == GRID_SHAPE
    assert cfg.grid.num_depth_bins == 88
    h, w = cfg.data.input_size
    assert h % 32 == 0 and w % 32 == 0


def test_config_rejects_unknown_keys_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key.*lr_typo"):
        config_from_dict({"train": {"lr_typo": 1.0}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  no_such_field: 3\n")
    with pytest.raises(ValueError, match="bad.yaml: unknown config key"):
        load_config(str(bad))
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_config("no-such-preset")


def test_yaml_override_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndata:\n  input_size: [256, 704]\ntrain:\n  lr: 0.001\n")
    cfg = load_config(str(path))
    assert cfg.data.input_size == (256, 704) and cfg.train.lr == 1e-3
    assert config_from_dict(cfg.to_dict()) == cfg

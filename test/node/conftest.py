"""Fixtures for the node tests: a generated scene, its bag, and a tiny checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest

VERSION = "v1.0-mini"


@pytest.fixture(scope="session")
def scene_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic scene of 4 key-frames converted with fusionocc-convert (MCAP)."""
    from fusionocc_core.synth import generate
    from rosbag_tools import convert

    root = tmp_path_factory.mktemp("node_data")
    data = generate(root / "data", scenes=1, keyframes=4, seed=11, version=VERSION)
    assert convert.main(["--data-root", str(data), "--version", VERSION, "--out", str(root / "bags")]) == 0
    (bag,) = (root / "bags").iterdir()
    return bag


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-preset checkpoint with seeded random weights, saved the way fusionocc-train saves."""
    import torch

    from fusionocc_core import build_model, load_config
    from fusionocc_core.checkpoint import save_checkpoint

    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, model, cfg)
    return path

"""Fixtures for the node tests: a generated scene, its bag, and a tiny checkpoint (each built once
per test run and shared by the xdist workers; read-only)."""
from __future__ import annotations

from pathlib import Path

import pytest

VERSION = "v1.0-mini"


@pytest.fixture(scope="session")
def scene_bag(build_once) -> Path:
    """One synthetic scene of 4 key-frames converted with fusionocc-convert (MCAP)."""

    def make(root: Path) -> None:
        from fusionocc_synth import generate
        from rosbag_tools import convert

        data = generate(root / "data", scenes=1, keyframes=4, seed=11, version=VERSION)
        assert convert.main(["--data-root", str(data), "--version", VERSION, "--out", str(root / "bags")]) == 0

    (bag,) = (build_once("node_scene_bag", make) / "bags").iterdir()
    return bag


@pytest.fixture(scope="session")
def tiny_checkpoint(build_once) -> Path:
    """A tiny-preset checkpoint with seeded random weights, saved the way fusionocc-train saves."""

    def make(folder: Path) -> None:
        import torch

        from fusionocc_core import build_model, load_config
        from fusionocc_core.checkpoint import save_checkpoint

        cfg = load_config("tiny")
        torch.manual_seed(0)
        save_checkpoint(folder / "tiny.pth", build_model(cfg), cfg)

    return build_once("node_tiny_checkpoint", make) / "tiny.pth"

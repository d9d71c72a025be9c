"""The tiny checkpoint shipped for the demo still fits the tiny preset key for key (a model change
that breaks it must also retrain it)."""
from __future__ import annotations

from pathlib import Path

from fusionocc_core import build_model, load_config
from fusionocc_core.checkpoint import load_checkpoint, load_model_weights

SHIPPED = Path(__file__).resolve().parents[2] / "demo" / "tiny_synth.pth"


def test_shipped_demo_checkpoint_loads_into_tiny() -> None:
    cfg = load_config("tiny")
    model = build_model(cfg)
    assert load_model_weights(model, SHIPPED).startswith("fusionocc_ros:")
    assert load_checkpoint(SHIPPED)["config"] == cfg

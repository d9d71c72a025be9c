"""The FusionOcc network: `build_model(preset name | YAML path | Config) -> FusionOcc`.

Submodules (swin, resnet, fpn_lss, view_transformer, lidar_encoder, bev_encoder, fusionocc) import
independently; `FusionOcc` is loaded on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionocc_core.config import Config, load_config

if TYPE_CHECKING:  # pragma: no cover
    from fusionocc_core.model.fusionocc import FusionOcc

__all__ = ["FusionOcc", "build_model"]


def build_model(cfg: Config | str | Path) -> "FusionOcc":
    """A freshly initialised FusionOcc for a Config, a preset name (`official`, `tiny`) or a YAML path."""
    from fusionocc_core.model.fusionocc import FusionOcc

    return FusionOcc(load_config(cfg))


def __getattr__(name: str) -> Any:
    if name == "FusionOcc":
        from fusionocc_core.model.fusionocc import FusionOcc

        return FusionOcc
    raise AttributeError(f"module 'fusionocc_core.model' has no attribute {name!r}")

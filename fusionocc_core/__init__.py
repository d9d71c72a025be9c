"""fusionocc_core: the ROS-free FusionOcc model, data layer, training and evaluation.

Pure PyTorch + numpy. Never imports rclpy (DESIGN.md layering rule).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["build_model", "load_config"]

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fusionocc_core.config import Config


def load_config(name_or_path: str) -> "Config":
    """Load a preset name (`official`, `tiny`) or a YAML file path into a Config."""
    from fusionocc_core.config import load_config as _load

    return _load(name_or_path)


def build_model(name_or_path: Any) -> "torch.nn.Module":
    """Build the FusionOcc nn.Module for a preset name, YAML path or Config."""
    from fusionocc_core.model import build_model as _build

    return _build(name_or_path)

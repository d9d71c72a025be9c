"""Training checkpoints: everything needed to continue a run exactly, written atomically.

The file is an ordinary fusionocc_ros checkpoint (fusionocc_core.checkpoint: format, config,
`state_dict`, `ema_state_dict`), so fusionocc-eval, the predictor and the node load it like any
other; the extra keys (optimizer, scheduler, EMA counter, AMP scaler, iteration, every rank's RNG
states) are plain data and tensors only, so it still loads with torch's weights_only safety.
Writing goes to a temporary sibling renamed over the target: a crash or a full disk never
replaces a good checkpoint with a broken one.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusionocc_core import checkpoint as ckpt_io
from fusionocc_core.cli import ToolError
from fusionocc_core.config import Config

TRAIN_STATE_VERSION = 1


class CheckpointError(ToolError):
    """A checkpoint could not be written or read; the message is one line naming the file."""


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and CUDA) as tensors and plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_checkpoint(path: str | Path, model: nn.Module, cfg: Config, **train_state: Any) -> Path:
    """Write model + config + train_state atomically; an I/O failure (disk full, ...) becomes a
    one-line CheckpointError and leaves any existing file at `path` untouched."""
    path = Path(path)
    try:
        ckpt_io.save_checkpoint(path, model, cfg, train_state_version=TRAIN_STATE_VERSION, **train_state)
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc).split(": ", 1)[-1]
        raise CheckpointError(f"saving checkpoint {path} failed ({reason}); the previous checkpoint is kept") from None
    return path


def load_train_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by save_train_checkpoint (CPU tensors; 'config' is a Config)."""
    path = Path(path)
    try:
        state = ckpt_io.load_checkpoint(path)
    except ckpt_io.CheckpointError as exc:
        raise CheckpointError(str(exc)) from None
    if "train_state_version" not in state:
        raise CheckpointError(f"checkpoint {path}: holds weights only, no training state to resume from")
    return state

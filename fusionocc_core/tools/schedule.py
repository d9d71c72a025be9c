"""The reference training schedule: AdamW, cosine LR with linear warm-up, MEGVII-style EMA.

Follows mmcv's CosineAnnealingLrUpdaterHook (by iteration, min_lr = lr * min_lr_ratio) with
linear warm-up (`lr * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio))` applied to the cosine
value), and BEVDet's MEGVIIEMAHook (decay * (1 - exp(-updates / 2000)) ramp).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fusionocc_core.config import TrainConfig

EMA_RAMP_UPDATES = 2000.0  # MEGVIIEMAHook: effective decay = decay * (1 - exp(-updates / 2000))


class WarmupCosine:
    """LR factor for iteration i (0-based): cosine from 1 to min_lr_ratio over max_iters, with warm-up."""

    def __init__(self, max_iters: int, warmup_iters: int, warmup_ratio: float, min_lr_ratio: float) -> None:
        self.max_iters = max(1, int(max_iters))
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, i: int) -> float:
        progress = min(i, self.max_iters) / self.max_iters
        factor = self.min_lr_ratio + 0.5 * (1.0 - self.min_lr_ratio) * (1.0 + math.cos(math.pi * progress))
        if i < self.warmup_iters:
            factor *= 1.0 - (1.0 - i / self.warmup_iters) * (1.0 - self.warmup_ratio)
        return factor


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW over all trainable parameters (weight decay on every tensor, as the reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr * lr_scale, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, max_iters: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepping once per iteration with the WarmupCosine factor."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(max_iters, cfg.warmup_iters, cfg.warmup_ratio, cfg.min_lr_ratio))


class ModelEMA:
    """Exponential moving average of a model's state dict (floating tensors; others are copied once)."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0) -> None:
        self.decay = float(decay)
        self.updates = int(updates)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def effective_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / EMA_RAMP_UPDATES))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step after an optimizer step: ema = d * ema + (1 - d) * current."""
        self.updates += 1
        d = self.effective_decay()
        current = model.state_dict()
        for k, v in self.state.items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(current[k].detach().to(v.dtype), alpha=1.0 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "state": self.state}

    def load_state_dict(self, sd: dict) -> None:
        self.decay = float(sd["decay"])
        self.updates = int(sd["updates"])
        missing = set(self.state) ^ set(sd["state"])
        if missing:
            raise KeyError(f"EMA state keys differ from the model: {sorted(missing)[:3]}")
        for k, v in sd["state"].items():
            self.state[k].copy_(v)

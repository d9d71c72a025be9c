"""A tiny model trained for a few steps on one sample overfits it: the learning signal reaches the loss.

The tiny preset runs on a 20 x 20 m crop of the Occ3D grid (50x50x16, same voxel size and height)
around the ego: every stage is the same, a step costs a fraction of the full grid's (the dense 3D
convolutions dominate there). The sample is one whose cars lie inside the crop."""
from __future__ import annotations

import dataclasses

import torch

from fusionocc_core.classes import CLASS_INDEX
from fusionocc_core.config import load_config
from fusionocc_core.losses import compute_losses
from fusionocc_core.model import build_model
from fusionocc_core.model.example_inputs import example_batch


def test_tiny_model_overfits_one_sample():
    cfg = load_config("tiny")
    full = cfg.grid
    cfg = dataclasses.replace(cfg, grid=dataclasses.replace(full, x=(-10.0, 10.0, full.x[2]), y=(-10.0, 10.0, full.y[2])))
    assert cfg.grid.shape == (50, 50, 16)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = example_batch(cfg, seed=38)
    assert int((batch["voxel_semantics"] == CLASS_INDEX["car"]).sum()) > 100  # not just ground and free space
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    history = []
    for _ in range(12):
        losses = compute_losses(model(batch), batch, cfg)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()} | {"total": float(total.detach())})
    first, last = history[0], history[-1]
    # The occupancy CE (the model's objective) falls 10x within 12 steps. The auxiliary depth BCE
    # trains through two dropouts (49 % LiDAR-depth input dropout, ASPP dropout 0.5) and falls
    # more slowly, so the weighted total is held to 4x.
    assert last["loss_occ"] < first["loss_occ"] / 10, history
    assert last["total"] < first["total"] / 4, history
    assert last["loss_depth"] < first["loss_depth"] and last["loss_seg"] < first["loss_seg"], history

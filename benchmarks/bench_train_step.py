"""Training-step time (forward + losses + backward + AdamW) of a preset on the CPU, three ways in one run:

* baseline      - contiguous (NCDHW) 3D volumes and the LSSFPN3D neck as the reference writes it
                  (upsample, concat, then the 1x1x1 conv on the full-resolution concat);
* channels_last - the dense 3D stages in channels_last_3d (what fusionocc-train does on CPU);
* + factorised neck - also the neck's 1x1x1 conv split per level before upsampling (the model's
                  LSSFPN3D; same weights, same numbers).
Same weights, same synthetic batch (`example_inputs.example_batch`), median of --iters steps.

    .venv/bin/python benchmarks/bench_train_step.py --preset tiny --iters 6 --threads 2
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from fusionocc_core.config import load_config
from fusionocc_core.losses import compute_losses
from fusionocc_core.model import build_model
from fusionocc_core.model.bev_encoder import LSSFPN3D
from fusionocc_core.model.example_inputs import example_batch


def concat_then_conv(self: LSSFPN3D, feats):
    """The reference order: upsample the coarse levels, concatenate, 1x1x1 conv + BN + ReLU."""
    x_8, x_16, x_32 = feats
    size = x_8.shape[2:]
    x = torch.cat([x_8, F.interpolate(x_16, size=size, mode="trilinear", align_corners=True),
                   F.interpolate(x_32, size=size, mode="trilinear", align_corners=True)], dim=1)
    return self.conv(x)


def time_steps(model: torch.nn.Module, batch: dict, cfg, iters: int, warmup: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        loss = sum(compute_losses(model(batch), batch, cfg).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="tiny", help="model preset name or YAML config path")
    p.add_argument("--iters", type=int, default=6, help="timed steps per variant (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--points", type=int, default=30000, help="LiDAR points in the synthetic batch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset)
    torch.manual_seed(0)
    reference = build_model(cfg).train()
    batch = example_batch(cfg, seed=0, num_points=args.points)
    variants = {"baseline (contiguous, concat-then-conv neck)": (False, True),
                "channels_last_3d": (True, True),
                "channels_last_3d + factorised neck": (True, False)}
    rows = []
    for name, (channels_last, reference_neck) in variants.items():
        model = copy.deepcopy(reference)
        model.set_channels_last_3d(channels_last)
        if reference_neck:
            neck = model.img_bev_encoder_neck
            neck.forward = concat_then_conv.__get__(neck)
        torch.manual_seed(1)  # the same dropout draws in every variant
        times = time_steps(model, batch, cfg, args.iters, args.warmup)
        rows.append((name, statistics.median(times), min(times)))
    base = rows[0][1]
    print(f"# {cfg.name}, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.iters} steps")
    print("\n| variant | step s (median) | min | speed-up vs baseline |\n|---|---:|---:|---:|")
    for name, med, best in rows:
        print(f"| {name} | {med:.2f} | {best:.2f} | {base / med:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

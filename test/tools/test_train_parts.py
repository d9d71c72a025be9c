"""Training building blocks against independent computations: LR schedule, EMA, CPU sync BN,
deterministic sampler, atomic checkpoint writes under a real write failure."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from fusionocc_core.config import TrainConfig
from fusionocc_core.tools.sampling import IterationSampler, SeededSamples, seed_from
from fusionocc_core.tools.schedule import EMA_RAMP_UPDATES, ModelEMA, WarmupCosine, build_optimizer, build_scheduler


def test_warmup_cosine_matches_mmcv_formula():
    f = WarmupCosine(max_iters=100, warmup_iters=10, warmup_ratio=1 / 3, min_lr_ratio=1e-3)
    regular = lambda i: 1e-3 + 0.5 * (1 - 1e-3) * (1 + math.cos(math.pi * i / 100))  # noqa: E731
    assert f(0) == pytest.approx(1 / 3)
    assert f(5) == pytest.approx(regular(5) * (1 - 0.5 * (1 - 1 / 3)))
    assert f(10) == pytest.approx(regular(10))
    assert f(50) == pytest.approx(0.5005)
    assert f(100) == pytest.approx(1e-3)


def test_scheduler_drives_optimizer_lr():
    cfg = TrainConfig(lr=1e-2, warmup_iters=4, max_iters=20)
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    f = WarmupCosine(20, 4, cfg.warmup_ratio, cfg.min_lr_ratio)
    np.testing.assert_allclose(seen, [1e-2 * f(i) for i in range(20)], rtol=1e-12)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == cfg.weight_decay


def test_ema_matches_megvii_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.999)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model(torch.randn(8, 4))  # moves BN running stats
        ema.update(model)
        d = 0.999 * (1 - math.exp(-n / EMA_RAMP_UPDATES))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = d * expected[k] + (1 - d) * v
    for k, v in ema.state.items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)
    assert int(ema.state["1.num_batches_tracked"]) == 0  # integer buffers are not averaged


def test_sampler_shards_global_batch_like_one_process():
    one = IterationSampler(7, batch_size=4, max_iters=5, seed=3)
    ranks = [IterationSampler(7, batch_size=2, max_iters=5, seed=3, rank=r, world_size=2) for r in range(2)]
    single = list(one)
    split = [list(r) for r in ranks]
    for it in range(5):
        assert single[4 * it:4 * it + 4] == split[0][2 * it:2 * it + 2] + split[1][2 * it:2 * it + 2]
    # each epoch is a permutation, and resuming at iteration k yields the tail of the full order
    order = [i for i, _ in IterationSampler(7, 1, 14, seed=3)]
    assert sorted(order[:7]) == list(range(7)) and sorted(order[7:]) == list(range(7)) and order[:7] != order[7:]
    assert list(IterationSampler(7, 4, 5, start_iter=2, seed=3)) == single[8:]
    assert list(IterationSampler(7, 4, 5, seed=4)) != single


def test_seeded_samples_depend_on_position_only():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return (np.random.rand(), torch.rand(1).item(), i)

    ds = SeededSamples(Noise(), seed=1)
    a = ds[(2, 17)]
    np.random.rand(), torch.rand(5)  # disturb global generators
    assert ds[(2, 17)] == a and ds[(2, 18)] != a and ds[(1, 17)][:2] == a[:2]
    assert seed_from(1, 2, 3) != seed_from(1, 2, 4)


SYNC_BN_WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from torch import nn
    from fusionocc_core.tools.sync_bn import convert_sync_batchnorm
    rank = int(sys.argv[1]); out = sys.argv[2]
    dist.init_process_group("gloo", init_method="file://" + sys.argv[3], rank=rank, world_size=2)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6, 2) * 3 + 1
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm3d(3)), "cpu")
    with torch.no_grad():
        bn[0].weight.copy_(torch.tensor([1.5, 0.5, 2.0])); bn[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    xi = x[2 * rank:2 * rank + 2].clone().requires_grad_(True)
    y = bn(xi)
    (y * torch.arange(y.numel()).reshape(y.shape).float().sin()).sum().backward()
    for p in bn.parameters():
        dist.all_reduce(p.grad)  # what DDP does (sum here; compared against the sum below)
    torch.save({"y": y.detach(), "gx": xi.grad, "gw": bn[0].weight.grad, "gb": bn[0].bias.grad,
                "rm": bn[0].running_mean, "rv": bn[0].running_var}, out)
    dist.destroy_process_group()
""")


def test_cpu_sync_batchnorm_equals_single_process_batchnorm(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SYNC_BN_WORKER)
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / f"r{r}.pt"), str(store)])
             for r in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    res = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]

    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 6, 2) * 3 + 1).requires_grad_(True)
    bn = nn.BatchNorm3d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    y = bn(x)
    w = torch.cat([torch.arange(y[:2].numel()).reshape(y[:2].shape).float().sin()] * 2)
    (y * w).sum().backward()
    torch.testing.assert_close(torch.cat([res[0]["y"], res[1]["y"]]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([res[0]["gx"], res[1]["gx"]]), x.grad, rtol=1e-4, atol=1e-5)
    for r in res:
        torch.testing.assert_close(r["gw"], bn.weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["gb"], bn.bias.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["rm"], bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["rv"], bn.running_var, rtol=1e-5, atol=1e-6)

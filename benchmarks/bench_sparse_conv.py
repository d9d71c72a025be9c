"""Sparse conv (fusionocc_core.ops.sparse_conv) vs a dense nn.Conv3d baseline on the same active sites.

The sites come from a LiDAR-like cloud (8 merged sweeps of a 32-ring sensor) voxelised exactly as
the LiDAR encoder does. For each layer type of the tiny preset's encoder the dense baseline runs
nn.Conv3d on the whole grid holding the same features (zeros elsewhere); both results are
checked to agree. Rulebook construction is timed separately (the encoder builds it once per site
set and its submanifold convs share it). Then the whole LiDAR encoder (tiny, and with --official
the released model's 0.05 m / 1600x1600x128 grid, where a dense grid is out of reach).

    .venv/bin/python benchmarks/bench_sparse_conv.py [--points 240000] [--repeats 3] [--threads 2]
        [--official [--official-repeats 1]] [--json PATH]

Prints a markdown table (best of the repeats after one warm-up, in seconds) and writes it as JSON
with --json PATH.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from fusionocc_core import load_config
from fusionocc_core.model.lidar_encoder import CustomSparseEncoder
from fusionocc_core.ops.sparse_conv import SparseConv3d, SparseTensor, SubMConv3d, build_strided_rulebook, build_subm_rulebook


def lidar_like_cloud(num_points: int, seed: int = 0) -> torch.Tensor:
    """8 sweeps from a 32-ring sensor moving 1.5 m per sweep: ground, a wavy wall, intensity, ring."""
    g = torch.Generator().manual_seed(seed)
    per = num_points // 8
    sweeps = []
    for s in range(8):
        az = torch.rand(per, generator=g) * 2 * math.pi
        ring = torch.randint(0, 32, (per,), generator=g)
        el = torch.deg2rad(-30 + 40 * ring / 31.0)
        r_ground = torch.where(el < 0, 1.8 / torch.tan(-el).clamp(min=1e-3), torch.full_like(el, 1e9))
        r = torch.minimum(r_ground, 14 + 6 * torch.sin(3 * az) + 4 * torch.rand(per, generator=g))
        z = r * torch.tan(el) + 0.03 * torch.randn(per, generator=g)
        sweeps.append(torch.stack([r * torch.cos(az) + 1.5 * s, r * torch.sin(az), z,
                                   torch.rand(per, generator=g) * 255, ring.float()], 1))
    return torch.cat(sweeps)


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best of `repeats` timed runs after one warm-up (the least disturbed run on a shared machine)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def fwd_bwd(run: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        for p in params:
            p.grad = None
        run().square().mean().backward()
    return step


def compare_layer(name: str, x: SparseTensor, conv, repeats: int) -> dict:
    """Time one sparse layer against nn.Conv3d on the dense grid with the same weights."""
    weight = conv.weight.detach().permute(4, 3, 0, 1, 2).contiguous()  # (C_out, C_in, kx, ky, kz)
    pad = tuple(k // 2 for k in conv.kernel_size) if conv.subm else conv.padding
    dense_in = x.dense()  # (1, C, X, Y, Z)
    mask = torch.zeros(dense_in.shape[0], *dense_in.shape[2:], dtype=torch.bool)
    mask[x.indices[:, 0], x.indices[:, 1], x.indices[:, 2], x.indices[:, 3]] = True

    def rulebook() -> None:
        x.cache.clear()
        if conv.subm:
            build_subm_rulebook(x, conv.kernel_size, conv.dilation)
        else:
            build_strided_rulebook(x, conv.kernel_size, conv.stride, conv.padding, conv.dilation)

    def dense_conv(inp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = F.conv3d(inp, w, stride=conv.stride, padding=pad)
        return out * mask[:, None] if conv.subm else out

    with torch.no_grad():
        got, ref = conv(x).dense(), dense_conv(dense_in, weight)
    err = float((got - ref).abs().max())
    t_rb = best_seconds(rulebook, repeats)
    rulebook()  # leave it cached: the timings below are the conv with a built rulebook
    with torch.no_grad():
        t_sp = best_seconds(lambda: conv(x), repeats)
        t_de = best_seconds(lambda: dense_conv(dense_in, weight), repeats)
    feats = x.features.detach().clone().requires_grad_(True)
    xs = x.replace_feature(feats)
    t_sp_b = best_seconds(fwd_bwd(lambda: conv(xs).features, [feats, conv.weight]), repeats)
    d_in, d_w = dense_in.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    t_de_b = best_seconds(fwd_bwd(lambda: dense_conv(d_in, d_w), [d_in, d_w]), repeats)
    return {
        "layer": name, "grid": list(x.spatial_shape), "sites": int(x.indices.shape[0]),
        "occupancy": x.indices.shape[0] / math.prod(x.spatial_shape), "max_abs_diff": err,
        "rulebook_s": t_rb, "sparse_fwd_s": t_sp, "dense_fwd_s": t_de, "sparse_fwd_bwd_s": t_sp_b, "dense_fwd_bwd_s": t_de_b,
    }


def encoder_timing(preset: str, cloud: torch.Tensor, repeats: int) -> dict:
    torch.manual_seed(0)
    enc = CustomSparseEncoder(load_config(preset))
    sites = int(enc.scatter_voxelize([cloud]).indices.shape[0])
    enc.eval()
    with torch.no_grad():
        t_fwd = best_seconds(lambda: enc([cloud]), repeats)
    enc.train()
    t_train = best_seconds(fwd_bwd(lambda: enc([cloud]), list(enc.parameters())), repeats)
    return {"preset": preset, "grid": list(enc.sparse_shape), "voxels": sites, "fwd_s": t_fwd, "fwd_bwd_s": t_train}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=240_000, help="points in the merged 8-sweep cloud (default 240000)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement after one warm-up (the best is reported; default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--official", action="store_true", help="also time the official encoder (0.05 m, 1600x1600x128 grid)")
    p.add_argument("--official-repeats", type=int, default=1, help="timed repeats for the official encoder (default 1)")
    p.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.points < 8 or args.repeats < 1 or args.threads < 1:
        p.error("--points >= 8, --repeats >= 1 and --threads >= 1")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    cloud = lidar_like_cloud(args.points)
    cfg = load_config("tiny")
    c0, c1 = cfg.model.lidar_channels[:2]
    enc = CustomSparseEncoder(cfg)
    x0 = enc.scatter_voxelize([cloud])
    torch.manual_seed(0)
    x0 = x0.replace_feature(torch.randn(x0.features.shape[0], c0))
    down = SparseConv3d(c0, c1, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        x1 = down(x0)
    x1 = SparseTensor(torch.randn(x1.features.shape[0], c1), x1.indices, x1.spatial_shape, 1)
    layers = [
        compare_layer(f"SubMConv3d k3 {c0}->{c0}", x0, SubMConv3d(c0, c0, 3, bias=False), args.repeats),
        compare_layer(f"SparseConv3d k3 s2 {c0}->{c1}", x0, down, args.repeats),
        compare_layer(f"SubMConv3d k3 {c1}->{c1} (after s2)", x1, SubMConv3d(c1, c1, 3, bias=False), args.repeats),
    ]
    encoders = [encoder_timing("tiny", cloud, args.repeats)]
    if args.official:
        encoders.append(encoder_timing("official", cloud, max(1, args.official_repeats)))

    load = (load_before, os.getloadavg()[0])
    print(f"# bench_sparse_conv: {args.points} points, torch {torch.__version__}, {args.threads} threads, "
          f"{platform.machine()}, python {platform.python_version()}, {os.cpu_count()} cores, "
          f"1-min load average {load[0]:.1f} at start / {load[1]:.1f} at end")
    print("\n| layer (tiny grid) | grid | sites (occupancy) | rulebook | sparse fwd | dense fwd | ratio | sparse fwd+bwd | dense fwd+bwd | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in layers:
        print(f"| {r['layer']} | {'x'.join(map(str, r['grid']))} | {r['sites']} ({100 * r['occupancy']:.2f} %) | {r['rulebook_s']:.3f} s | "
              f"{r['sparse_fwd_s']:.3f} s | {r['dense_fwd_s']:.3f} s | {r['dense_fwd_s'] / r['sparse_fwd_s']:.1f}x | "
              f"{r['sparse_fwd_bwd_s']:.3f} s | {r['dense_fwd_bwd_s']:.3f} s | {r['dense_fwd_bwd_s'] / r['sparse_fwd_bwd_s']:.1f}x | {r['max_abs_diff']:.1e} |")
    print("\n| LiDAR encoder | grid | voxels | forward (eval) | forward+backward (train) |")
    print("|---|---|---|---|---|")
    for e in encoders:
        print(f"| {e['preset']} | {'x'.join(map(str, e['grid']))} | {e['voxels']} | {e['fwd_s']:.3f} s | {e['fwd_bwd_s']:.3f} s |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"points": args.points, "threads": args.threads, "load_average": load, "layers": layers, "encoders": encoders}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

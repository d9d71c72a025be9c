"""The table sparse conv's row gather, three ways, at the official LiDAR encoder's layer shapes:
`index_select` (CUDA: one thread block per row), `torch.take` of the rows' machine words (what
`fusionocc_core.ops.sparse_conv._gather_rows` does: one thread per word) and `torch.gather` with an
expanded index; the same values are checked first.

    python benchmarks/bench_gather.py [--device cuda] [--repeats 20]

Prints the median ms of each per shape (bf16 rows of C channels; rows = 27 neighbours per site).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusionocc_core.ops.sparse_conv import _gather_rows  # noqa: E402

SHAPES = ((230_000, 16), (150_000, 32), (100_000, 48), (60_000, 64))  # (active sites, channels) per stage


def timed(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    """Median milliseconds of fn() after one warm-up call (device synchronised around each call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cuda", help="'cuda[:N]' or 'cpu'")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per variant")
    ap.add_argument("--max-rows", type=int, default=2_000_000, help="gathered rows per call at most")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# row gather on {name}, torch {torch.__version__}, bf16, median of {args.repeats}")
    for sites, channels in SHAPES:
        feats = torch.randn(sites + 1, channels, device=device, generator=gen).to(torch.bfloat16)
        index = torch.randint(0, sites + 1, (min(sites * 27, args.max_rows),), device=device, generator=gen)
        expanded = index[:, None].expand(-1, channels * 2 // 8)  # int64 words per row
        reference = feats.index_select(0, index)
        assert torch.equal(_gather_rows(feats, index, by_words=True), reference)
        assert torch.equal(torch.gather(feats.view(torch.int64), 0, expanded).view(torch.bfloat16), reference)
        a = timed(lambda: feats.index_select(0, index), device, args.repeats)
        b = timed(lambda: _gather_rows(feats, index, by_words=True), device, args.repeats)
        c = timed(lambda: torch.gather(feats.view(torch.int64), 0, expanded), device, args.repeats)
        print(f"C={channels:3d} rows={index.numel():8d}: index_select {a:7.3f} ms, take of words {b:7.3f} ms "
              f"({a / b:.1f}x), gather with an expanded index {c:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

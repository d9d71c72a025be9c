"""Cost of building one LSS voxel-pooling plan (frustum points -> voxel ranks) at the official
preset's size: six cameras x 88 depth bins x 32 x 88 feature pixels = 1.49M points. A moving ego
rebuilds the previous frame's plan every frame (its cameras moved relative to the key ego).

    python benchmarks/bench_lift_plan.py [--device cpu] [--repeats 10] [--tree DIR]

--tree times the `plan_voxel_pool` of another checkout (e.g. an old `git archive`) in the same run,
for before/after ratios. Prints the median ms per plan.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_plan(tree: Path):
    """plan_voxel_pool from `tree`'s fusionocc_core/ops/voxel_pool.py (a self-contained module)."""
    spec = importlib.util.spec_from_file_location(f"voxel_pool_{abs(hash(tree))}", tree / "fusionocc_core" / "ops" / "voxel_pool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plan_voxel_pool


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]'")
    ap.add_argument("--repeats", type=int, default=10, help="timed plans per tree")
    ap.add_argument("--tree", type=Path, action="append", default=[], help="another checkout to time too")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    # ego-frame frustum points spread over the grid and beyond it, as real frusta are
    coords = (torch.rand(1, 6, 88, 32, 88, 3, generator=gen) * torch.tensor([100.0, 100.0, 10.0])
              - torch.tensor([50.0, 50.0, 3.0])).to(device)
    grid = ((-40.0, -40.0, -1.0), (0.4, 0.4, 0.4), (200, 200, 16))
    print(f"# plan_voxel_pool of {coords[..., 0].numel()} frustum points on {device}, torch {torch.__version__}")
    reference = None
    for tree in [REPO, *args.tree]:
        plan = load_plan(tree.resolve())
        result = plan(coords, *grid)
        if reference is None:
            reference = result
        else:
            assert all(torch.equal(a, b) for a, b in zip(result[:3], reference[:3])), f"{tree}: a different plan"
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            plan(coords, *grid)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"{str(tree):40s} {statistics.median(times):8.2f} ms ({result[0].numel()} points kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

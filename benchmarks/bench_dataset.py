"""Dataset throughput (samples/s of OccDataset.__getitem__) for the tiny and official presets, train
and test transforms, on a synthetic nuScenes-format root, against baselines measured in the same run:

* "file floor": only reading what one sample needs (T x 6 JPEGs decoded at full size, the LiDAR
  sweeps, labels.npz) -- the cost no transform can avoid without smaller decoding;
* "no DCT decode": the dataset with JPEG reduced-size decoding switched off (full-size decode then
  area resize), to measure that optimisation.

    .venv/bin/python benchmarks/bench_dataset.py [--root DIR] [--keyframes 6] [--passes 2]

Without --root a 1-scene synthetic root is generated in a temporary folder (not timed).
Single process (num_workers=0): multiply by the DataLoader workers the cores can feed.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def per_sample_seconds(fn: Callable[[int], object], n: int, passes: int) -> list[float]:
    """Median-able list of per-sample times over `passes` passes of samples 0..n-1 (after a warm-up)."""
    fn(0)
    out = []
    for _ in range(passes):
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t0)
    return out


def file_floor(ds, i: int) -> None:
    """Read everything sample i needs, decoding JPEGs at full size, and nothing else."""
    from fusionocc_core.data.io import read_image, read_occ_gt, read_points

    info = ds.infos[i]
    frames = [info] + ds.history(i, ds.cfg.data.num_adj_img_frames)
    for frame in frames:
        for cam in ds.cfg.data.cameras:
            read_image(ds.root / frame["cams"][cam]["data_path"])
    for sweep in [info] + ds.history(i, ds.cfg.data.num_lidar_sweeps - 1):
        read_points(ds.root / sweep["lidar_path"])
    read_occ_gt(ds.root / info["occ_path"] / "labels.npz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="a prepared root (holding infos.pkl); default: generate one")
    parser.add_argument("--keyframes", type=int, default=6, help="key-frames of the generated scene (default 6)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes over all samples (default 2)")
    parser.add_argument("--presets", nargs="+", default=["tiny", "official"], help="presets to time (default: tiny official)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from fusionocc_core.data import dataset as dataset_mod
    from fusionocc_core.data import prepare
    from fusionocc_core.data.dataset import OccDataset

    tmp = None
    root = args.root
    if root is None:
        from fusionocc_core.synth import generate

        tmp = tempfile.TemporaryDirectory(prefix="bench_dataset_")
        root = generate(Path(tmp.name) / "root", scenes=1, keyframes=args.keyframes, seed=0)
    infos = root / "infos.pkl"
    if not infos.is_file():
        prepare.write_infos(prepare.create_infos(root, "v1.0-mini", progress=False), infos)

    torch.manual_seed(0)
    results = []
    print(f"machine: {platform.node()} {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'preset':9s} {'mode':22s} {'ms/sample':>10s} {'samples/s':>10s} {'x floor':>8s}")
    for preset in args.presets:
        ds_test = OccDataset(infos, root, preset, train=False)
        ds_train = OccDataset(infos, root, preset, train=True)
        n = len(ds_test)
        rows = {"file floor (read only)": per_sample_seconds(lambda i: file_floor(ds_test, i), n, args.passes),
                "test transform": per_sample_seconds(ds_test.__getitem__, n, args.passes),
                "train augmentation": per_sample_seconds(ds_train.__getitem__, n, args.passes)}
        original = dataset_mod.jpeg_reduction
        dataset_mod.jpeg_reduction = lambda src_hw, scale: 1  # baseline: full-size JPEG decode
        try:
            rows["test, no DCT decode"] = per_sample_seconds(ds_test.__getitem__, n, args.passes)
        finally:
            dataset_mod.jpeg_reduction = original
        floor = statistics.median(rows["file floor (read only)"])
        for mode, times in rows.items():
            med = statistics.median(times)
            results.append({"preset": preset, "mode": mode, "ms_per_sample": 1e3 * med, "samples_per_s": 1 / med,
                            "ratio_to_floor": med / floor, "n": len(times)})
            print(f"{preset:9s} {mode:22s} {1e3 * med:10.1f} {1 / med:10.2f} {med / floor:8.2f}")
        no_dct = statistics.median(rows["test, no DCT decode"]) / statistics.median(rows["test transform"])
        print(f"{preset:9s} speed-up of DCT-domain JPEG decoding (test): x{no_dct:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

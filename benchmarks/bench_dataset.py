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
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def per_sample_seconds(fn: Callable[[int], object], n: int, passes: int) -> tuple[list[float], list[float]]:
    """Per-sample (wall, process CPU) seconds over `passes` passes of samples 0..n-1, after a warm-up.
    CPU time counts every thread of this process, so it is the less load-sensitive of the two on a
    shared machine."""
    fn(0)
    wall, cpu = [], []
    for _ in range(passes):
        for i in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(i)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


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
        from fusionocc_synth import generate

        tmp = tempfile.TemporaryDirectory(prefix="bench_dataset_")
        root = generate(Path(tmp.name) / "root", scenes=1, keyframes=args.keyframes, seed=0)
    infos = root / "infos.pkl"
    if not infos.is_file():
        prepare.write_infos(prepare.create_infos(root, "v1.0-mini", progress=False), infos)

    torch.manual_seed(0)
    results = []
    print(f"machine: {platform.node()} {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    t0, c0 = time.perf_counter(), time.process_time()
    n_infos = len(prepare.create_infos(root, "v1.0-mini", progress=False)["infos"])
    prep = ((time.perf_counter() - t0) / n_infos, (time.process_time() - c0) / n_infos)
    print(f"fusionocc-prepare (incl. devkit load and imgseg): {1e3 * prep[0]:.1f} ms/sample wall, "
          f"{1e3 * prep[1]:.1f} ms CPU over {n_infos} samples")
    results.append({"preset": "-", "mode": "prepare", "ms_per_sample": 1e3 * prep[0], "cpu_ms_per_sample": 1e3 * prep[1]})
    print(f"{'preset':9s} {'mode':22s} {'wall ms':>8s} {'samples/s':>9s} {'x floor':>7s} {'CPU ms':>8s} {'x floor':>7s}"
          f" {'min CPU':>8s}")
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
        floor = [statistics.median(x) for x in rows["file floor (read only)"]]
        for mode, (wall, cpu) in rows.items():
            w, c = statistics.median(wall), statistics.median(cpu)
            results.append({"preset": preset, "mode": mode, "ms_per_sample": 1e3 * w, "samples_per_s": 1 / w,
                            "wall_ratio_to_floor": w / floor[0], "cpu_ms_per_sample": 1e3 * c,
                            "cpu_ratio_to_floor": c / floor[1], "min_cpu_ms": 1e3 * min(cpu), "n": len(wall)})
            print(f"{preset:9s} {mode:22s} {1e3 * w:8.1f} {1 / w:9.2f} {w / floor[0]:7.2f} {1e3 * c:8.1f} {c / floor[1]:7.2f}"
                  f" {1e3 * min(cpu):8.1f}")
        for i, kind in enumerate(("wall", "CPU")):
            ratio = statistics.median(rows["test, no DCT decode"][i]) / statistics.median(rows["test transform"][i])
            print(f"{preset:9s} DCT-domain JPEG decoding speed-up (test transform, {kind}): x{ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

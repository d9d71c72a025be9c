"""Benchmark fusionocc-synth: wall time to generate scenes x key frames with sweeps, with 1 and
N worker processes (same run), plus per-stage costs (camera render, LiDAR sweep, Occ3D key frame).

Usage: .venv/bin/python benchmarks/bench_synth.py [--scenes 2] [--keyframes 20] [--workers 2]
Prints a markdown table for BENCHMARKS.md. Measures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _stage_costs(repeats: int = 3) -> dict[str, float]:
    """Median seconds of one camera render (+JPEG), one LiDAR sweep and one Occ3D key frame."""
    from fusionocc_synth import occ3d
    from fusionocc_synth.camera import CameraRenderer, encode_jpeg
    from fusionocc_synth.lidar import LidarSimulator
    from fusionocc_synth.rig import CAMERA_CALIBRATIONS
    from fusionocc_synth.world import build_world

    world = build_world(0, 0, 9.6)
    cams = [CameraRenderer(c, 0.5) for c in CAMERA_CALIBRATIONS.values()]
    lidar = LidarSimulator()
    cam_t, lidar_t, occ_t = [], [], []
    for r in range(repeats):
        t = 1.0 + r
        start = time.perf_counter()
        renders = [c.render(world, t) for c in cams]
        for rd in renders:
            encode_jpeg(rd.rgb)
        cam_t.append((time.perf_counter() - start) / len(cams))
        start = time.perf_counter()
        sweep = lidar.sweep(world, t, np.random.default_rng(r))
        lidar_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        ego2road = world.ego_transform(t)
        occ3d.semantics(world, t, ego2road)
        occ3d.mask_lidar(lidar.origin, sweep.points_ego)
        views = [(np.linalg.inv(c.cam2ego) @ np.linalg.inv(world.ego_transform(t)) @ ego2road, c.K, rd.depth)
                 for c, rd in zip(cams, renders)]
        occ3d.mask_camera(views)
        occ_t.append(time.perf_counter() - start)
    return {"camera frame (render + JPEG)": float(np.median(cam_t)), "LiDAR sweep": float(np.median(lidar_t)),
            "Occ3D key frame (semantics + masks)": float(np.median(occ_t))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=2, help="scenes to generate (default 2)")
    p.add_argument("--keyframes", type=int, default=20, help="key frames per scene (default 20)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the measured run (default 2)")
    p.add_argument("--skip-serial", action="store_true", help="skip the 1-worker baseline run")
    args = p.parse_args(argv)
    from fusionocc_synth import generate

    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    rows = []
    try:
        runs = [args.workers] + ([] if args.skip_serial or args.workers == 1 else [1])
        for workers in runs:
            load = os.getloadavg()[0]
            start = time.perf_counter()
            cpu0 = os.times()
            root = generate(tmp / f"w{workers}", scenes=args.scenes, keyframes=args.keyframes, seed=0, sweeps=True,
                            workers=workers, progress=True)
            wall = time.perf_counter() - start
            cpu1 = os.times()
            cpu = (cpu1.children_user + cpu1.children_system + cpu1.user + cpu1.system
                   - cpu0.children_user - cpu0.children_system - cpu0.user - cpu0.system)
            size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
            files = sum(1 for f in root.rglob("*") if f.is_file())
            rows.append((workers, wall, cpu, files, size, load))
            shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.scenes} scenes x {args.keyframes} key frames with sweeps "
          f"({args.scenes * ((args.keyframes - 1) * 10 + 1)} LiDAR sweeps, "
          f"{args.scenes * ((args.keyframes - 1) * 6 + 1) * 6} images)\n")
    print("| workers | wall s | CPU s | files | MB | load avg at start |")
    print("|---|---|---|---|---|---|")
    for workers, wall, cpu, files, size, load in rows:
        print(f"| {workers} | {wall:.1f} | {cpu:.1f} | {files} | {size / 1e6:.0f} | {load:.1f} |")
    if len(rows) == 2:
        print(f"\nspeed-up {rows[0][0]} workers vs 1 worker: {rows[1][1] / rows[0][1]:.2f}x")
    print("\n| stage (one process) | median ms |")
    print("|---|---|")
    for name, sec in _stage_costs().items():
        print(f"| {name} | {1000 * sec:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

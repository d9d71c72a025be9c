"""`fusionocc-synth`: write a synthetic nuScenes + Occ3D dataset root from a random street world."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from fusionocc_core.cli import ToolError, ToolParser, UsageError, tool_main


def _parser() -> ToolParser:
    p = ToolParser(
        prog="fusionocc-synth",
        description="Generate a synthetic dataset in the exact nuScenes (v1.0 tables, 6 cameras, LIDAR_TOP, "
                    "lidarseg, maps) + Occ3D (gts/<scene>/<sample>/labels.npz) on-disk format. "
                    "Deterministic for a seed.")
    p.add_argument("out", type=Path, help="output dataset root; must not exist or be an empty directory")
    p.add_argument("--scenes", type=int, default=2, help="number of scenes (default 2); names come from the "
                   "devkit's split lists of --version (mini: up to 10, train and val interleaved)")
    p.add_argument("--keyframes", type=int, default=10, help="annotated samples per scene at 2 Hz (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the worlds (default 0)")
    p.add_argument("--sweeps", action="store_true", help="also write non-key-frame data: LIDAR_TOP at 20 Hz and "
                   "cameras at 12 Hz with nuScenes trigger offsets (default: key frames only)")
    p.add_argument("--version", default="v1.0-mini", help="dataset version folder name (default v1.0-mini)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default min(2, CPUs)); output does not depend on it")
    p.add_argument("--render-scale", type=float, default=0.5, help="ray-casting resolution of the camera images "
                   "relative to 1600x900, upsampled to full size for the JPEG (default 0.5; 1 = full resolution)")
    return p


@tool_main("fusionocc-synth")
def main(argv: list[str] | None = None) -> int:
    """Entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = _parser().parse_args(argv)
    from fusionocc_synth import generate

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be >= 1")
    start = time.perf_counter()
    try:
        root = generate(args.out, scenes=args.scenes, keyframes=args.keyframes, seed=args.seed, sweeps=args.sweeps,
                        version=args.version, workers=args.workers, render_scale=args.render_scale, progress=True)
    except (ValueError, FileExistsError) as exc:
        raise ToolError(str(exc)) from None
    elapsed = time.perf_counter() - start
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"fusionocc-synth: wrote {args.scenes} scenes x {args.keyframes} key frames "
          f"({'with' if args.sweeps else 'without'} sweeps) to {root}: {n_files} files, {size / 1e6:.1f} MB "
          f"in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

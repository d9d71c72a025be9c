"""Where does one `predict()` spend its time? torch.profiler over a few frames, with named regions.

Wraps the per-frame functions (input transforms, rulebook builders, sparse-conv GEMMs, the lift plan,
each model stage) in `record_function` regions without touching the library, profiles `--frames`
predict() calls after a warm-up and writes to --out:
  regions.txt   CPU and CUDA time per region (the regions nest: stage > step)
  kernels.txt   key_averages sorted by CUDA time, then by CPU time
  syncs.txt     every host-synchronising call (cudaStreamSynchronize, cudaMemcpy D2H, item, nonzero)
                grouped by the Python stack that issued it
  trace.json    a Chrome trace (chrome://tracing, ui.perfetto.dev) of the last frame, gzip'd

    python benchmarks/profile_predict.py --preset official --precision bf16 --points 250000 --out /tmp/prof
"""
from __future__ import annotations

import argparse
import functools
import gzip
import importlib
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import make_frames  # noqa: E402

from fusionocc_core.inference_options import PRECISION_NAMES  # noqa: E402
from fusionocc_core.predictor import Predictor  # noqa: E402

# (module, attribute) pairs wrapped in a region named after them; classes as "Class.method"
REGIONS = [
    ("fusionocc_core.predictor", "Predictor._camera_inputs"),
    ("fusionocc_core.predictor", "Predictor._lidar_batch"),
    ("fusionocc_core.predictor", "Predictor._frame_features"),
    ("fusionocc_core.predictor", "eval_image_tensors"),
    ("fusionocc_core.predictor", "eval_image_matrices"),
    ("fusionocc_core.predictor", "eval_points"),
    ("fusionocc_core.predictor", "sparse_depth_tensors"),
    ("fusionocc_core.predictor", "upload"),
    ("fusionocc_core.predictor", "Predictor._plan_lifts_on_side_stream"),
    ("fusionocc_core.predictor", "Predictor._lidar_volume_on_side_stream"),
    ("fusionocc_core.model.view_transformer", "CrossModalLSS.plan"),
    ("fusionocc_core.model.fusionocc", "FusionOcc.image_volume"),
    ("fusionocc_core.model.fusionocc", "FusionOcc.lidar_volume"),
    ("fusionocc_core.model.fusionocc", "FusionOcc.decode"),
    ("fusionocc_core.model.fusionocc", "sparse_depth_onehot"),
    ("fusionocc_core.model.lidar_encoder", "CustomSparseEncoder.scatter_voxelize"),
    ("fusionocc_core.model.lidar_encoder", "voxel_mean"),
    ("fusionocc_core.ops.sparse_conv", "build_subm_table"),
    ("fusionocc_core.ops.sparse_conv", "build_strided_table"),
    ("fusionocc_core.ops.sparse_conv", "_table_conv"),
    ("fusionocc_core.ops.sparse_conv", "SparseTensor.dense"),
    ("fusionocc_core.ops.sparse_conv", "SparseTensor.sorted_keys"),
]


def wrap_regions() -> list[str]:
    """Replace each REGIONS callable by a wrapper that runs it inside record_function(name)."""
    done = []
    for mod_name, attr in REGIONS:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        owner, name = mod, attr
        if "." in attr:
            cls_name, name = attr.split(".")
            owner = getattr(mod, cls_name, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if fn is None:
            continue

        def make(fn, label):
            @functools.wraps(fn)
            def wrapped(*a, **k):
                with torch.profiler.record_function(label):
                    return fn(*a, **k)
            return wrapped

        setattr(owner, name, make(fn, attr))
        done.append(attr)
    # stage timers of the model: a region per stage as well
    from fusionocc_core.model import fusionocc as fo
    timed = fo.FusionOcc.timed

    def timed_region(self, stage):
        import contextlib

        @contextlib.contextmanager
        def both():
            with torch.profiler.record_function(f"stage:{stage}"), timed(self, stage):
                yield
        return both()

    fo.FusionOcc.timed = timed_region
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="official", help="model preset (default official)")
    ap.add_argument("--precision", default="bf16", choices=PRECISION_NAMES, help="autocast dtype")
    ap.add_argument("--points", type=int, default=250_000, help="LiDAR points per frame (default 250000)")
    ap.add_argument("--frames", type=int, default=3, help="profiled predict() calls (default 3)")
    ap.add_argument("--warmup", type=int, default=4, help="predict() calls before profiling (default 4)")
    ap.add_argument("--stage-sync", action="store_true",
                    help="keep the per-stage synchronising timers on (default: off, as in the node)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (to check the script)")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wrapped = wrap_regions()
    cuda = args.device.startswith("cuda")
    pred = Predictor(args.preset, device=args.device, precision=args.precision if cuda else "fp32",
                     stage_timings=args.stage_sync)
    frames = make_frames(args.warmup + args.frames, (900, 1600), args.points)
    for f in frames[: args.warmup]:
        pred.predict(f)
    if cuda:
        torch.cuda.synchronize()
    if not args.stage_sync:  # the stage timers sync inside record_stages(); keep only their regions
        from fusionocc_core.model import fusionocc as fo
        fo.FusionOcc.timed = lambda self, stage: torch.profiler.record_function(f"stage:{stage}")
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    walls = []
    with torch.profiler.profile(activities=acts, with_stack=True, record_shapes=False) as prof:
        for f in frames[args.warmup:]:
            t0 = time.perf_counter()
            with torch.profiler.record_function("predict"):
                pred.predict(f)
            if cuda:
                torch.cuda.synchronize()
            walls.append((time.perf_counter() - t0) * 1e3)
    events = prof.key_averages()
    with open(out / "kernels.txt", "w") as fh:
        fh.write(f"{torch.cuda.get_device_name() if cuda else 'cpu'} torch {torch.__version__}; {args.frames} predict() calls, "
                 f"wall per call (ms): {[round(w, 1) for w in walls]}\n")
        fh.write(events.table(sort_by="cuda_time_total" if cuda else "self_cpu_time_total", row_limit=60, max_name_column_width=70) + "\n")
        fh.write(events.table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=70) + "\n")
    names = {"predict"} | {f"stage:{s}" for s in ("backbone", "fusion", "lift", "lidar_encoder", "encoder_3d", "head")}
    names |= set(wrapped)
    with open(out / "regions.txt", "w") as fh:
        fh.write(f"per call, ms (CPU = host wall inside the region; CUDA = kernel time it launched)\n")
        fh.write(f"{'region':45s} {'calls':>6s} {'CPU ms':>9s} {'CUDA ms':>9s}\n")
        for e in sorted(events, key=lambda e: -e.cpu_time_total):
            if e.key in names:
                dev = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0.0))
                fh.write(f"{e.key:45s} {e.count / args.frames:6.1f} {e.cpu_time_total / 1e3 / args.frames:9.2f} "
                         f"{dev / 1e3 / args.frames:9.2f}\n")
    sync_ops = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "aten::item",
                "aten::_local_scalar_dense", "aten::nonzero", "aten::unique", "aten::_unique2")
    by_stack = prof.key_averages(group_by_stack_n=8)
    with open(out / "syncs.txt", "w") as fh:
        for e in sorted(by_stack, key=lambda e: -e.count):
            if e.key in sync_ops:
                fh.write(f"{e.key} x{e.count / args.frames:.1f}/call cpu {e.cpu_time_total / 1e3 / args.frames:.2f} ms\n")
                for line in (e.stack or [])[:8]:
                    fh.write(f"    {line}\n")
    trace = out / "trace.json"
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(str(trace) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(trace)
    print(f"profiled {args.frames} calls; wall ms {[round(w, 1) for w in walls]}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

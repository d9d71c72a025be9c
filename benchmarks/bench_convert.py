"""Bag conversion throughput: fusionocc-convert (MCAP + zstd, 1 and 2 jobs; sqlite3) against two
baselines measured in the same run on the same source files: a plain file copy (disk bound) and
zstd-compressing the same bytes in 1 MiB chunks in one process (compression bound).

    .venv/bin/python benchmarks/bench_convert.py [--data-root D --version V] [--scenes 4 --keyframes 6]
                                                 [--sweeps] [--repeats 3] [--json out.json]

Without --data-root a synthetic root is generated first (not timed). Dataset loading (devkit
tables) is not timed either: each run times converting the already planned scenes, i.e. what
`fusionocc-convert` spends after its "dataset loading" phase. MB = 10^6 bytes of bag output.
"MB per CPU-second" (output MB / user+system CPU time of this process and its workers) is the
per-core throughput, robust to other jobs sharing the machine; wall MB/s is what a user waits for.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


class _NoBar:
    def update(self, n: int) -> None:
        pass


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished (joined) children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_runs(fn: Callable[[Path], int], work: Path, repeats: int) -> tuple[list[float], list[float], int]:
    """Run fn(out_dir) `repeats` times in fresh directories: (wall s, CPU s per run, bytes written)."""
    wall, cpu, nbytes = [], [], 0
    for i in range(repeats):
        out = work / f"run{i}"
        c0, t0 = cpu_seconds(), time.perf_counter()
        nbytes = fn(out)
        wall.append(time.perf_counter() - t0)
        cpu.append(cpu_seconds() - c0)
        shutil.rmtree(out)
    return wall, cpu, nbytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="existing nuScenes-format root (default: generate a synthetic one)")
    parser.add_argument("--version", default="v1.0-mini", help="table version of the root (default v1.0-mini)")
    parser.add_argument("--scenes", type=int, default=4, help="scenes to generate / convert (default 4)")
    parser.add_argument("--keyframes", type=int, default=6, help="key-frames per generated scene (default 6)")
    parser.add_argument("--sweeps", action="store_true", help="generate and convert every sweep, not only key-frames")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (default 3)")
    parser.add_argument("--work", help="scratch directory (default: a temporary directory, removed at the end)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.keyframes < 1 or args.repeats < 1:
        parser.error("--scenes, --keyframes and --repeats must be >= 1")

    from backports import zstd

    from rosbag_tools.convert import dir_size, run_conversion
    from rosbag_tools.plan import load_nuscenes, plan_scene, select_scenes

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_convert-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.data_root:
            root = Path(args.data_root)
        else:
            from fusionocc_synth import generate

            print(f"generating {args.scenes} scene(s) x {args.keyframes} key-frames (sweeps={args.sweeps}) ...",
                  file=sys.stderr)
            root = generate(work / "root", scenes=args.scenes, keyframes=args.keyframes, sweeps=args.sweeps,
                            version=args.version, progress=True)
        nusc = load_nuscenes(root, args.version)
        plans = [plan_scene(nusc, s, sweeps=args.sweeps) for s in select_scenes(nusc, None)[: args.scenes]]
        del nusc
        sources = [r.path for p in plans for r in p.readings] + [g.path for p in plans for g in p.gts]
        source_bytes = sum(os.path.getsize(f) for f in sources)
        keyframes = sum(p.keyframes for p in plans)

        def copy_files(out: Path) -> int:  # disk-bound baseline: the same bytes read and written once
            out.mkdir()
            for i, f in enumerate(sources):
                shutil.copyfile(f, out / f"{i}")
            return dir_size(out)

        def zstd_chunks(out: Path) -> int:  # compression-bound baseline: MCAP chunking + zstd alone
            out.mkdir()
            with open(out / "blob.zst", "wb") as dst:
                buf = bytearray()
                for f in sources:
                    buf += Path(f).read_bytes()
                    while len(buf) >= 1 << 20:
                        dst.write(zstd.compress(bytes(buf[: 1 << 20])))
                        del buf[: 1 << 20]
                dst.write(zstd.compress(bytes(buf)))
            return dir_size(out)

        def converter(storage: str, jobs: int) -> Callable[[Path], int]:
            def run(out: Path) -> int:
                out.mkdir()
                results = run_conversion(plans, out, storage, jobs, "bench", _NoBar())
                return sum(r.bytes_written for r in results)
            return run

        configs = [
            ("file copy of the sources (baseline, 1 process)", copy_files, 1),
            ("zstd of the sources in 1 MiB chunks (baseline, 1 process)", zstd_chunks, 1),
            ("fusionocc-convert mcap+zstd --jobs 1", converter("mcap", 1), 1),
            ("fusionocc-convert mcap+zstd --jobs 2", converter("mcap", 2), 2),
            ("fusionocc-convert sqlite3 --jobs 1", converter("sqlite3", 1), 1),
        ]
        converter("mcap", 1)(work / "warmup")  # first-call code generation, page cache
        shutil.rmtree(work / "warmup")
        rows = []
        for label, fn, procs in configs:
            seconds, cpu, nbytes = timed_runs(fn, work, args.repeats)
            med, cpu_med = statistics.median(seconds), statistics.median(cpu)
            rows.append({"config": label, "processes": procs, "bytes": nbytes, "median_s": med,
                         "min_s": min(seconds), "cpu_s": cpu_med, "mb_s": nbytes / 1e6 / med,
                         "mb_per_cpu_s": nbytes / 1e6 / cpu_med, "keyframes_s": keyframes / med})
        copy_rate = rows[0]["mb_s"]
        for row in rows:
            row["vs_copy"] = row["mb_s"] / copy_rate
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}); python {platform.python_version()}")
    print(f"data: {len(plans)} scene(s), {keyframes} key-frames, sweeps={args.sweeps}, "
          f"{len(sources)} source files, {source_bytes / 1e6:.1f} MB; {args.repeats} timed runs each (median)")
    print("| configuration | output MB | wall s, median (min) | CPU s | MB/s (wall) | MB per CPU-second | "
          "key-frames/s (wall) | wall MB/s vs copy | per CPU-s vs zstd alone |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['bytes'] / 1e6:.1f} | {r['median_s']:.2f} ({r['min_s']:.2f}) | {r['cpu_s']:.2f} | "
              f"{r['mb_s']:.0f} | {r['mb_per_cpu_s']:.0f} | {r['keyframes_s']:.1f} | {r['vs_copy']:.2f}× | "
              f"{r['mb_per_cpu_s'] / rows[1]['mb_per_cpu_s']:.2f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "source_bytes": source_bytes, "keyframes": keyframes,
                                               "sweeps": args.sweeps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

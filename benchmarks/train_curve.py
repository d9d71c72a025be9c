"""Training-curve experiment: does `fusionocc-train --config tiny` learn on 2 CPU cores in ~20 min?

Steps (each skipped when its output already exists, so an interrupted run can be continued):
1. a synthetic dataset (fusionocc-synth): `--scenes` scenes x `--keyframes` key frames;
2. info files (fusionocc-prepare): the first scenes for training, the last `--val-scenes` held out;
3. trivial baselines on the held-out scenes: all free, and the per-height majority class of the
   training ground truth (computed separately for each scoring mask, which favours the baseline);
4. a short timing probe, then `fusionocc-train` with `--max-iters` chosen so that the training
   itself takes about `--train-minutes`, validating on the held-out scenes every `--val-every`;
5. `fusionocc-eval` of the final checkpoint on the held-out scenes, scored without mask (the tiny
   preset trains without the camera mask, as the released model) and with the camera mask.
Writes <work>/results.json and prints the markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fusionocc_core.classes import FREE_LABEL, NUM_CLASSES
from fusionocc_core.metrics import ConfusionAccumulator, select_mask
from fusionocc_core.tools.score import load_ground_truth, score_dirs

BIN = Path(sys.executable).parent
MODULES = {"fusionocc-synth": "fusionocc_synth.cli", "fusionocc-prepare": "fusionocc_core.data.prepare",
           "fusionocc-train": "fusionocc_core.tools.train", "fusionocc-eval": "fusionocc_core.tools.evaluate",
           "fusionocc-score": "fusionocc_core.tools.score"}


def tool(name: str) -> list[str]:
    """The command of a fusionocc-* tool: its console script, or `python -m` where the package is
    not installed (e.g. a GPU machine running from a copied tree with PYTHONPATH)."""
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", MODULES[name]]


def sh(cmd: list[str], env: dict | None = None) -> None:
    """Run a command, echoing it; raise on failure."""
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def scene_names(root: Path, version: str = "v1.0-mini") -> list[str]:
    return [s["name"] for s in json.loads((root / version / "scene.json").read_text())]


def gt_files(root: Path, scenes: list[str]) -> list[Path]:
    return sorted(p for s in scenes for p in (root / "gts" / s).glob("*/labels.npz"))


def baselines(root: Path, train_scenes: list[str], val_scenes: list[str]) -> dict[str, dict[str, float]]:
    """mIoU (percent) of 'all free' and 'per-height majority class' on the held-out scenes, per mask."""
    out: dict[str, dict[str, float]] = {"all_free": {}, "height_majority": {}}
    train_gts = [load_ground_truth(p) for p in gt_files(root, train_scenes)]
    val_gts = [load_ground_truth(p) for p in gt_files(root, val_scenes)]
    for mask in ("none", "camera"):
        counts = np.zeros((train_gts[0].semantics.shape[2], NUM_CLASSES), np.int64)  # (Z, C)
        for gt in train_gts:
            keep = select_mask(mask, gt.mask_camera, gt.mask_lidar)
            keep = np.ones(gt.semantics.shape, bool) if keep is None else keep
            for z in range(counts.shape[0]):
                counts[z] += np.bincount(gt.semantics[:, :, z][keep[:, :, z]], minlength=NUM_CLASSES)
        majority = counts.argmax(1).astype(np.uint8)  # (Z,)
        free_acc, major_acc = ConfusionAccumulator(), ConfusionAccumulator()
        for gt in val_gts:
            keep = select_mask(mask, gt.mask_camera, gt.mask_lidar)
            free_acc.update(gt.semantics, np.full_like(gt.semantics, FREE_LABEL), keep)
            major_acc.update(gt.semantics, np.broadcast_to(majority, gt.semantics.shape).copy(), keep)
        out["all_free"][mask] = free_acc.miou()
        out["height_majority"][mask] = major_acc.miou()
        out.setdefault("majority_classes", {})[mask] = majority.tolist()
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_cmd(args, cfg: str, data: Path, infos: Path, work: Path, max_iters: int, val_infos: Path | None,
              val_every: int) -> list[str]:
    base = ["--config", cfg, "--data-root", str(data), "--infos", str(infos), "--work-dir", str(work),
            "--max-iters", str(max_iters), "--device", args.device, "--log-interval", str(args.log_every),
            "--checkpoint-interval", str(val_every), "--seed", str(args.seed), "--batch-size", str(args.batch_size),
            "--no-progress"] + (["--num-workers", str(args.num_workers)] if args.num_workers is not None else []) \
        + (["--nondeterministic"] if args.nondeterministic else [])
    if val_infos is not None:
        base += ["--val-infos", str(val_infos), "--val-interval", str(val_every)]
    if args.ranks > 1:
        return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(args.ranks),
                "-m", "fusionocc_core.tools.train", *base, "--threads", "1"]
    return [*tool("fusionocc-train"), *base, "--threads", str(args.threads)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("work_dirs/train_curve"), help="output directory")
    p.add_argument("--data", type=Path, default=None, help="dataset root (default: <work>/data, generated)")
    p.add_argument("--scenes", type=int, default=10, help="scenes to generate (train + held out)")
    p.add_argument("--val-scenes", type=int, default=2, help="scenes held out for validation (the last ones)")
    p.add_argument("--keyframes", type=int, default=10, help="key frames per generated scene")
    p.add_argument("--config", default="tiny", help="model config (preset name or YAML)")
    p.add_argument("--train-minutes", type=float, default=20.0, help="training time budget (validation excluded)")
    p.add_argument("--val-points", type=int, default=4, help="validations during training (evenly spaced)")
    p.add_argument("--ranks", type=int, default=1, help="processes (torchrun + gloo when > 1, 1 thread each)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of a one-process run")
    p.add_argument("--device", default="cpu", help="training device: cpu or cuda (evaluation follows it)")
    p.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: the config's)")
    p.add_argument("--version", default="v1.0-mini",
                   help="dataset version of the generated world (v1.0-trainval allows more than 10 scenes)")
    p.add_argument("--synth-workers", type=int, default=2, help="fusionocc-synth worker processes")
    p.add_argument("--nondeterministic", action="store_true",
                   help="pass --nondeterministic to fusionocc-train (faster on CUDA; resume no longer bit-exact)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per rank and step")
    p.add_argument("--log-every", type=int, default=5, help="iterations per log.csv row")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--data-seed", type=int, default=1, help="fusionocc-synth seed")
    p.add_argument("--max-iters", type=int, default=None,
                   help="train exactly this many iterations instead of sizing the run from the probe")
    p.add_argument("--probe-iters", type=int, default=4, help="iterations of the timing probe (more on a GPU, where "
                   "the first ones pay for data-loader start-up and autotuning)")
    p.add_argument("--probe-only", action="store_true", help="stop after the baselines and the timing probe")
    p.add_argument("--report-only", action="store_true", help="print the markdown of an existing <work>/results.json")
    args = p.parse_args(argv)

    work = args.work.resolve()
    if args.report_only:
        print_markdown(json.loads((work / "results.json").read_text()))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    data = (args.data or work / "data").resolve()
    t0 = time.time()
    if not (data / "gts").is_dir():
        sh([*tool("fusionocc-synth"), str(data), "--scenes", str(args.scenes), "--keyframes", str(args.keyframes),
            "--seed", str(args.data_seed), "--render-scale", "0.25", "--version", args.version,
            "--workers", str(args.synth_workers)])
    names = scene_names(data, args.version)
    train_scenes, val_scenes = names[:-args.val_scenes], names[-args.val_scenes:]
    infos = {"train": work / "train.pkl", "val": work / "val.pkl"}
    for split, scenes in (("train", train_scenes), ("val", val_scenes)):
        if not infos[split].is_file():
            sh([*tool("fusionocc-prepare"), "--data-root", str(data), "--version", args.version,
                "--out", str(infos[split]), "--scenes", *scenes, "--quiet"])

    base_path = work / "baselines.json"
    if not base_path.is_file():
        base_path.write_text(json.dumps(baselines(data, train_scenes, val_scenes), indent=2))
    base = json.loads(base_path.read_text())
    print("baselines (mIoU on held-out scenes):", {k: v for k, v in base.items() if k != "majority_classes"})

    # timing probe: a few iterations of the same command, without validation
    probe = work / "probe"
    if not (probe / "log.csv").is_file():
        sh(train_cmd(dict_args(args, log_every=1), args.config, data, infos["train"], probe, args.probe_iters, None,
                     args.probe_iters))
    rows = read_csv(probe / "log.csv")
    steps = np.diff([float(r["train_s"]) for r in rows])  # skip the first (warm-up)
    per_iter = float(np.median(steps[len(steps) // 2:]))  # the second half: the steady state
    max_iters = args.max_iters or max(10, int(args.train_minutes * 60 / per_iter))
    val_every = max(1, max_iters // args.val_points)
    print(f"probe: {per_iter:.1f} s/iteration -> --max-iters {max_iters}, validation every {val_every}")
    if args.probe_only:
        return 0

    run_dir = work / "run"
    if not (run_dir / "latest.pth").is_file() or \
            int(read_csv(run_dir / "log.csv")[-1]["iteration"]) < max_iters:
        resume = ["--resume"] if (run_dir / "latest.pth").is_file() else []
        sh(train_cmd(args, args.config, data, infos["train"], run_dir, max_iters, infos["val"], val_every) + resume)

    preds = work / "preds"
    scores = {}
    for mask in ("none", "camera"):
        out = work / f"eval_{mask}.json"
        if not out.is_file():
            if mask == "none":
                sh([*tool("fusionocc-eval"), "--config", args.config, "--checkpoint", str(run_dir / "latest.pth"),
                    "--data-root", str(data), "--infos", str(infos["val"]), "--out", str(preds), "--mask", mask,
                    "--json", str(out), "--device", args.device, "--no-progress"])
            else:
                sh([*tool("fusionocc-score"), "--pred-dir", str(preds), "--gt-dir", str(data / "gts"),
                    "--mask", mask, "--allow-missing", "--json", str(out), "--quiet"])
        scores[mask] = json.loads(out.read_text())

    log, val = read_csv(run_dir / "log.csv"), read_csv(run_dir / "val.csv")
    results = {"per_iter_probe_s": per_iter, "max_iters": max_iters, "train_s": float(log[-1]["train_s"]),
               "wall_s": float(log[-1]["elapsed_s"]), "baselines": base,
               "curve": [{"iteration": int(r["iteration"]), "loss": float(r["loss"]), "loss_occ": float(r["loss_occ"]),
                          "lr": float(r["lr"]), "train_s": float(r["train_s"])} for r in log],
               "val_curve": [{"iteration": int(r["iteration"]), "miou": float(r["miou"]), "mask": r["mask"],
                              "train_s": _train_s_at(log, int(r["iteration"]))} for r in val],
               "final": scores, "experiment_s": time.time() - t0,
               "ranks": args.ranks, "batch_size": args.batch_size, "threads": args.threads, "device": args.device,
               "scenes": args.scenes, "version": args.version}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print_markdown(results)
    return 0


def _train_s_at(log: list[dict[str, str]], iteration: int) -> float:
    """Training seconds (validation excluded) at the first log row at or after `iteration`."""
    rows = [r for r in log if int(r["iteration"]) >= iteration]
    return float(rows[0]["train_s"]) if rows else float("nan")


def dict_args(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def print_markdown(r: dict) -> None:
    b = r["baselines"]
    better = {m: max(b["all_free"][m], b["height_majority"][m]) for m in ("none", "camera")}
    print("\n| mask | all free | per-height majority | tiny after training | ratio to better baseline |")
    print("|---|---|---|---|---|")
    for m in ("none", "camera"):
        got = r["final"][m]["miou"]
        print(f"| {m} | {b['all_free'][m]:.2f} | {b['height_majority'][m]:.2f} | {got:.2f} | "
              f"{got / better[m]:.1f}x |" if better[m] > 0 else f"| {m} | 0 | 0 | {got:.2f} | - |")
    print("\n| iteration | train s | loss | loss_occ | lr |")
    print("|---|---|---|---|---|")
    for row in r["curve"]:
        print(f"| {row['iteration']} | {row['train_s']:.0f} | {row['loss']:.3f} | {row['loss_occ']:.3f} | {row['lr']:.2e} |")
    print("\n| iteration | train s | val mIoU | mask |")
    print("|---|---|---|---|")
    for row in r["val_curve"]:
        print(f"| {row['iteration']} | {row.get('train_s', float('nan')):.0f} | {row['miou']:.2f} | {row.get('mask', 'none')} |")


if __name__ == "__main__":
    sys.exit(main())

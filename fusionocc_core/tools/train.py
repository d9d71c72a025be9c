"""fusionocc-train: train FusionOcc with the reference schedule, on CPU, one GPU or under torchrun.

One process: `fusionocc-train --config tiny --data-root D --infos F --work-dir W`.
Distributed: `torchrun --nproc_per_node K -m fusionocc_core.tools.train ...` (or the console
script under torchrun): DDP over gloo (CPU) or nccl (GPU), synchronized batch norm, global batch =
per-rank batch x K. The run is a pure function of (config, data, seed, iteration): data order and
augmentation seeds come from the iteration count, so `--resume` continues bit-exactly.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fusionocc_core.cli import ToolError, ToolParser, UsageError, tool_main
from fusionocc_core.config import Config, load_config
from fusionocc_core.data.dataset import to_device
from fusionocc_core.tools.atomic import atomic_write_bytes
from fusionocc_core.tools.sampling import IterationSampler, SeededSamples, seed_everything, seed_from
from fusionocc_core.tools.schedule import ModelEMA, build_optimizer, build_scheduler
from fusionocc_core.tools.sync_bn import convert_sync_batchnorm
from fusionocc_core.tools.train_state import load_train_checkpoint, rng_state, save_train_checkpoint, set_rng_state

LATEST = "latest.pth"
RUN_FILES = (LATEST, "iter_*.pth", "log.csv", "val.csv", "log.tmp", "val.tmp", f".{LATEST}.link", ".*.pth.*.tmp")


class TrainError(ToolError):
    """A fatal, user-facing training problem (one line)."""


def prepare_work_dir(work: Path, resume: bool, overwrite: bool, is_main: bool = True) -> None:
    """Check the work dir before anything is built: a directory (created if missing), empty unless
    --resume (continue) or --overwrite (the previous run's checkpoints and logs are deleted by the
    main rank), and writable. Every problem is a one-line TrainError."""
    work = Path(work)
    if work.exists() and not work.is_dir():
        raise TrainError(f"--work-dir {work} exists and is not a directory")
    if resume and overwrite:
        raise TrainError("--resume and --overwrite exclude each other")
    if resume and not (work / LATEST).is_file():
        raise TrainError(f"--resume: no checkpoint {work / LATEST} to resume from")
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(f"--work-dir {work}: cannot create it ({exc.strerror or exc})") from None
    entries = sorted(p.name for p in work.iterdir() if not p.name.startswith(".write-test-"))  # other ranks' probes
    if entries and not resume and not overwrite:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise TrainError(f"--work-dir {work} is not empty ({shown}): pass --resume to continue that run, "
                         "--overwrite to start over (deletes its checkpoints and logs), or choose another --work-dir")
    try:  # writable? find out now, not after the first iteration
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=work)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TrainError(f"--work-dir {work} is not writable ({exc.strerror or exc})") from None
    if overwrite and is_main:
        for pattern in RUN_FILES:
            for old in work.glob(pattern):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()


@dataclass
class DistInfo:
    """Where this process sits in the (possibly single-process) job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> DistInfo:
    """Read torchrun's environment; init gloo (CPU) or nccl (CUDA) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class CsvLog:
    """Append-only CSV with a fixed header; on resume, rows past the resumed iteration are dropped."""

    def __init__(self, path: Path, resume_iter: int | None) -> None:
        self.path = path
        self.header: list[str] | None = None
        if resume_iter is not None and path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.header = rows[0]
                kept = [r for r in rows[1:] if r and int(float(r[0])) <= resume_iter]
                text = io.StringIO(newline="")
                csv.writer(text).writerows([self.header, *kept])
                atomic_write_bytes(path, text.getvalue().encode())
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        if self.header is None:
            self.header = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.header)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.header])


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def build_dataset(infos: Path, data_root: Path, cfg: Config, train: bool):
    """OccDataset for a split; a bad path is a one-line TrainError."""
    from fusionocc_core.data.dataset import OccDataset
    from fusionocc_core.data.io import DataError

    if not Path(infos).is_file():
        raise TrainError(f"--infos {infos}: file not found")
    if not Path(data_root).is_dir():
        raise TrainError(f"--data-root {data_root}: directory not found")
    try:
        return OccDataset(infos, data_root, cfg, train=train)
    except DataError as exc:
        raise TrainError(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(f"dataset {infos}: {exc}") from None


def build_loader(dataset, cfg: Config, sampler: IterationSampler, seed: int, num_workers: int) -> DataLoader:
    from fusionocc_core.data.dataset import collate

    return DataLoader(SeededSamples(dataset, seed), batch_size=sampler.batch_size, sampler=sampler,
                      collate_fn=collate, num_workers=num_workers, persistent_workers=False,
                      pin_memory=False, drop_last=False)


def reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalars over ranks (identity on one process)."""
    if not info.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


@dataclass
class TrainOptions:
    """Everything a training run needs besides the config (the parsed command line)."""

    data_root: Path
    infos: Path
    work_dir: Path
    resume: bool = False
    max_iters: int | None = None
    device: str | None = None
    amp: bool = False
    val_infos: Path | None = None
    val_interval: int | None = None
    val_mask: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    seed: int = 0
    checkpoint_interval: int | None = None
    log_interval: int | None = None
    keep_checkpoints: int = 2
    overwrite: bool = False
    find_unused_parameters: bool = False
    threads: int | None = None
    progress: bool | None = None
    deterministic: bool = True
    disable_dropout: bool = False
    channels_last: bool = True


def _configure_torch(opts: TrainOptions, info: DistInfo) -> None:
    """Deterministic algorithms (bit-exact resume) and the intra-op thread count of this process."""
    if opts.deterministic:
        # bit-exact resume: e.g. CPU index_put_(accumulate=True), the backward of advanced indexing,
        # uses atomic float adds across threads unless deterministic algorithms are on
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if opts.amp and info.device.type != "cuda":
        raise TrainError("--amp needs --device cuda (mixed precision runs on CUDA only)")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    elif info.distributed and info.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


@dataclass
class _Run:
    """What a training run updates: the model (and its DDP wrapper), optimizer, schedule, EMA, scaler."""

    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEMA
    scaler: torch.amp.GradScaler
    start_iter: int = 0


def _build_run(cfg: Config, opts: TrainOptions, info: DistInfo, max_iters: int) -> tuple[Config, _Run]:
    """Model, optimizer, schedule, EMA and scaler, built identically on every rank from the seed
    (before a resume loads their states); returns the config with dropout off if asked."""
    from fusionocc_core.model import build_model

    if opts.disable_dropout:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, depth_dropout_prob=0.0))
    seed_everything(seed_from(opts.seed, 0))
    model = build_model(cfg)
    if opts.disable_dropout:
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = 0.0
    if info.distributed:
        model = convert_sync_batchnorm(model, info.device.type)
    model.to(info.device)
    if info.device.type == "cpu" and opts.channels_last:
        model.set_channels_last_3d(True)  # same maths, 1.25x faster steps on CPU (BENCHMARKS.md)
    optimizer = build_optimizer(model, cfg.train)
    run = _Run(model, model, optimizer, build_scheduler(optimizer, cfg.train, max_iters),
               ModelEMA(model, cfg.train.ema_decay), torch.amp.GradScaler("cuda", enabled=opts.amp))
    return cfg, run


def _resume(run: _Run, latest: Path, cfg: Config, opts: TrainOptions, info: DistInfo, max_iters: int,
            global_batch: int) -> None:
    """Load every state of `latest` into `run` after checking it belongs to the same run."""
    if not latest.is_file():
        raise TrainError(f"--resume: no checkpoint {latest} to resume from")
    ckpt = load_train_checkpoint(latest)
    if ckpt["config"].to_dict()["model"] != cfg.to_dict()["model"]:
        raise TrainError(f"--resume: {latest} was trained with a different model config")
    if ckpt.get("max_iters") != max_iters:
        raise TrainError(f"--resume: {latest} belongs to a run of {ckpt.get('max_iters')} iterations, "
                         f"not {max_iters} (the schedule would change)")
    if bool(ckpt.get("dropout_disabled")) != opts.disable_dropout:
        raise TrainError(f"--resume: {latest} was trained with{'' if ckpt.get('dropout_disabled') else 'out'} "
                         "--disable-dropout; pass the same options")
    if ckpt.get("global_batch") != global_batch:
        raise TrainError(f"--resume: {latest} used a global batch of {ckpt.get('global_batch')}, "
                         f"this run has {global_batch}")
    run.model.load_state_dict(ckpt["state_dict"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.ema.load_state_dict(dict(ckpt["ema"], state=ckpt["ema_state_dict"]))
    if opts.amp and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.start_iter = int(ckpt["iteration"])
    states = ckpt.get("rng", [])
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])


class _Checkpointer:
    """Writes iter_N.pth (all states, every rank's RNG), makes latest.pth the same file, keeps the
    newest `keep_checkpoints`."""

    def __init__(self, work: Path, run: _Run, cfg: Config, opts: TrainOptions, info: DistInfo, max_iters: int,
                 global_batch: int):
        self.work, self.run, self.cfg, self.opts, self.info = work, run, cfg, opts, info
        self.fixed = {"max_iters": max_iters, "global_batch": global_batch, "world_size": info.world_size,
                      "seed": opts.seed, "dropout_disabled": opts.disable_dropout}

    def save(self, iteration: int) -> Path | None:
        info, run, opts = self.info, self.run, self.opts
        states: list[Any] = [None] * info.world_size
        if info.distributed:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        path = None
        if info.is_main:
            ema_sd = run.ema.state_dict()
            state = {"ema_state_dict": ema_sd.pop("state"), "ema": ema_sd, "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if opts.amp else None,
                     "iteration": iteration, "rng": states, **self.fixed}
            path = self.work / f"iter_{iteration:07d}.pth"
            latest = self.work / LATEST
            save_train_checkpoint(path, run.model, self.cfg, **state)
            link = self.work / f".{LATEST}.link"  # latest.pth becomes the same file, atomically
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
                os.replace(link, latest)
            except OSError:  # no hard links on this filesystem: write it a second time
                save_train_checkpoint(latest, run.model, self.cfg, **state)
            olds = sorted(self.work.glob("iter_*.pth"))
            for old in olds[:-opts.keep_checkpoints] if opts.keep_checkpoints > 0 else olds:
                old.unlink()
        if info.distributed:
            dist.barrier()
        return path


def _class_weights(dataset, cfg: Config, opts: TrainOptions, info: DistInfo) -> torch.Tensor | None:
    """The occupancy loss's class weights on the device (None: unweighted), printed once."""
    from fusionocc_core.data.io import DataError
    from fusionocc_core.losses import resolve_class_weights

    try:
        weight = resolve_class_weights(
            cfg.train.class_weights, cfg.model.num_classes,
            lambda: dataset.label_counts(cfg.data.use_mask, progress=info.is_main and opts.progress is not False))
    except (DataError, ValueError) as exc:
        raise TrainError(f"class weights: {exc}") from None
    if weight is None:
        return None
    if info.is_main:
        print("loss_occ class weights: " + " ".join(f"{w:.3g}" for w in weight.tolist()), flush=True)
    return weight.to(info.device)


def _step(run: _Run, inputs: dict[str, Any], cfg: Config, class_weight: torch.Tensor | None, opts: TrainOptions,
          info: DistInfo, iteration: int) -> dict[str, float]:
    """One optimisation step (forward, losses, backward, clip, optimizer, schedule, EMA); the losses,
    their sum ("loss") and the gradient norm as floats. A non-finite loss on any rank stops every rank."""
    from fusionocc_core.losses import compute_losses

    with torch.autocast(device_type=info.device.type, dtype=torch.float16, enabled=opts.amp):
        outputs = run.train_model(inputs)
        losses = compute_losses(outputs, inputs, cfg, class_weight)
    loss = sum(losses.values())
    finite = torch.isfinite(loss.detach()).to(torch.float32)
    if info.distributed:  # every rank stops together
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite):
        raise TrainError(f"non-finite loss at iteration {iteration}: "
                         + ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items()))
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.ema.update(run.model)
    values = {k: float(v.detach()) for k, v in losses.items()}
    values["loss"] = float(loss.detach())
    values["grad_norm"] = float(grad_norm)
    return values


def train(cfg: Config, opts: TrainOptions) -> dict[str, Any]:
    """Run (or continue) training; returns the summary dict (also printed by main)."""
    prepare_work_dir(Path(opts.work_dir), opts.resume, opts.overwrite, is_main=int(os.environ.get("RANK", "0")) == 0)
    info = setup_distributed(opts.device)
    _configure_torch(opts, info)
    tc = cfg.train
    max_iters = int(opts.max_iters if opts.max_iters is not None else tc.max_iters)
    batch = int(opts.batch_size or tc.batch_size)
    workers = int(tc.num_workers if opts.num_workers is None else opts.num_workers)
    ckpt_every = int(opts.checkpoint_interval or tc.checkpoint_interval)
    log_every = int(opts.log_interval or tc.log_interval)
    global_batch = batch * info.world_size
    work = Path(opts.work_dir)
    if info.is_main:
        work.mkdir(parents=True, exist_ok=True)

    cfg, run = _build_run(cfg, opts, info, max_iters)
    latest = work / LATEST
    if opts.resume:
        _resume(run, latest, cfg, opts, info, max_iters, global_batch)
    start_iter = run.start_iter
    if info.distributed:
        run.train_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[info.local_rank] if info.device.type == "cuda" else None,
            find_unused_parameters=opts.find_unused_parameters)
    checkpoints = _Checkpointer(work, run, cfg, opts, info, max_iters, global_batch)

    # -- data
    from fusionocc_core.data.io import DataError

    dataset = build_dataset(opts.infos, opts.data_root, cfg, train=True)
    sampler = IterationSampler(len(dataset), batch, max_iters, start_iter, opts.seed, info.rank, info.world_size)
    loader = build_loader(dataset, cfg, sampler, opts.seed, workers)
    val_dataset = build_dataset(opts.val_infos, opts.data_root, cfg, train=False) if opts.val_infos else None
    class_weight = _class_weights(dataset, cfg, opts, info)
    val_every = int(opts.val_interval or ckpt_every)
    val_mask = opts.val_mask or ("camera" if cfg.data.use_mask else "none")

    log = CsvLog(work / "log.csv", start_iter if opts.resume else None) if info.is_main else None
    val_log = CsvLog(work / "val.csv", start_iter if opts.resume else None) if info.is_main else None
    bar = tqdm(total=max_iters, initial=start_iter, desc="train", unit="it", dynamic_ncols=True,
               disable=(not info.is_main) or (opts.progress is False) or None)

    # -- loop
    t_start = time.perf_counter()
    t_window, window_iters = time.perf_counter(), 0
    sums: dict[str, float] = {}
    last_losses: dict[str, float] = {}
    last_val: dict[str, Any] | None = None
    val_time = 0.0
    data_iter: Iterator = iter(loader)
    run.train_model.train()
    for iteration in range(start_iter, max_iters):
        try:
            batch_cpu = next(data_iter)
        except DataError as exc:
            raise TrainError(f"iteration {iteration}: {exc}") from None
        seed_everything(seed_from(opts.seed, 3, iteration, info.rank))  # model-side randomness
        values = _step(run, to_device(batch_cpu, info.device), cfg, class_weight, opts, info, iteration)
        done = iteration + 1
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        window_iters += 1
        bar.update(1)
        if done % log_every == 0 or done == max_iters:
            means = reduce_mean({k: v / window_iters for k, v in sums.items()}, info)
            elapsed = time.perf_counter() - t_window
            if log is not None:
                loss_names = sorted(k for k in values if k not in ("loss", "grad_norm"))
                row = {"iteration": done, **{k: means[k] for k in ("loss", *loss_names)}, "grad_norm": means["grad_norm"],
                       "lr": run.optimizer.param_groups[0]["lr"], "samples_per_s": window_iters * global_batch / elapsed,
                       "elapsed_s": time.perf_counter() - t_start,
                       "train_s": time.perf_counter() - t_start - val_time}
                log.write(row)
                bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{row['lr']:.2e}")
            last_losses = means
            sums, window_iters, t_window = {}, 0, time.perf_counter()
        if done % ckpt_every == 0 or done == max_iters:
            checkpoints.save(done)
        if val_dataset is not None and (done % val_every == 0 or done == max_iters):
            t_val = time.perf_counter()
            if info.is_main:
                last_val = validate(run.model, val_dataset, info.device, val_mask, done, val_log, opts.amp)
                run.train_model.train()
            if info.distributed:
                dist.barrier()
            val_time += time.perf_counter() - t_val
            t_window += time.perf_counter() - t_val  # keep samples/s a training figure
    bar.close()
    wall = time.perf_counter() - t_start
    run_iters = max_iters - start_iter
    summary = {"iterations": max_iters, "resumed_from": start_iter if opts.resume else None,
               "world_size": info.world_size, "global_batch": global_batch, "wall_s": wall, "val_s": val_time,
               "samples_per_s": run_iters * global_batch / (wall - val_time) if wall > val_time else float("nan"),
               "final_losses": last_losses, "checkpoint": str(latest), "val": last_val}
    if info.distributed:
        dist.barrier()
    return summary


@torch.no_grad()
def validate(model: nn.Module, dataset, device: torch.device, mask: str, iteration: int,
             log: CsvLog | None, amp: bool = False) -> dict[str, Any]:
    """mIoU of the current weights on a held-out split (test transform), logged to val.csv."""
    from fusionocc_core.tools.evaluate import evaluate_dataset

    result = evaluate_dataset(model, dataset, device, mask=mask, out_dir=None, amp=amp, progress=False)
    row = {"iteration": iteration, "miou": result.miou, "mask": mask, "num_samples": result.num_samples,
           **{f"iou_{k}": v for k, v in result.per_class.items()}}
    if log is not None:
        log.write(row)
    return {"iteration": iteration, "miou": result.miou, "mask": mask}


def build_parser() -> ToolParser:
    p = ToolParser(
        prog="fusionocc-train",
        description="Train FusionOcc with the reference schedule (AdamW, cosine LR with linear warm-up, grad "
                    "clip, EMA). Runs on CPU or one GPU, or under `torchrun --nproc_per_node K` with DDP "
                    "(gloo on CPU, nccl on GPU, synchronized BN). Writes <work-dir>/latest.pth, "
                    "iter_N.pth, log.csv (and val.csv with --val-infos).")
    p.add_argument("--config", required=True, help="preset name (tiny, official) or a config YAML path")
    p.add_argument("--data-root", required=True, type=Path, help="dataset root (nuScenes layout, with gts/)")
    p.add_argument("--infos", required=True, type=Path, help="training info pickle (fusionocc-prepare)")
    p.add_argument("--work-dir", required=True, type=Path, help="directory for checkpoints and logs")
    p.add_argument("--resume", action="store_true",
                   help="continue from <work-dir>/latest.pth exactly where it stopped (same config, "
                        "--max-iters and global batch)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in a non-empty --work-dir, deleting the previous run's latest.pth, "
                        "iter_*.pth, log.csv and val.csv first (without it, a non-empty work dir is refused)")
    p.add_argument("--max-iters", type=int, default=None,
                   help="length of the run and of the LR schedule (default: config train.max_iters)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="device (default: cuda if available, else cpu); under torchrun each rank uses LOCAL_RANK")
    p.add_argument("--amp", action="store_true", help="fp16 mixed precision with loss scaling (CUDA only)")
    p.add_argument("--val-infos", type=Path, default=None,
                   help="held-out info pickle: evaluate mIoU every --val-interval iterations into val.csv")
    p.add_argument("--val-interval", type=int, default=None,
                   help="iterations between validations (default: the checkpoint interval)")
    p.add_argument("--val-mask", choices=("camera", "lidar", "none"), default=None,
                   help="voxels scored in validation (default: camera if data.use_mask else none)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per rank and step (default: config)")
    p.add_argument("--num-workers", type=int, default=None, help="data-loader worker processes (default: config)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and augmentation")
    p.add_argument("--checkpoint-interval", type=int, default=None,
                   help="iterations between checkpoints (default: config train.checkpoint_interval)")
    p.add_argument("--log-interval", type=int, default=None,
                   help="iterations averaged per log.csv row (default: config train.log_interval)")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="how many iter_N.pth files to keep besides latest.pth (0 keeps none)")
    p.add_argument("--find-unused-parameters", action="store_true",
                   help="DDP option for models with parameters that get no gradient in a step")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice; CPU cores / ranks under torchrun)")
    p.add_argument("--nondeterministic", action="store_true",
                   help="allow nondeterministic (atomic-add) kernels: a little faster, but --resume is then "
                        "no longer bit-exact (default: deterministic algorithms; on CUDA some scatter kernels "
                        "stay nondeterministic and only warn)")
    p.add_argument("--disable-dropout", action="store_true",
                   help="turn off every dropout (nn.Dropout layers and the LiDAR-depth dropout): makes a "
                        "torchrun run reproduce a one-process run with the same global batch exactly, since "
                        "dropout masks are otherwise drawn per rank")
    p.add_argument("--no-channels-last", action="store_true",
                   help="on CPU, keep the dense 3D volumes contiguous (NCDHW) instead of channels_last_3d: "
                        "about 1.25x slower steps, but results that do not depend on the thread count beyond "
                        "~1e-4 (mkldnn's channels_last kernels sum in a thread-dependent order: ~3e-3 relative "
                        "gradient differences between 1 and 2 threads)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


@tool_main("fusionocc-train")
def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    for flag in ("max_iters", "batch_size", "checkpoint_interval", "log_interval", "val_interval", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if (args.num_workers is not None and args.num_workers < 0) or args.keep_checkpoints < 0:
        raise UsageError("--num-workers and --keep-checkpoints must be >= 0")
    try:
        cfg = load_config(args.config)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainError(str(exc)) from None
    opts = TrainOptions(data_root=args.data_root, infos=args.infos, work_dir=args.work_dir, resume=args.resume,
                        max_iters=args.max_iters, device=args.device, amp=args.amp, val_infos=args.val_infos,
                        val_interval=args.val_interval, val_mask=args.val_mask, batch_size=args.batch_size,
                        num_workers=args.num_workers, seed=args.seed, checkpoint_interval=args.checkpoint_interval,
                        log_interval=args.log_interval, keep_checkpoints=args.keep_checkpoints,
                        overwrite=args.overwrite, find_unused_parameters=args.find_unused_parameters, threads=args.threads,
                        progress=False if args.no_progress else None, deterministic=not args.nondeterministic,
                        disable_dropout=args.disable_dropout, channels_last=not args.no_channels_last)
    try:
        summary = train(cfg, opts)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(summary)
    return 0


def print_summary(s: dict[str, Any]) -> None:
    losses = ", ".join(f"{k}={v:.4f}" for k, v in sorted(s["final_losses"].items()) if k != "grad_norm")
    print(f"trained {s['iterations']} iterations"
          + (f" (resumed at {s['resumed_from']})" if s["resumed_from"] is not None else "")
          + f" on {s['world_size']} process(es), global batch {s['global_batch']}: {s['wall_s']:.1f} s"
          + (f" ({s['val_s']:.1f} s of it validating)" if s["val_s"] else "")
          + f", {s['samples_per_s']:.2f} samples/s")
    print(f"final losses: {losses}")
    if s["val"]:
        print(f"validation at {s['val']['iteration']}: mIoU {s['val']['miou']:.2f} (mask {s['val']['mask']})")
    print(f"checkpoint: {s['checkpoint']}")


if __name__ == "__main__":
    sys.exit(main())

"""fusionocc-eval: run a checkpoint over a split, write Occ3D submission files, and score them.

Every sample goes through the deterministic test transform; the prediction (argmax of the
logits, uint8 (200, 200, 16) [x][y][z]) is written atomically to `<out>/<sample_token>.npz`
under the key `semantics`. When the split's Occ3D ground truth exists, the written files are then
scored with the same code as fusionocc-score.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fusionocc_core.cli import ToolError, ToolParser, UsageError, tool_main
from fusionocc_core.config import Config, load_config
from fusionocc_core.metrics import MASK_MODES
from fusionocc_core.safe_paths import child_path
from fusionocc_core.tools import score
from fusionocc_core.tools.atomic import atomic_save_npz, atomic_write_json


class EvalError(ToolError):
    """A fatal, user-facing evaluation problem (one line)."""


@torch.no_grad()
def predict_batches(model: nn.Module, dataset, device: torch.device, batch_size: int = 1, num_workers: int = 0,
                    amp: bool = False, progress: bool | None = None) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yield (batch, labels) in dataset order; labels uint8 (B, 200, 200, 16) argmax predictions."""
    from fusionocc_core.data.dataset import collate, to_device

    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    try:
        for batch in tqdm(loader, desc="eval", unit="batch", disable=(None if progress is None else not progress)):
            inputs = to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                logits = model(inputs)["occ_logits"]  # (B, X, Y, Z, C)
            yield batch, logits.argmax(-1).to(torch.uint8).cpu().numpy()
    finally:
        model.train(was_training)


def evaluate_dataset(model: nn.Module, dataset, device: torch.device, mask: str = "none", out_dir: Path | None = None,
                     amp: bool = False, progress: bool | None = None, batch_size: int = 1,
                     num_workers: int = 0) -> score.ScoreResult:
    """Predict every sample; write `<out_dir>/<token>.npz` if out_dir; score against the batch's
    Occ3D targets (the dataset's test transform leaves them unflipped). Used by training validation."""
    def pairs():
        for batch, labels in predict_batches(model, dataset, device, batch_size, num_workers, amp, progress):
            if "voxel_semantics" not in batch:
                raise EvalError("the split has no Occ3D ground truth to score against")
            for b, token in enumerate(batch["sample_tokens"]):
                if out_dir is not None:
                    atomic_save_npz(child_path(out_dir, token, "sample token", ".npz"), semantics=labels[b])
                gt = score.GroundTruth(batch["voxel_semantics"][b].numpy().astype(np.uint8),
                                       batch["mask_camera"][b].numpy().astype(bool),
                                       batch["mask_lidar"][b].numpy().astype(bool))
                yield labels[b], gt

    return score.score_pairs(pairs(), mask=mask)


def write_predictions(model: nn.Module, dataset, device: torch.device, out_dir: Path, amp: bool = False,
                      progress: bool | None = None, batch_size: int = 1, num_workers: int = 0) -> list[str]:
    """Predict every sample of the split and write `<out_dir>/<token>.npz` atomically; returns the tokens."""
    tokens: list[str] = []
    for batch, labels in predict_batches(model, dataset, device, batch_size, num_workers, amp, progress):
        for b, token in enumerate(batch["sample_tokens"]):
            atomic_save_npz(child_path(out_dir, token, "sample token", ".npz"), semantics=labels[b])
            tokens.append(token)
    return tokens


def score_written(out_dir: Path, dataset, tokens: list[str], mask: str, rayiou: bool = False,
                  progress: bool | None = None, infos: Path | None = None) -> score.ScoreResult | None:
    """Score the files just written against the split's gts (fusionocc-score's loaders and metric);
    None when the split has no ground truth. RayIoU casts from the SparseOcc origins of `infos`."""
    by_token = {info["token"]: info for info in dataset.infos}
    gt_paths = [Path(dataset.root) / by_token[t]["occ_path"] / "labels.npz" for t in tokens]
    if not all(p.is_file() for p in gt_paths):
        return None
    pairs = ((score.load_prediction(Path(out_dir) / f"{t}.npz"), score.load_ground_truth(p, mask))
             for t, p in tqdm(list(zip(tokens, gt_paths)), desc="score", unit="sample",
                              disable=(None if progress is None else not progress)))
    origins = None
    if rayiou and infos is not None:
        by_token_origins = score.sparseocc_ray_origins(Path(infos))
        origins = [by_token_origins[t] for t in tokens]
    return score.score_pairs(pairs, mask=mask, rayiou=rayiou, origins=origins)


def load_model(cfg: Config, checkpoint: Path, device: torch.device, weights: str) -> nn.Module:
    """Build the model for cfg and load our own or an official checkpoint (EMA or raw weights)."""
    from fusionocc_core.checkpoint import CheckpointError, load_model_weights
    from fusionocc_core.model import build_model

    model = build_model(cfg)
    try:
        load_model_weights(model, checkpoint, prefer_ema=(weights == "ema"))
    except CheckpointError as exc:
        raise EvalError(str(exc)) from None
    return model.to(device).eval()


def build_parser() -> ToolParser:
    p = ToolParser(
        prog="fusionocc-eval",
        description="Run a FusionOcc checkpoint over a split with the test transform, write one "
                    "<sample_token>.npz (key 'semantics', uint8 200x200x16) per sample into --out, and score "
                    "them against the Occ3D ground truth when it exists.")
    p.add_argument("--config", required=True, help="preset name (tiny, official) or config YAML the checkpoint was trained with")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="fusionocc-train checkpoint (e.g. work_dir/latest.pth) or an official FusionOcc .pth")
    p.add_argument("--data-root", required=True, type=Path, help="dataset root (nuScenes layout, with gts/)")
    p.add_argument("--infos", required=True, type=Path, help="info pickle of the split to evaluate")
    p.add_argument("--out", required=True, type=Path, help="directory for the <sample_token>.npz predictions")
    p.add_argument("--score", dest="score", action="store_true", default=True,
                   help="score the predictions when the split has ground truth (default)")
    p.add_argument("--no-score", dest="score", action="store_false", help="only write predictions")
    p.add_argument("--mask", choices=MASK_MODES, default=None,
                   help="voxels scored: camera, lidar or none (default: camera if the config's data.use_mask "
                        "else none, i.e. the protocol the model was trained for)")
    p.add_argument("--rayiou", action="store_true",
                   help="also compute RayIoU (SparseOcc protocol, 1/2/4 m, rays from up to 8 LiDAR origins of "
                        "each sample's scene taken from --infos)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the score as JSON (atomically)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="which weights of a training checkpoint to use: the EMA (default) or the raw model")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    p.add_argument("--amp", action="store_true", help="fp16 autocast (CUDA only)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per forward pass")
    p.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


@tool_main("fusionocc-eval")
def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    progress = False if args.no_progress else None
    if args.batch_size < 1 or args.num_workers < 0:
        raise UsageError("--batch-size must be >= 1 and --num-workers >= 0")
    try:
        cfg = load_config(args.config)
    except (FileNotFoundError, ValueError) as exc:
        raise EvalError(f"--config {args.config}: {exc}") from None
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError("--device cuda: no CUDA device is available")
    if args.amp and dev.type != "cuda":
        raise EvalError("--amp needs --device cuda")
    from fusionocc_core.data.dataset import OccDataset
    from fusionocc_core.safe_paths import check_name

    if args.out.exists() and not args.out.is_dir():
        raise EvalError(f"--out {args.out} exists and is not a directory")
    dataset = OccDataset(args.infos, args.data_root, cfg, train=False)
    for info in dataset.infos:  # every output name is checked before anything is written
        check_name(info["token"], "sample token", args.infos)
    model = load_model(cfg, args.checkpoint, dev, args.weights)
    tokens = write_predictions(model, dataset, dev, args.out, args.amp, progress, args.batch_size, args.num_workers)
    print(f"wrote {len(tokens)} predictions to {args.out}")
    if args.score:
        mask = args.mask or ("camera" if cfg.data.use_mask else "none")
        result = score_written(args.out, dataset, tokens, mask, args.rayiou, progress, args.infos)
        if result is None:
            print("no Occ3D ground truth for this split: predictions written, not scored")
        else:
            print(score.format_table(result))
            if args.json is not None:
                atomic_write_json(args.json, result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())

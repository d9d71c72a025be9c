"""fusionocc-score: mIoU (and optionally RayIoU) of a directory of predictions against Occ3D gts.

Predictions are `<pred-dir>/<sample_token>.npz` with key `semantics` (uint8, 200x200x16, the
Occ3D submission layout); ground truth is an Occ3D `gts/` root, `<scene>/<token>/labels.npz`.
One confusion matrix is accumulated over all samples (see fusionocc_core.metrics).
"""
from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, GRID_SHAPE, NUM_CLASSES
from fusionocc_core.cli import ToolError, ToolParser, tool_main
from fusionocc_core.data.io import DataError, read_infos
from fusionocc_core.metrics import (MASK_MODES, NUSCENES_LIDAR_ORIGIN, ConfusionAccumulator, RayIoUAccumulator,
                                    select_mask, sparseocc_origins)
from fusionocc_core.tools.atomic import atomic_write_json


class ScoreError(ToolError):
    """A bad input for scoring; its message is the one-line reason shown to the user."""


@dataclass
class GroundTruth:
    """One Occ3D labels.npz: semantics and both visibility masks, (200, 200, 16) each."""

    semantics: np.ndarray  # uint8
    mask_camera: np.ndarray | None  # bool
    mask_lidar: np.ndarray | None  # bool


@dataclass
class ScoreResult:
    """What fusionocc-score reports: mIoU and per-class IoU in percent, optional RayIoU."""

    miou: float
    per_class: dict[str, float]
    mask: str
    num_samples: int
    confusion: np.ndarray
    rayiou: dict[str, float] | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The --json document."""
        out = {"miou": self.miou, "per_class": self.per_class, "mask": self.mask, "num_samples": self.num_samples}
        if self.rayiou is not None:
            out.update(self.rayiou)
        return out


# ----------------------------------------------------------------------------------------------
# loading and validation


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz file; a missing or corrupt file is a ScoreError naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ScoreError(f"{what} {path}: file not found") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ScoreError(f"{what} {path}: corrupt npz ({type(exc).__name__}: {exc})") from None


def check_labels(arr: np.ndarray | None, path: Path, key: str) -> np.ndarray:
    """Validate a label volume: present, shape (200,200,16), dtype uint8, values < 18."""
    if arr is None:
        raise ScoreError(f"{path}: missing key '{key}'")
    if arr.shape != tuple(GRID_SHAPE):
        raise ScoreError(f"{path}: '{key}' has shape {arr.shape}, expected {tuple(GRID_SHAPE)}")
    if arr.dtype != np.uint8:
        raise ScoreError(f"{path}: '{key}' has dtype {arr.dtype}, expected uint8")
    top = int(arr.max())
    if top >= NUM_CLASSES:
        raise ScoreError(f"{path}: '{key}' holds label {top}, labels must be < {NUM_CLASSES}")
    return arr


def check_mask(arr: np.ndarray | None, path: Path, key: str) -> np.ndarray | None:
    """Validate an optional 0/1 mask volume of the grid shape; returns it as bool."""
    if arr is None:
        return None
    if arr.shape != tuple(GRID_SHAPE):
        raise ScoreError(f"{path}: '{key}' has shape {arr.shape}, expected {tuple(GRID_SHAPE)}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ScoreError(f"{path}: '{key}' has dtype {arr.dtype}, expected uint8 0/1")
    return arr.astype(bool)


def load_prediction(path: Path) -> np.ndarray:
    """A prediction file's `semantics`, validated."""
    return check_labels(load_npz(path, "prediction").get("semantics"), path, "semantics")


def load_ground_truth(path: Path, mask: str = "none") -> GroundTruth:
    """An Occ3D labels.npz, validated; the mask the mode needs must be present."""
    data = load_npz(path, "ground truth")
    gt = GroundTruth(check_labels(data.get("semantics"), path, "semantics"),
                     check_mask(data.get("mask_camera"), path, "mask_camera"),
                     check_mask(data.get("mask_lidar"), path, "mask_lidar"))
    needed = {"camera": gt.mask_camera, "lidar": gt.mask_lidar}.get(mask, True)
    if needed is None:
        raise ScoreError(f"{path}: missing key 'mask_{mask}' needed by --mask {mask}")
    return gt


def find_predictions(pred_dir: Path) -> dict[str, Path]:
    """token -> <pred_dir>/<token>.npz."""
    if not pred_dir.is_dir():
        raise ScoreError(f"prediction directory {pred_dir} does not exist")
    return {p.stem: p for p in sorted(pred_dir.glob("*.npz")) if p.is_file()}


def find_ground_truth(gt_dir: Path) -> dict[str, Path]:
    """token -> <gt_dir>/<scene>/<token>/labels.npz; a token in two scenes is an error."""
    if not gt_dir.is_dir():
        raise ScoreError(f"ground-truth directory {gt_dir} does not exist")
    found: dict[str, Path] = {}
    for p in sorted(gt_dir.glob("*/*/labels.npz")):
        token = p.parent.name
        if token in found:
            raise ScoreError(f"ground truth: token {token} appears twice ({found[token]} and {p})")
        found[token] = p
    return found


def match_tokens(preds: dict[str, Path], gts: dict[str, Path], allow_missing: bool) -> tuple[list[str], dict[str, list[str]]]:
    """Sorted tokens to score and the unmatched ones; unmatched tokens are an error unless allowed."""
    no_gt = sorted(set(preds) - set(gts))
    no_pred = sorted(set(gts) - set(preds))
    if not allow_missing:
        if no_gt:
            raise ScoreError(f"{len(no_gt)} prediction(s) without ground truth, e.g. {no_gt[0]} "
                             "(use --allow-missing to score the common tokens)")
        if no_pred:
            raise ScoreError(f"{len(no_pred)} ground-truth sample(s) without a prediction, e.g. {no_pred[0]} "
                             "(use --allow-missing to score the common tokens)")
    common = sorted(set(preds) & set(gts))
    if not common:
        raise ScoreError("no sample token has both a prediction and ground truth")
    return common, {"without_gt": no_gt, "without_prediction": no_pred}


def sparseocc_ray_origins(infos_path: Path) -> dict[str, np.ndarray]:
    """token -> (T, 3) ray origins the SparseOcc way (`metrics.sparseocc_origins`): the LiDAR
    positions of up to 8 key-frames of the sample's scene with |x|, |y| < 39 m, in the sample's ego frame."""
    try:
        infos = read_infos(infos_path)["infos"]  # the allow-list loader: never runs code from the file
    except DataError as exc:
        raise ScoreError(f"infos {exc}") from None
    try:
        by_scene: dict[str, list[dict]] = {}
        for info in sorted(infos, key=lambda i: i["timestamp"]):
            by_scene.setdefault(str(info["scene_token"]), []).append(info)
        origins: dict[str, np.ndarray] = {}
        for frames in by_scene.values():
            for info, frame_origins in zip(frames, sparseocc_origins(frames)):
                origins[str(info["token"])] = frame_origins
        return origins
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ScoreError(f"infos {infos_path}: not a usable info file ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------------------------
# scoring


def score_pairs(pairs: Iterable[tuple[np.ndarray, GroundTruth]], mask: str = "none", rayiou: bool = False,
                origins: Iterable[np.ndarray] | None = None) -> ScoreResult:
    """Score (prediction, ground truth) pairs held in memory; the core of fusionocc-score/eval.
    RayIoU needs `origins`: per pair, the (T, 3) ray origins in its ego frame (`sparseocc_ray_origins`)."""
    voxels = ConfusionAccumulator()
    rays = RayIoUAccumulator() if rayiou else None
    if rays is not None and origins is None:
        raise ScoreError("RayIoU needs ray origins per sample (SparseOcc's come from an info pickle)")
    origin_iter = iter(origins) if origins is not None else None
    for pred, gt in pairs:
        voxels.update(gt.semantics, pred, select_mask(mask, gt.mask_camera, gt.mask_lidar))
        if rays is not None:
            rays.update(gt.semantics, pred, next(origin_iter))
    iou = voxels.per_class_iou()
    per_class = {name: float(iou[i]) for i, name in enumerate(CLASS_NAMES) if i != FREE_LABEL}
    return ScoreResult(miou=voxels.miou(), per_class=per_class, mask=mask, num_samples=voxels.num_samples,
                       confusion=voxels.matrix, rayiou=rays.result() if rays is not None else None)


def score_dirs(pred_dir: str | Path, gt_dir: str | Path, mask: str = "camera", allow_missing: bool = False,
               rayiou: bool = False, infos: str | Path | None = None, origin: str = "infos",
               ray_origin: Sequence[float] | None = None, progress: bool | None = None) -> ScoreResult:
    """Score every `<token>.npz` in pred_dir against the Occ3D gts root gt_dir. RayIoU casts from the
    SparseOcc origins of `infos` (origin="infos", the protocol) or, with origin="ego", from the one
    point `ray_origin` (default: the nuScenes LiDAR mount) in every sample's ego frame (not the protocol)."""
    if mask not in MASK_MODES:
        raise ScoreError(f"unknown mask '{mask}' (one of {', '.join(MASK_MODES)})")
    check_ray_origins(rayiou, infos, origin, ray_origin)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds, gts = find_predictions(pred_dir), find_ground_truth(gt_dir)
    tokens, skipped = match_tokens(preds, gts, allow_missing)
    token_origins = sparseocc_ray_origins(Path(infos)) if (rayiou and infos is not None) else None
    if token_origins is not None:
        missing = [t for t in tokens if t not in token_origins]
        if missing:
            raise ScoreError(f"infos {infos}: no entry for sample token {missing[0]} ({len(missing)} missing)")
    fixed = np.asarray(NUSCENES_LIDAR_ORIGIN if ray_origin is None else ray_origin, dtype=np.float64).reshape(1, 3)

    def pairs():
        for token in tqdm(tokens, desc="scoring", unit="sample", disable=(None if progress is None else not progress)):
            yield load_prediction(preds[token]), load_ground_truth(gts[token], mask)

    origins = ((token_origins[t] if token_origins is not None else fixed) for t in tokens)
    result = score_pairs(pairs(), mask=mask, rayiou=rayiou, origins=origins)
    result.skipped = skipped
    return result


RAY_ORIGIN_MODES: tuple[str, ...] = ("infos", "ego")


def check_ray_origins(rayiou: bool, infos: str | Path | None, origin: str, ray_origin: Sequence[float] | None) -> None:
    """The RayIoU origin options make sense together; a ScoreError with the one-line reason if not."""
    if origin not in RAY_ORIGIN_MODES:
        raise ScoreError(f"unknown --origin '{origin}' (one of {', '.join(RAY_ORIGIN_MODES)})")
    if origin == "ego" and infos is not None:
        raise ScoreError("--origin ego casts from one fixed point and ignores --infos: give one of them")
    if ray_origin is not None and origin != "ego":
        raise ScoreError("--ray-origin needs --origin ego (the SparseOcc origins come from --infos)")
    if rayiou and origin == "infos" and infos is None:
        raise ScoreError("--rayiou needs --infos (SparseOcc casts from up to 8 LiDAR positions of each sample's "
                         "scene); --origin ego casts from one fixed point instead, which is not the protocol")


def format_table(result: ScoreResult) -> str:
    """The per-class table printed by fusionocc-score."""
    lines = [f"mask: {result.mask}   samples: {result.num_samples}", f"{'class':<22}{'IoU':>8}"]
    lines += [f"{name:<22}{iou:>8.2f}" for name, iou in result.per_class.items()]
    lines.append(f"{'mIoU':<22}{result.miou:>8.2f}")
    if result.rayiou is not None:
        lines += [f"{k.replace('rayiou', 'RayIoU'):<22}{v:>8.2f}" for k, v in result.rayiou.items()]
    for what, tokens in result.skipped.items():
        if tokens:
            lines.append(f"skipped {len(tokens)} token(s) {what.replace('_', ' ')}")
    return "\n".join(lines)


def build_parser() -> ToolParser:
    p = ToolParser(
        prog="fusionocc-score",
        description="Score occupancy predictions against Occ3D ground truth: one 18x18 confusion matrix "
                    "over all samples, IoU per class, mIoU over classes 0-16 (free excluded from the mean).")
    p.add_argument("--pred-dir", required=True, type=Path,
                   help="directory of <sample_token>.npz files, key 'semantics' uint8 (200,200,16)")
    p.add_argument("--gt-dir", required=True, type=Path,
                   help="Occ3D gts root holding <scene>/<sample_token>/labels.npz")
    p.add_argument("--mask", choices=MASK_MODES, default="camera",
                   help="voxels to score: 'camera' = mask_camera (the Occ3D protocol, default), "
                        "'lidar' = mask_lidar, 'none' = all 640,000 voxels (FusionOcc's released-model protocol)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="also write {miou, per_class, mask, num_samples[, rayiou...]} to OUT (atomically)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only tokens that have both a prediction and ground truth instead of failing")
    p.add_argument("--rayiou", action="store_true",
                   help="also compute RayIoU (SparseOcc protocol, depth thresholds 1/2/4 m; ignores --mask)")
    p.add_argument("--infos", type=Path, default=None,
                   help="with --rayiou: the split's info pickle (ego and LiDAR poses); rays are cast from up to 8 "
                        "LiDAR positions of each sample's scene within 39 m, exactly as SparseOcc's ray_metrics.py "
                        "(required unless --origin ego)")
    p.add_argument("--origin", choices=RAY_ORIGIN_MODES, default="infos",
                   help="RayIoU ray origins: 'infos' = SparseOcc's origins from --infos (the protocol, default); "
                        "'ego' = one fixed point (--ray-origin) in each sample's ego frame, for data without "
                        "poses -- NOT the RayIoU protocol, its numbers are not comparable to published ones")
    p.add_argument("--ray-origin", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help=f"with --origin ego: the origin in the ego frame, metres (default: the nuScenes LIDAR_TOP "
                        f"mount {' '.join(str(v) for v in NUSCENES_LIDAR_ORIGIN)})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@tool_main("fusionocc-score")
def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    result = score_dirs(args.pred_dir, args.gt_dir, mask=args.mask, allow_missing=args.allow_missing,
                        rayiou=args.rayiou, infos=args.infos, origin=args.origin, ray_origin=args.ray_origin,
                        progress=False if args.quiet else None)
    print(format_table(result))
    if args.json is not None:
        atomic_write_json(args.json, result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())

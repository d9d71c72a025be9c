"""Configs as plain dataclasses, loaded from YAML presets (`official`, `tiny`) or user files.

One schema for every tool: the model, the data layer, training and the node read the same
object. Unknown keys are an error (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import numpy as np

from fusionocc_core.classes import CAMERA_NAMES, GRID_LOWER, GRID_UPPER, NUM_CLASSES, VOXEL_SIZE

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@functools.lru_cache(maxsize=8)
def _center_table(x: tuple, y: tuple, z: tuple, dtype: str) -> np.ndarray:
    """(X*Y*Z, 3) read-only centres lower + (index + 0.5) * size of a grid, C order (values in float64,
    then cast): 7.7 MB in float32 for Occ3D's 640k voxels."""
    axes = [lo + (np.arange(int(round((hi - lo) / st))) + 0.5) * st for lo, hi, st in (x, y, z)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(dtype)
    grid.setflags(write=False)
    return grid


@dataclass
class GridConfig:
    """Occupancy grid and LSS depth bins: (lower, upper, step) per axis. The one grid definition
    the model, the metric and every output message use; the default is the Occ3D-nuScenes grid
    (the file format's constants in fusionocc_core.classes)."""

    x: tuple[float, float, float] = (GRID_LOWER[0], GRID_UPPER[0], VOXEL_SIZE)
    y: tuple[float, float, float] = (GRID_LOWER[1], GRID_UPPER[1], VOXEL_SIZE)
    z: tuple[float, float, float] = (GRID_LOWER[2], GRID_UPPER[2], VOXEL_SIZE)
    depth: tuple[float, float, float] = (1.0, 45.0, 0.5)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid size (X, Y, Z) = (200, 200, 16) for Occ3D."""
        return tuple(int(round((hi - lo) / st)) for lo, hi, st in (self.x, self.y, self.z))  # type: ignore[return-value]

    @property
    def lower(self) -> tuple[float, float, float]:
        return (self.x[0], self.y[0], self.z[0])

    @property
    def upper(self) -> tuple[float, float, float]:
        return (self.x[1], self.y[1], self.z[1])

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return (self.x[2], self.y[2], self.z[2])

    def centers(self, flat_index: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """(n,) flat C-order [x][y][z] indices -> (n, 3) voxel centres lower + (index + 0.5) * size
        in the ego frame: rows of a per-grid table of every centre, built once (one gather per call)."""
        return np.take(_center_table(self.x, self.y, self.z, np.dtype(dtype).str), flat_index, axis=0)

    def check_labels(self, labels: np.ndarray) -> np.ndarray:
        """`labels` if it is a uint8 array of the grid's shape, else ValueError saying what it is."""
        if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.shape != self.shape:
            got = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
            raise ValueError(f"labels must be uint8 {self.shape}, got {got}")
        return labels

    @property
    def num_depth_bins(self) -> int:
        lo, hi, st = self.depth
        return int(round((hi - lo) / st))


@dataclass
class DataConfig:
    """Inputs: cameras, image sizes, augmentation ranges, temporal history, LiDAR handling."""

    cameras: tuple[str, ...] = CAMERA_NAMES
    src_size: tuple[int, int] = (900, 1600)  # H, W of the source images
    input_size: tuple[int, int] = (512, 1408)  # H, W fed to the network
    # test: resize by input_W / src_W, crop the bottom input_H rows; train adds these ranges
    train_resize_lim: tuple[float, float] = (-0.06, 0.11)
    train_rot_lim_deg: tuple[float, float] = (-5.4, 5.4)
    train_flip: bool = True
    train_bda_flip: bool = True
    num_adj_img_frames: int = 1  # previous key-frames of images (official: 1)
    num_lidar_sweeps: int = 8  # current + 7 previous key-frame sweeps (official: 8)
    # official subsampling: keep a point if ring > 16 or with probability 0.2 (1.0 keeps all)
    lidar_keep_ring_above: int = 16
    lidar_keep_prob: float = 0.2
    use_mask: bool = False  # camera-mask loss/eval (official released model: False)


@dataclass
class ModelConfig:
    """Network widths and depths. `official` = the released FusionOcc (Swin-B, 512x1408)."""

    img_backbone: str = "swin"  # "swin" (official) or "resnet" (tiny); both give stride-16/32 maps
    swin_embed_dims: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_num_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window_size: int = 12
    swin_patch_size: int = 4
    swin_mlp_ratio: float = 4.0
    swin_drop_path_rate: float = 0.1
    resnet_channels: tuple[int, ...] = (32, 64, 128, 256)  # ResNet stage widths (strides 4/8/16/32)
    resnet_blocks: tuple[int, ...] = (1, 1, 1, 1)  # BasicBlocks per ResNet stage
    img_downsample: int = 16  # stride of the neck output = the LSS feature grid (32x88 at 512x1408)
    neck_out_channels: int = 256
    mid_channels: int = 128  # CrossModalLSS / DepthSegNet mid width
    aspp_mid_channels: int = 96
    feature_channels: int = 32  # lifted image feature (16 seg + 16 context)
    lidar_voxel_size: float = 0.05
    lidar_channels: tuple[int, ...] = (16, 32, 48, 64)
    lidar_out_channels: int = 32
    bev_channels: tuple[int, ...] = (64, 128, 256)  # 3D encoder widths; bev_channels[0] = head width
    bev_layers: tuple[int, ...] = (1, 2, 3)
    bev_strides: tuple[int, ...] = (1, 2, 2)
    head_hidden: int = 128
    num_classes: int = NUM_CLASSES
    depth_dropout_prob: float = 0.49  # training: drop each feature pixel's LiDAR depth one-hot


@dataclass
class TrainConfig:
    """The reference schedule: AdamW, cosine with linear warm-up, grad clip, EMA."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3.0
    min_lr_ratio: float = 1e-3
    ema_decay: float = 0.999
    batch_size: int = 1
    max_iters: int = 24 * 28130
    num_workers: int = 4
    loss_occ_weight: float = 1.0
    loss_depth_weight: float = 0.1
    loss_seg_weight: float = 0.1
    # loss_occ class weights: None = plain CE (the reference), "enet" = 1 / ln(1.02 + p_c) from the
    # training split's label frequencies (in the loss mask), or an explicit list of NUM_CLASSES floats
    class_weights: Any = None
    log_interval: int = 10
    checkpoint_interval: int = 1000


@dataclass
class Config:
    name: str = "official"
    grid: GridConfig = field(default_factory=GridConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (YAML/JSON-safe; tuples become lists) for checkpoints and logs."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from a dict, converting lists to tuples; reject unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"config section '{where}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) in '{where}': {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(cls(), key) if key not in ("grid", "data", "model", "train") else None
        sub = {"grid": GridConfig, "data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        if cls is Config and key in sub:
            kwargs[key] = _build(sub[key], value or {}, key)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from a (possibly partial) dict; missing keys take the official defaults."""
    return _build(Config, values, "<root>")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path | Config) -> Config:
    """A preset name (`official`, `tiny`), a YAML path, or a Config (returned as is)."""
    if isinstance(name_or_path, Config):
        return name_or_path
    path = Path(name_or_path)
    if not path.suffix and (PRESET_DIR / f"{name_or_path}.yaml").is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"config '{name_or_path}' is neither a preset ({', '.join(preset_names())}) nor a YAML file"
        )
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    try:
        return config_from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None

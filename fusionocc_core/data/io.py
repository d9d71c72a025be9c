"""Readers for the nuScenes / Occ3D files the data layer touches, with one-line errors naming the file.

Bad input (a missing file, a truncated .pcd.bin, a corrupt JPEG, a labels.npz with the wrong
arrays, an info pickle that names anything but plain data) raises `DataError("<path>: <reason>")`
so that tools can print it and exit non-zero. Info pickles load only through `safe_pickle`.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fusionocc_core.classes import GRID_SHAPE
from fusionocc_core.cli import ToolError
from fusionocc_core.data import safe_pickle

POINT_DIM = 5  # x y z intensity ring (nuScenes LIDAR_TOP .pcd.bin)
GT_KEYS = ("semantics", "mask_lidar", "mask_camera")


class DataError(ToolError):
    """Bad or missing input data; the message is one line that names the file."""


def read_points(path: str | Path) -> np.ndarray:
    """A nuScenes .pcd.bin sweep -> (P, 5) float32 x y z intensity ring."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"{path}: LiDAR file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read LiDAR file ({exc.strerror or exc})") from None
    nbytes = os.path.getsize(path)
    if nbytes % (4 * POINT_DIM):
        raise DataError(f"{path}: truncated .pcd.bin ({nbytes} bytes is not a whole number of "
                        f"{POINT_DIM}-float32 points)")
    return raw.reshape(-1, POINT_DIM)


def read_lidarseg(path: str | Path, num_points: int) -> np.ndarray:
    """A nuScenes-lidarseg .bin -> (P,) uint8 per-point labels; P must match the sweep."""
    path = Path(path)
    try:
        labels = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: lidarseg file not found") from None
    if labels.size != num_points:
        raise DataError(f"{path}: {labels.size} lidarseg labels for a sweep of {num_points} points")
    return labels


def jpeg_reduction(src_hw: tuple[int, int], scale: float) -> int:
    """Largest decode reduction f in (1, 2, 4) with 1/f >= scale that divides the image size exactly."""
    for f in (4, 2):
        if 1.0 / f >= scale and src_hw[0] % f == 0 and src_hw[1] % f == 0:
            return f
    return 1


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def read_image(path: str | Path, reduction: int = 1) -> np.ndarray:
    """A camera image -> (H / reduction, W / reduction, 3) uint8 RGB (JPEG DCT-domain downscaling)."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise DataError(f"{path}: image file not found")
    img = cv2.imdecode(data, _REDUCED_FLAGS[reduction])
    if img is None or img.ndim != 3:
        raise DataError(f"{path}: cannot decode image (corrupt or not a colour JPEG/PNG)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_occ_gt(path: str | Path) -> dict[str, np.ndarray]:
    """An Occ3D labels.npz -> {'semantics' uint8, 'mask_lidar' bool, 'mask_camera' bool}, each (200, 200, 16)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Occ3D ground truth not found")
    try:
        with np.load(path) as npz:
            missing = [k for k in GT_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
            out = {k: npz[k] for k in GT_KEYS}
    except DataError:
        raise
    except Exception as exc:  # zipfile/pickle/value errors from a damaged archive
        raise DataError(f"{path}: cannot read Occ3D labels ({type(exc).__name__}: {exc})") from None
    for key, arr in out.items():
        if arr.shape != GRID_SHAPE:
            raise DataError(f"{path}: '{key}' has shape {arr.shape}, expected {GRID_SHAPE}")
    if out["semantics"].max(initial=0) > 17:
        raise DataError(f"{path}: 'semantics' holds labels above 17")
    return {"semantics": out["semantics"].astype(np.uint8),
            "mask_lidar": out["mask_lidar"].astype(bool),
            "mask_camera": out["mask_camera"].astype(bool)}


def encode_label_map(labels: np.ndarray, stride: int) -> dict[str, Any]:
    """Pack a (h, w) uint8 label map stored at `stride` for an info file (zlib, ~20x smaller)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return {"stride": int(stride), "shape": tuple(int(s) for s in labels.shape),
            "labels": zlib.compress(labels.tobytes(), 3)}


def decode_label_map(entry: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Inverse of `encode_label_map` -> ((h, w) uint8 labels, stride)."""
    shape = tuple(entry["shape"])
    labels = np.frombuffer(zlib.decompress(entry["labels"]), dtype=np.uint8).reshape(shape)
    return labels, int(entry["stride"])


def read_infos(path: str | Path) -> dict[str, Any]:
    """An info pickle written by fusionocc-prepare -> {'infos': [...], 'metadata': {...}}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: info file not found (create it with fusionocc-prepare)")
    try:
        data = safe_pickle.load_path(path)
    except safe_pickle.UnsafePickleError as exc:
        raise DataError(f"{path}: not loaded, {exc}") from None
    except MemoryError:
        raise DataError(f"{path}: not a readable info pickle (it asks for more memory than there is)") from None
    except Exception as exc:  # truncated / not a pickle: every unpickling failure is one line
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable info pickle ({type(exc).__name__}{': ' + detail if detail else ''})") from None
    if isinstance(data, list):  # a bare list of infos
        data = {"infos": data, "metadata": {}}
    if not isinstance(data, dict) or not isinstance(data.get("infos"), list):
        raise DataError(f"{path}: not an info file (expected a dict with an 'infos' list)")
    if not data["infos"]:
        raise DataError(f"{path}: the info file holds no samples")
    for i, info in enumerate(data["infos"]):
        if not isinstance(info, dict) or not isinstance(info.get("token"), str):
            raise DataError(f"{path}: info {i} is not a dict with a string 'token'")
    return data

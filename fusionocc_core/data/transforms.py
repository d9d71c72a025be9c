"""Image and BEV augmentation, the deterministic test transform, normalisation and sparse depth.

Shared by the dataset (train/test) and the predictor (test only), so that a network sees the same
pixels and matrices whether its input came from nuScenes files or from a live ROS frame. The
`eval_*` functions are the deterministic test-time ("evaluation") transform.

Conventions (pixel-index coordinates: pixel (u, v) has its centre at integer u, v):
* An image augmentation is a 2D affine map from source pixels to network-input pixels,
  ``[u', v'] = A @ [u, v] + b``, stored BEVDet-style as ``post_rot`` (3x3: A in the top-left,
  1 at [2, 2]) and ``post_tran`` (3,: b, 0). The depth coordinate passes through unchanged.
* The official steps, in order: resize by ``resize`` (u' = resize * u), crop the box
  ``(x0, y0, x0 + W_in, y0 + H_in)``, optional horizontal flip, rotation by ``rotate_deg``
  (counter-clockwise as seen on screen) about the crop centre. The test transform (resize by
  W_in / W_src, keep the bottom H_in rows) has exactly the official matrices. For the two
  train-only steps we flip about (W_in - 1) / 2 and rotate about ((W_in - 1) / 2, (H_in - 1) / 2)
  -- the official code uses W_in / 2, which is 0.5 px off its own pixel grid.
* Images are warped *with the matrices themselves*, so pixels and matrices always agree.
  Out-of-image pixels are black; out-of-image seg labels are 17 (no label, ignored by the loss;
  the official code fills rotation corners with 0 = "others", which we do not replicate).
* BEV augmentation (bda): flips of the ego x and/or y axis, applied to points as
  ``xyz @ bda.T`` and to [x][y][z] grids by reversing axis 0 / 1 (the Occ3D grid is symmetric
  about the ego origin in x and y, so index i <-> 199 - i is exactly x <-> -x).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fusionocc_core.classes import FREE_LABEL
from fusionocc_core.config import Config, DataConfig, GridConfig
from fusionocc_core.transfer import device_constant, upload

# mmcv/BEVDet image normalisation constants (RGB order)
IMG_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
IMG_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
IMG_STD_INV = (1.0 / IMG_STD.astype(np.float64)).astype(np.float32)
# _NORM_LUT[c, value]: output channel c (= BGR input channel c) for a uint8 value, computed in float32
# as mmcv does: (value - mean[c]) * (1 / std[c])
_NORM_LUT = (np.arange(256, dtype=np.float32)[None, :] - IMG_MEAN[:, None]) * IMG_STD_INV[:, None]
NO_LABEL = FREE_LABEL  # 2D seg "no LiDAR label" value (ignored by the seg loss)
PRE_RESIZE_BELOW = 0.75  # warp scales below this are anti-aliased by an INTER_AREA pre-resize


@dataclass(frozen=True)
class ImageAug:
    """One camera's image augmentation: resize factor, crop box in resized pixels, flip, rotation."""

    resize: float
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in resized-image pixels (may leave the image)
    flip: bool = False
    rotate_deg: float = 0.0

    @property
    def out_hw(self) -> tuple[int, int]:
        """(H, W) of the augmented image."""
        return (self.crop[3] - self.crop[1], self.crop[2] - self.crop[0])


def eval_image_aug(src_hw: tuple[int, int], input_hw: tuple[int, int]) -> ImageAug:
    """The deterministic test transform: resize by W_in / W_src, keep the bottom H_in rows."""
    src_h, src_w = src_hw
    in_h, in_w = input_hw
    resize = in_w / src_w
    new_h, new_w = int(src_h * resize), int(src_w * resize)
    x0 = int(max(0, new_w - in_w) / 2)
    y0 = new_h - in_h
    return ImageAug(resize, (x0, y0, x0 + in_w, y0 + in_h), False, 0.0)


def sample_image_aug(src_hw: tuple[int, int], data_cfg: DataConfig, rng: np.random.Generator) -> ImageAug:
    """A random train augmentation (official BEVDet ranges from cfg.data): resize, crop, flip, rotate."""
    src_h, src_w = src_hw
    in_h, in_w = data_cfg.input_size
    resize = in_w / src_w + float(rng.uniform(*data_cfg.train_resize_lim))
    new_h, new_w = int(src_h * resize), int(src_w * resize)
    y0 = new_h - in_h  # crop anchored at the bottom (official crop_h range (0, 0))
    x0 = int(rng.uniform(0, max(0, new_w - in_w)))
    flip = bool(data_cfg.train_flip and rng.integers(0, 2) == 1)
    rotate = float(rng.uniform(*data_cfg.train_rot_lim_deg))
    return ImageAug(resize, (x0, y0, x0 + in_w, y0 + in_h), flip, rotate)


def image_aug_matrices(aug: ImageAug) -> tuple[np.ndarray, np.ndarray]:
    """(post_rot (3, 3), post_tran (3,)) float32 mapping source pixels to augmented pixels."""
    a = np.eye(2) * aug.resize  # resize
    b = -np.array(aug.crop[:2], dtype=np.float64)  # crop
    out_h, out_w = aug.out_hw
    if aug.flip:  # u -> (W_in - 1) - u
        f = np.array([[-1.0, 0.0], [0.0, 1.0]])
        a, b = f @ a, f @ b + np.array([out_w - 1.0, 0.0])
    if aug.rotate_deg:
        h = math.radians(aug.rotate_deg)
        r = np.array([[math.cos(h), math.sin(h)], [-math.sin(h), math.cos(h)]])
        centre = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
        a, b = r @ a, r @ (b - centre) + centre
    post_rot = np.eye(3, dtype=np.float32)
    post_rot[:2, :2] = a
    post_tran = np.zeros(3, dtype=np.float32)
    post_tran[:2] = b
    return post_rot, post_tran


def warp_image(img: np.ndarray, post_rot: np.ndarray, post_tran: np.ndarray, out_hw: tuple[int, int],
               src_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Warp an (h, w, C) image by the source->output affine [A|b] (bilinear; scales below 0.75 are
    anti-aliased by an area pre-resize, milder ones are warped directly, like a bilinear resize).
    `src_hw` is the size the matrices refer to when `img` is a pixel-centre-aligned reduction of
    the source (e.g. a JPEG decoded at 1/2 or 1/4 size); by default the image's own size."""
    a = np.asarray(post_rot, np.float64)[:2, :2]
    b = np.asarray(post_tran, np.float64)[:2]
    out_h, out_w = out_hw
    a, b = _rebase(a, b, src_hw or img.shape[:2], img.shape[:2])
    scale = math.sqrt(abs(np.linalg.det(a)))
    if scale < PRE_RESIZE_BELOW:  # pre-resize with area averaging, then warp the rest at ~unit scale
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        resized = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        a, b = _rebase(a, b, img.shape[:2], resized.shape[:2])
        img = resized
    shift = np.round(b)
    if np.allclose(a, np.eye(2), atol=1e-9) and np.allclose(b, shift, atol=1e-6):
        return _shift_copy(img, int(shift[0]), int(shift[1]), out_hw)
    m = np.concatenate([a, b[:, None]], axis=1)
    return cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _rebase(a: np.ndarray, b: np.ndarray, from_hw: tuple[int, ...], to_hw: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Re-express x = A u + b for an image rescaled from `from_hw` to `to_hw` with pixel centres
    aligned (cv2.resize / JPEG DCT scaling: u_r = s u + (s - 1) / 2)."""
    sx, sy = to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]
    if sx == 1.0 and sy == 1.0:
        return a, b
    a = a @ np.diag([1.0 / sx, 1.0 / sy])
    return a, b - a @ np.array([(sx - 1) / 2.0, (sy - 1) / 2.0])


def _shift_copy(img: np.ndarray, dx: int, dy: int, out_hw: tuple[int, int]) -> np.ndarray:
    """out[v, u] = img[v - dy, u - dx] with zero padding (integer-translation fast path)."""
    out_h, out_w = out_hw
    out = np.zeros((out_h, out_w) + img.shape[2:], dtype=img.dtype)
    v0, v1 = max(0, dy), min(out_h, img.shape[0] + dy)
    u0, u1 = max(0, dx), min(out_w, img.shape[1] + dx)
    if v1 > v0 and u1 > u0:
        out[v0:v1, u0:u1] = img[v0 - dy:v1 - dy, u0 - dx:u1 - dx]
    return out


def augment_image(img: np.ndarray, aug: ImageAug, src_hw: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply `aug` to an (H, W, 3) uint8 image -> (img_out (H_in, W_in, 3), post_rot, post_tran);
    `src_hw` as in `warp_image` (the matrices always refer to the full source resolution)."""
    post_rot, post_tran = image_aug_matrices(aug)
    return warp_image(img, post_rot, post_tran, aug.out_hw, src_hw), post_rot, post_tran


def warp_label_map(labels: np.ndarray, stride: int, src_hw: tuple[int, int], post_rot: np.ndarray,
                   post_tran: np.ndarray, out_hw: tuple[int, int], fill: int = NO_LABEL) -> np.ndarray:
    """Nearest-neighbour warp of a label map sampled every `stride` source pixels (cell (r, c) is the
    label at source pixel (stride*r, stride*c)) into the augmented image -> (H_in, W_in) uint8.
    A source pixel takes its nearest sample, ties to the lower one: cell (x + stride/2 - 1) // stride.
    (The reference repeats each cell over x // stride instead, shifting labels 3.5 px right/down.)"""
    out_h, out_w = out_hw
    a_inv = np.linalg.inv(np.asarray(post_rot, np.float64)[:2, :2])
    b = np.asarray(post_tran, np.float64)[:2]
    x = np.arange(out_w, dtype=np.float64) - b[0]  # (W_in,)
    y = np.arange(out_h, dtype=np.float64) - b[1]  # (H_in,)
    hs, ws = labels.shape
    padded = np.full((hs + 1, ws + 1), fill, np.uint8)  # last row / column = outside the source
    padded[:hs, :ws] = labels

    def cells(coef_x: float, coef_y: float, size: int, n_cells: int) -> np.ndarray:
        """Cell index along one source axis, (1, W_in), (H_in, 1) or (H_in, W_in); n_cells = outside."""
        if coef_y == 0.0:  # no rotation: separable, 1D
            src = np.rint(coef_x * x)[None, :]
        elif coef_x == 0.0:
            src = np.rint(coef_y * y)[:, None]
        else:
            src = np.add.outer(coef_y * y, coef_x * x)
            np.rint(src, out=src)  # the source pixel of each output pixel
        outside = (src < 0) | (src >= size)
        src += stride // 2 - 1
        src /= stride
        np.floor(src, out=src)
        cell = src.astype(np.int32)
        np.minimum(cell, n_cells - 1, out=cell)
        cell[outside] = n_cells
        return cell

    col = cells(a_inv[0, 0], a_inv[0, 1], src_hw[1], ws)
    row = cells(a_inv[1, 0], a_inv[1, 1], src_hw[0], hs)
    return np.take(padded.reshape(-1), row * (ws + 1) + col)


def normalize_image(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 as the official model saw it: mmcv imnormalize with
    to_rgb=True on an RGB image swaps to BGR order, then subtracts the RGB mean and multiplies by
    1 / RGB std. A 256-entry lookup per channel (exactly the same floats, ~10x faster); `out` may
    be a preallocated (3, H, W) float32 array to fill."""
    if img.dtype != np.uint8:
        raise ValueError(f"normalize_image expects uint8, got {img.dtype}")
    if out is None:
        out = np.empty((3,) + img.shape[:2], np.float32)
    elif out.shape != (3,) + img.shape[:2] or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"normalize_image: out must be a C-contiguous float32 (3, H, W) array, got {out.shape}")
    planes = cv2.split(img)  # R, G, B as contiguous planes
    for c in range(3):
        cv2.LUT(planes[2 - c], _NORM_LUT[c], dst=out[c])
    return out


def sparse_depth_tensors(points_ego: torch.Tensor, sensor2ego: torch.Tensor, intrinsics: torch.Tensor,
                         post_rots: torch.Tensor, post_trans: torch.Tensor, hw: tuple[int, int],
                         depth_range: tuple[float, float]) -> torch.Tensor:
    """Project ego-frame points (P, >=3) into N augmented cameras -> (N, H, W) float32 depth in metres
    on the points' device: the nearest point per pixel with depth in [d_min, d_max), 0 where no point
    lands. Geometry in float64; non-finite points are ignored. No host synchronisation (GPU-friendly)."""
    h, w = hw
    dev = points_ego.device
    n = int(sensor2ego.shape[0])
    xyz = points_ego[:, :3].to(torch.float64)  # (P, 3)
    # the matrices go to the points' device without a stream sync (their inverse on their own device)
    ego2cam = upload(torch.linalg.inv(sensor2ego.to(torch.float64)), dev)  # (N, 4, 4)
    cam = torch.einsum("nij,pj->npi", ego2cam[:, :3, :3], xyz) + ego2cam[:, None, :3, 3]  # (N, P, 3) optical frame
    depth = cam[..., 2]  # (N, P); NaN for non-finite points, which fail every comparison below
    front = (depth >= max(depth_range[0], 1e-6)) & (depth < depth_range[1])
    uv = torch.einsum("nij,npj->npi", upload(intrinsics, dev, torch.float64), cam)[..., :2] / depth.unsqueeze(-1)
    uv = torch.einsum("nij,npj->npi", upload(post_rots, dev, torch.float64)[:, :2, :2], uv) \
        + upload(post_trans, dev, torch.float64)[:, None, :2]
    px = torch.round(uv)  # (N, P, 2) pixel u, v (half to even, as np.rint)
    keep = front & (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
    cams = torch.arange(n, device=dev).unsqueeze(1)
    flat = (cams * h + px[..., 1].clamp(0, h - 1).long()) * w + px[..., 0].clamp(0, w - 1).long()  # (N, P)
    flat = torch.where(keep, flat, n * h * w)  # dropped points land in one spare slot
    # float32 rounding must not lift a depth just below d_max onto d_max (rounding is monotonic, so
    # the float32 minimum equals the rounded float64 minimum)
    below = float(np.nextafter(np.float32(depth_range[1]), np.float32(0)))
    depth32 = depth.to(torch.float32).clamp_(max=below)
    out = torch.zeros(n * h * w + 1, dtype=torch.float32, device=dev)  # pixels no point reaches stay 0
    out.scatter_reduce_(0, flat.reshape(-1), depth32.reshape(-1), "amin", include_self=False)
    return out[:-1].view(n, h, w)


def sparse_depth_maps(points_ego: np.ndarray, sensor2ego: np.ndarray, intrinsics: np.ndarray,
                      post_rots: np.ndarray, post_trans: np.ndarray, hw: tuple[int, int],
                      depth_range: tuple[float, float]) -> np.ndarray:
    """`sparse_depth_tensors` on numpy inputs (N stacked cameras) -> (N, H, W) float32 numpy."""
    pts = torch.from_numpy(np.ascontiguousarray(points_ego, np.float64)).reshape(-1, np.shape(points_ego)[-1])
    mats = [torch.from_numpy(np.asarray(m, np.float64)) for m in (sensor2ego, intrinsics, post_rots, post_trans)]
    return sparse_depth_tensors(pts, *mats, hw, depth_range).numpy()


def sparse_depth_map(points_ego: np.ndarray, sensor2ego: np.ndarray, intrinsic: np.ndarray,
                     post_rot: np.ndarray, post_tran: np.ndarray, hw: tuple[int, int],
                     depth_range: tuple[float, float]) -> np.ndarray:
    """`sparse_depth_maps` for one camera -> (H, W) float32."""
    return sparse_depth_maps(points_ego, np.asarray(sensor2ego)[None], np.asarray(intrinsic)[None],
                             np.asarray(post_rot)[None], np.asarray(post_tran)[None], hw, depth_range)[0]


def sample_bda(data_cfg: DataConfig, rng: np.random.Generator) -> tuple[bool, bool]:
    """Random BEV flips (x, y), each with p = 0.5 when cfg.data.train_bda_flip."""
    if not data_cfg.train_bda_flip:
        return False, False
    fx, fy = rng.integers(0, 2, size=2)
    return bool(fx), bool(fy)


def bda_matrix(flip_x: bool, flip_y: bool) -> np.ndarray:
    """(3, 3) float32 BEV augmentation applied to ego xyz (flips only: rotation 0, scale 1)."""
    return np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0]).astype(np.float32)


def apply_bda_points(points: np.ndarray, bda: np.ndarray) -> np.ndarray:
    """Points (P, >=3) with xyz mapped by bda (other columns untouched); returns a new array."""
    out = np.array(points, copy=True)
    out[:, :3] = out[:, :3] @ np.asarray(bda, out.dtype).T
    return out


def flip_grid(grid: np.ndarray, flip_x: bool, flip_y: bool) -> np.ndarray:
    """An [x][y][...] grid (labels or masks) under the BEV flips; returns a contiguous copy."""
    if flip_x:
        grid = grid[::-1]
    if flip_y:
        grid = grid[:, ::-1]
    return np.ascontiguousarray(grid)


def image_hw(img: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(H, W) of one raw camera image: (H, W, 3) uint8 numpy or (3, H, W) uint8 torch (any device)."""
    if isinstance(img, torch.Tensor):
        if img.ndim != 3 or img.shape[0] != 3 or img.dtype != torch.uint8:
            raise ValueError(f"camera image tensor must be (3, H, W) uint8 RGB, got {tuple(img.shape)} {img.dtype}")
        return int(img.shape[1]), int(img.shape[2])
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        shape = getattr(img, "shape", None)
        raise ValueError(f"camera image must be (H, W, 3) uint8 RGB, got {shape} {getattr(img, 'dtype', type(img).__name__)}")
    return int(img.shape[0]), int(img.shape[1])


def eval_image_matrices(images: Sequence[np.ndarray] | torch.Tensor, cfg: Config | DataConfig
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """post_rots (N, 3, 3), post_trans (N, 3) of the test transform of raw camera images ((H, W, 3)
    uint8 numpy or (3, H, W) uint8 tensors), checking each image but not transforming it."""
    data_cfg = cfg.data if isinstance(cfg, Config) else cfg
    rots, trans = [], []
    for img in images:
        rot, tran = image_aug_matrices(eval_image_aug(image_hw(img), data_cfg.input_size))
        rots.append(rot)
        trans.append(tran)
    return torch.from_numpy(np.stack(rots)), torch.from_numpy(np.stack(trans))




def _resize_crop_normalize(batch: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB, all one size -> (B, 3, H_in, W_in) float32: the official test transform.
    PIL's `Image.resize` (bicubic, antialiased) to (int(W r), int(H r)) with r = W_in / W, rounded to
    uint8, the bottom-centred crop (zero outside the image), then mmcv's normalisation (BGR order)."""
    src_h, src_w = int(batch.shape[2]), int(batch.shape[3])
    aug = eval_image_aug((src_h, src_w), input_hw)
    new_hw = (int(src_h * aug.resize), int(src_w * aug.resize))
    if new_hw != (src_h, src_w):
        if batch.device.type == "cpu":  # torch's uint8 antialiased path: PIL's filters in fixed point
            batch = F.interpolate(batch, size=new_hw, mode="bicubic", antialias=True, align_corners=False)
        else:  # float on the GPU (no uint8 kernel there), rounded and clamped to uint8 as PIL does
            batch = F.interpolate(batch.float(), size=new_hw, mode="bicubic", antialias=True, align_corners=False)
            batch = batch.round_().clamp_(0, 255)
    in_h, in_w = input_hw
    x0, y0 = aug.crop[0], aug.crop[1]
    out = torch.zeros(batch.shape[0], 3, in_h, in_w, dtype=torch.float32, device=batch.device)
    v0, v1 = max(0, -y0), min(in_h, new_hw[0] - y0)  # output rows covered by the resized image
    u0, u1 = max(0, -x0), min(in_w, new_hw[1] - x0)
    if v1 > v0 and u1 > u0:
        out[:, :, v0:v1, u0:u1] = batch[:, :, v0 + y0:v1 + y0, u0 + x0:u1 + x0]
    out = out.flip(1)  # mmcv imnormalize(to_rgb=True) on an RGB image: channel order B, G, R
    mean = device_constant(tuple(IMG_MEAN.tolist()), out.device, torch.float32).view(1, 3, 1, 1)
    std_inv = device_constant(tuple(IMG_STD_INV.tolist()), out.device, torch.float32).view(1, 3, 1, 1)
    return out.sub_(mean).mul_(std_inv)


def eval_image_tensors(images: Sequence[np.ndarray] | torch.Tensor, cfg: Config | DataConfig,
                       device: torch.device | str = "cpu", pin_memory: bool = False) -> torch.Tensor:
    """Raw camera images -> (N, 3, H_in, W_in) float32 network input on `device`, the official test
    transform (see `_resize_crop_normalize`). Images are (H, W, 3) uint8 RGB numpy arrays (uploaded
    as uint8; pinned first with pin_memory, for an asynchronous copy) or (3, H, W) uint8 RGB tensors,
    e.g. decoded on the GPU; same-size images are transformed as one batch."""
    data_cfg = cfg.data if isinstance(cfg, Config) else cfg
    input_hw = tuple(int(v) for v in data_cfg.input_size)
    device = torch.device(device)
    sizes = [image_hw(img) for img in images]
    out = None  # several sizes: filled group by group
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(sizes):
        groups.setdefault(hw, []).append(i)
    for idx in groups.values():
        if isinstance(images, torch.Tensor) or isinstance(images[idx[0]], torch.Tensor):
            batch = torch.stack([images[i] for i in idx]).to(device, non_blocking=True)  # (B, 3, H, W)
        else:
            pinned = pin_memory and device.type == "cuda"
            host = torch.empty((len(idx), *sizes[idx[0]], 3), dtype=torch.uint8, pin_memory=pinned)  # (B, H, W, 3)
            np.stack([images[i] for i in idx], out=host.numpy())  # one copy, into page-locked memory when pinned
            batch = host.to(device, non_blocking=True).permute(0, 3, 1, 2)  # channels-last view
        result = _resize_crop_normalize(batch, input_hw)
        if len(groups) == 1:  # one size (the usual rig): no copy
            return result
        if out is None:
            out = torch.empty(len(sizes), 3, *input_hw, dtype=torch.float32, device=device)
        for j, i in enumerate(idx):  # integer indices: a list index would be uploaded, a stream sync on CUDA
            out[i] = result[j]
    if out is None:  # no images
        return torch.empty(0, 3, *input_hw, dtype=torch.float32, device=device)
    return out


def eval_image_inputs(images: Sequence[np.ndarray] | torch.Tensor, cfg: Config | DataConfig,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw camera images -> the network input of the test transform: imgs (N, 3, H_in, W_in) float32
    normalised (on `device`), post_rots (N, 3, 3), post_trans (N, 3). The intrinsics are unchanged
    by the transform (the model combines K with post_rot/post_tran)."""
    rots, trans = eval_image_matrices(images, cfg)
    return eval_image_tensors(images, cfg, device), rots, trans


RANGE_MARGIN = 1e-3  # points must lie 1 mm inside the grid (the reference's margin, applied once)


def points_in_grid(points: np.ndarray, grid_cfg: GridConfig) -> np.ndarray:
    """The rows of points (P, >=3) whose xyz lie inside the grid box shrunk by RANGE_MARGIN; NaN rows
    drop out. A fixed box: the reference's filter shrinks it by 1 mm per sample (a bug)."""
    return points[in_grid_mask(points, grid_cfg)]


def in_grid_mask(points: np.ndarray, grid_cfg: GridConfig) -> np.ndarray:
    """(P,) bool: xyz inside the box [lower + RANGE_MARGIN, upper - RANGE_MARGIN] (float64 bounds).
    float32 points are compared per column against the float32 bounds that decide the same way
    (the nearest float32 inside the box), without float64 copies of the cloud: ~10x faster."""
    lo = np.asarray(grid_cfg.lower, np.float64) + RANGE_MARGIN
    hi = np.asarray(grid_cfg.upper, np.float64) - RANGE_MARGIN
    if points.dtype == np.float32:
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
        lo32 = np.where(lo32 < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)  # x >= lo  <=>  x >= lo32
        hi32 = np.where(hi32 > hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)  # x <= hi  <=>  x <= hi32
        lo, hi = lo32, hi32
    keep = np.ones(len(points), bool)
    for axis in range(3):
        col = points[:, axis]
        keep &= col >= lo[axis]
        keep &= col <= hi[axis]
    return keep


def eval_points(points: np.ndarray, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """The merged sweeps (P, 5) as the network gets them: thinned, range-filtered, finite; float32 and
    contiguous. The one filter for untrusted points: the dataset and the Predictor both call it, and
    the model trusts its output (every row finite, xyz inside the grid box) without filtering again."""
    keep = in_grid_mask(points, cfg.grid)  # NaN/Inf xyz fail the box comparisons
    for axis in range(3, points.shape[1]):  # intensity, ring
        keep &= np.isfinite(points[:, axis])
    if cfg.data.lidar_keep_prob < 1.0:  # thin_points' draw over every point, then the same mask
        keep &= (points[:, 4] > cfg.data.lidar_keep_ring_above) | (rng.random(len(points)) < cfg.data.lidar_keep_prob)
    return np.ascontiguousarray(np.compress(keep, points, axis=0), np.float32)  # compress: 3x faster than points[keep]


def thin_points(points: np.ndarray, data_cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """The official LiDAR sub-sampling of the merged sweeps (P, 5): keep a point if its ring index is
    above `lidar_keep_ring_above`, otherwise with probability `lidar_keep_prob` (1.0 keeps all)."""
    if data_cfg.lidar_keep_prob >= 1.0:
        return points
    keep = (points[:, 4] > data_cfg.lidar_keep_ring_above) | (rng.random(len(points)) < data_cfg.lidar_keep_prob)
    return points[keep]


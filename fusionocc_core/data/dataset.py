"""The torch Dataset of FusionOcc samples from an info pickle, and `collate` into the batch dict.

One item = one key-frame sample, laid out per `fusionocc_core.frame` (without the batch axis):
T = 1 + cfg.data.num_adj_img_frames image frames per camera (previous key-frames; at a scene start
the current frame is repeated) with every camera in the key ego frame (ego at the stamp of the key
frame's first camera, as BEVDet4D's prepare_inputs), current + (num_lidar_sweeps - 1) previous
key-frame LiDAR sweeps moved into the LiDAR ego frame (ego at the current LiDAR stamp, the frame
of the ground truth), sparse depth from the current sweep only (time-compensated projection, as
the official PointToMultiViewDepth), 2D seg labels (key frame), and the Occ3D targets when they
exist.

Train: per camera a random resize/crop/flip/rotate applied identically to all T images and
(nearest) to the seg labels; random BEV x/y flips of points, bda and targets. Test: the
deterministic test transform, no BEV flip, and the LiDAR sub-sampling seeded by the sample index
(so evaluation is reproducible; the reference's is random). The range filter is fixed (the
reference's filter shrinks by 1 mm per sample, a bug).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from fusionocc_core.classes import FREE_LABEL, NUM_CLASSES
from fusionocc_core.config import Config, load_config
from fusionocc_core.data import poses
from fusionocc_core.data import transforms as T
from fusionocc_core.data.io import (DataError, decode_label_map, jpeg_reduction, read_image, read_infos,
                                    read_occ_gt, read_points)

TARGET_KEYS = ("voxel_semantics", "mask_camera", "mask_lidar", "seg_labels")
STACK_KEYS = ("imgs", "intrins", "sensor2ego", "post_rots", "post_trans", "bda", "sparse_depth")
REQUIRED_INFO_KEYS = ("token", "prev", "lidar_path", "lidar2ego_translation", "lidar2ego_rotation",
                      "ego2global_translation", "ego2global_rotation", "cams", "occ_path")


class OccDataset(Dataset):
    """FusionOcc samples of one info file under `data_root`, for `cfg` (a Config or preset name)."""

    def __init__(self, infos: str | Path | dict | list, data_root: str | Path, cfg: Config | str, train: bool):
        self.cfg = load_config(cfg)
        self.root = Path(data_root)
        self.train = bool(train)
        source = infos if isinstance(infos, (str, Path)) else "<infos>"
        data = read_infos(infos) if isinstance(infos, (str, Path)) else (
            {"infos": infos} if isinstance(infos, list) else infos)
        self.infos: list[dict[str, Any]] = list(data["infos"])
        if not self.infos:
            raise DataError(f"{source}: the info file holds no samples")
        missing = [k for k in REQUIRED_INFO_KEYS if k not in self.infos[0]]
        cams_missing = [c for c in self.cfg.data.cameras if c not in self.infos[0].get("cams", {})]
        if missing or cams_missing:
            raise DataError(f"{source}: not a fusionocc-prepare info file (missing {', '.join(missing + cams_missing)})")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data root not found")
        gts = self.root / "gts"
        if self.train and not gts.is_dir():
            raise DataError(f"{gts}: Occ3D gts folder not found (training needs the ground truth)")
        self.has_gts = gts.is_dir()
        self.index = {info["token"]: i for i, info in enumerate(self.infos)}

    def __len__(self) -> int:
        return len(self.infos)

    def label_counts(self, camera_mask: bool, progress: bool = False) -> np.ndarray:
        """(NUM_CLASSES,) int64 voxel count per class over the split's ground truth; with
        camera_mask only camera-visible voxels count (what a use_mask loss sees)."""
        counts = np.zeros(NUM_CLASSES, np.int64)
        for info in tqdm(self.infos, desc="label counts", unit="sample", disable=not progress):
            gt = read_occ_gt(self.root / info["occ_path"] / "labels.npz")
            labels = gt["semantics"][gt["mask_camera"].astype(bool)] if camera_mask else gt["semantics"].ravel()
            if labels.size and int(labels.max()) >= NUM_CLASSES:
                raise DataError(f"{info['occ_path']}: labels.npz holds label {int(labels.max())} >= {NUM_CLASSES}")
            counts += np.bincount(labels, minlength=NUM_CLASSES)
        return counts

    def history(self, i: int, count: int) -> list[dict[str, Any]]:
        """The `count` previous key-frames of sample i, newest first; the current one past a scene start."""
        current = self.infos[i]
        out, info = [], current
        for _ in range(count):
            j = self.index.get(info.get("prev") or "")
            if j is None:  # scene start (or the previous sample is not in this info file)
                out.extend([current] * (count - len(out)))
                break
            info = self.infos[j]
            out.append(info)
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = range(len(self.infos))[i]  # negative indices; IndexError past the end
        info = self.infos[i]
        data = self.cfg.data
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()) if self.train else i)
        global2lidarego = poses.invert(_ego2global(info))  # global -> ego at the current LiDAR stamp
        keyego2global = key_ego2global(info, data.cameras)  # ego at the key frame's first camera stamp
        images = self._images(i, poses.invert(keyego2global), rng)
        points, current_xyz = self._points(i, global2lidarego, rng)

        # sparse depth (key frame, current sweep only; camera frame, so unaffected by bda): the
        # LiDAR-ego points go through the cameras moved into the LiDAR ego frame
        depth_range = (self.cfg.grid.depth[0], self.cfg.grid.depth[1])
        cams_in_lidarego = global2lidarego @ keyego2global @ images["sensor2ego"][0]  # (N, 4, 4)
        sparse_depth = T.sparse_depth_maps(current_xyz, cams_in_lidarego, images["intrins"][0],
                                           images["post_rots"][0], images["post_trans"][0], data.input_size, depth_range)

        flip_x, flip_y = T.sample_bda(data, rng) if self.train else (False, False)
        bda = T.bda_matrix(flip_x, flip_y)
        points = T.apply_bda_points(points, bda)

        sample: dict[str, Any] = {k: torch.from_numpy(v) for k, v in images.items() if k != "augs"}
        sample.update({"bda": torch.from_numpy(bda), "points": torch.from_numpy(points),
                       "sparse_depth": torch.from_numpy(sparse_depth), "sample_token": info["token"],
                       "scene_name": info.get("scene_name", "")})
        gt_path = self.root / info["occ_path"] / "labels.npz"
        if self.train or gt_path.is_file():  # inference runs without targets where there are none
            gt = read_occ_gt(gt_path)
            sample["voxel_semantics"] = torch.from_numpy(T.flip_grid(gt["semantics"], flip_x, flip_y).astype(np.int64))
            sample["mask_camera"] = torch.from_numpy(T.flip_grid(gt["mask_camera"], flip_x, flip_y))
            sample["mask_lidar"] = torch.from_numpy(T.flip_grid(gt["mask_lidar"], flip_x, flip_y))
            sample["seg_labels"] = torch.from_numpy(
                self._seg_labels(info, images["augs"], images["post_rots"][0], images["post_trans"][0]))
        return sample

    def _images(self, i: int, global2key: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        """T x N normalised images and their matrices; one augmentation per camera for all T frames.
        sensor2ego[t, n] = global2key @ the camera's pose at its own stamp (global2key: global ->
        key ego frame)."""
        data = self.cfg.data
        info = self.infos[i]
        frames = [info] + self.history(i, data.num_adj_img_frames)
        n_t, n_cam = len(frames), len(data.cameras)
        in_h, in_w = data.input_size
        out = {"imgs": np.empty((n_t, n_cam, 3, in_h, in_w), np.float32),
               "intrins": np.zeros((n_t, n_cam, 3, 3), np.float32),
               "sensor2ego": np.zeros((n_t, n_cam, 4, 4), np.float32),
               "post_rots": np.zeros((n_t, n_cam, 3, 3), np.float32),
               "post_trans": np.zeros((n_t, n_cam, 3), np.float32), "augs": []}
        raws: list[list[np.ndarray]] = [[] for _ in frames]  # test: full-resolution images per frame
        for n, cam in enumerate(data.cameras):
            src_hw = _source_hw(self.root, info["cams"][cam])
            aug = T.sample_image_aug(src_hw, data, rng) if self.train else T.eval_image_aug(src_hw, data.input_size)
            out["augs"].append((aug, src_hw))
            # train: decode JPEGs at 1/2 or 1/4 size when enough; test: full size, as the official resize
            reduction = jpeg_reduction(src_hw, aug.resize) if self.train else 1
            for t, frame in enumerate(frames):
                c = frame["cams"][cam]
                path = self.root / c["data_path"]
                raw = read_image(path, reduction)
                if raw.shape[0] * reduction != src_hw[0] or raw.shape[1] * reduction != src_hw[1]:
                    raise DataError(f"{path}: image is {raw.shape[1] * reduction}x{raw.shape[0] * reduction}, "
                                    f"its sample_data says {src_hw[1]}x{src_hw[0]}")
                if self.train:
                    img, out["post_rots"][t, n], out["post_trans"][t, n] = T.augment_image(raw, aug, src_hw)
                    T.normalize_image(img, out=out["imgs"][t, n])
                else:
                    raws[t].append(raw)
                out["intrins"][t, n] = np.asarray(c["cam_intrinsic"], np.float64)
                out["sensor2ego"][t, n] = global2key @ _cam2global(c)
        if not self.train:  # the test transform shared with the Predictor
            for t, images in enumerate(raws):
                imgs, out["post_rots"][t], out["post_trans"][t] = (v.numpy() for v in T.eval_image_inputs(images, data))
                out["imgs"][t] = imgs
        return out

    def _points(self, i: int, global2lidarego: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(merged sweeps (P, 5) through eval_points: sub-sampled, finite, inside the grid box (the model's
        input contract; the BEV flips keep them there, the grid being symmetric in x and y), current
        sweep xyz (Q, 3)), LiDAR ego frame."""
        data = self.cfg.data
        sweeps = [self.infos[i]] + self.history(i, data.num_lidar_sweeps - 1)
        moved: dict[str, np.ndarray] = {}  # each file once (scene starts repeat the current sweep)
        for sweep in sweeps:
            if sweep["token"] not in moved:
                pts = read_points(self.root / sweep["lidar_path"]).copy()
                lidar2lidarego = global2lidarego @ _ego2global(sweep) @ poses.transform_matrix(
                    sweep["lidar2ego_translation"], sweep["lidar2ego_rotation"])
                pts[:, :3] = poses.apply(lidar2lidarego, pts[:, :3])
                moved[sweep["token"]] = pts
        points = np.concatenate([moved[s["token"]] for s in sweeps])  # (P, 5) x y z intensity ring
        # official sub-sampling (rings above 16, else with probability p), then the fixed range box
        return T.eval_points(points, self.cfg, rng), moved[sweeps[0]["token"]][:, :3]

    def _seg_labels(self, info: dict[str, Any], augs: list, post_rots: np.ndarray, post_trans: np.ndarray) -> np.ndarray:
        """(N, H_in, W_in) int64 2D labels of the key frame under its augmentation; 17 = none."""
        in_h, in_w = self.cfg.data.input_size
        out = np.full((len(self.cfg.data.cameras), in_h, in_w), FREE_LABEL, np.int64)
        imgseg = info.get("imgseg") or {}
        for n, cam in enumerate(self.cfg.data.cameras):
            if cam in imgseg:
                labels, stride = decode_label_map(imgseg[cam])
                out[n] = T.warp_label_map(labels, stride, augs[n][1], post_rots[n], post_trans[n], (in_h, in_w))
        return out


def _ego2global(rec: dict[str, Any]) -> np.ndarray:
    return poses.transform_matrix(rec["ego2global_translation"], rec["ego2global_rotation"])


def key_ego2global(info: dict[str, Any], cameras: Sequence[str]) -> np.ndarray:
    """(4, 4) pose of the key ego frame of a sample: the ego pose at the stamp of its first camera
    (cameras[0], CAM_FRONT_LEFT in the model's order), as BEVDet4D's prepare_inputs takes it."""
    return _ego2global(info["cams"][cameras[0]])


def _cam2global(cam: dict[str, Any]) -> np.ndarray:
    return _ego2global(cam) @ poses.transform_matrix(cam["sensor2ego_translation"], cam["sensor2ego_rotation"])


def _source_hw(root: Path, cam: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of a camera's source image: from the info, else by decoding the image once."""
    if cam.get("height") and cam.get("width"):
        return int(cam["height"]), int(cam["width"])
    return read_image(root / cam["data_path"]).shape[:2]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict (and lists of tensors) to device."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, (list, tuple)) and v and all(torch.is_tensor(x) for x in v):
            out[k] = [x.to(device, non_blocking=True) for x in v]
        else:
            out[k] = v
    return out


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dataset items -> the batch dict of `fusionocc_core.frame` (targets only if every item has them)."""
    if not samples:
        raise ValueError("collate: empty batch")
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in STACK_KEYS}
    batch["points"] = [s["points"] for s in samples]
    if all("voxel_semantics" in s for s in samples):
        for k in TARGET_KEYS:
            batch[k] = torch.stack([s[k] for s in samples])
    batch["sample_tokens"] = [s["sample_token"] for s in samples]
    batch["scene_names"] = [s["scene_name"] for s in samples]
    return batch

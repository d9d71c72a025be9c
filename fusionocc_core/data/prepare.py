"""`fusionocc-prepare`: FusionOcc info pickles (+ 2D seg labels from lidarseg) from any nuScenes root.

Works on the real v1.0-mini / v1.0-trainval / v1.0-test layouts and on `fusionocc-synth` output,
through the nuScenes devkit. The pickle is {'infos': [...], 'metadata': {...}}, one info per
key-frame sample, sorted by scene and time, with the fields of FusionOcc's
`fusionocc-nuscenes_infos_*.pkl` (paths relative to the data root instead of ./data/nuscenes):

  token, scene_token, scene_name, timestamp (µs), prev / next (sample tokens, '' at the ends),
  lidar_token, lidar_path, lidar_timestamp, lidar2ego_translation / _rotation (w x y z),
  ego2global_translation / _rotation (ego pose at the LiDAR stamp), lidarseg_path (or None),
  occ_path = 'gts/<scene_name>/<token>' (Occ3D directory holding labels.npz),
  cams = {CAM_*: data_path, sample_data_token, timestamp, width, height, cam_intrinsic (3x3),
          sensor2ego_translation / _rotation, ego2global_translation / _rotation (ego pose at the
          camera stamp), sensor2lidar_rotation (3x3) / _translation (3)},
  imgseg = {CAM_*: packed label map} or None without lidarseg (see below).

imgseg (the reference's `img_seg/gen_segmap.py`, stored in the info instead of .npy files): the
current key-frame LiDAR points are moved lidar -> ego -> global -> ego at the camera stamp ->
camera, kept with depth > 0.1 m inside the image; each paints an 8 px wide x 16 px tall box
(u-4..u+3, v-8..v+7) with its 17-class label, on a canvas initialised to 17 (= no label),
which is kept at stride 8 -> (ceil(H/8), ceil(W/8)) = (113, 200) uint8 for 1600x900. Where
boxes overlap the *nearest* point wins (the reference lets the last point win). The map is the
canvas sampled at pixels (8r, 8c); `transforms.warp_label_map` gives each source pixel its nearest
sample. Packed with `io.encode_label_map` (zlib); `io.decode_label_map(entry)` -> (map, stride).
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from fusionocc_core.classes import CAMERA_NAMES, FREE_LABEL, LIDAR_NAME, LIDARSEG_NAME_TO_OCC
from fusionocc_core.cli import ToolParser, tool_main
from fusionocc_core.data import poses
from fusionocc_core.data.io import DataError, encode_label_map, read_lidarseg, read_points
from fusionocc_core.tools.atomic import atomic_write

INFO_FORMAT = "fusionocc_ros.infos/1"
NUSCENES_TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                   "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")
IMGSEG_STRIDE = 8
IMGSEG_MIN_DEPTH = 0.1

LIDARSEG_TO_OCC = LIDARSEG_NAME_TO_OCC  # nuScenes-lidarseg name -> Occ3D class (fusionocc_core.classes)


def load_nuscenes(data_root: str | Path, version: str) -> Any:
    """The devkit's NuScenes for `data_root`/`version`, after checking every table file exists."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found")
    table_dir = root / version
    if not table_dir.is_dir():
        raise DataError(f"{table_dir}: nuScenes version folder not found")
    for table in NUSCENES_TABLES:
        if not (table_dir / f"{table}.json").is_file():
            raise DataError(f"{table_dir / (table + '.json')}: missing nuScenes table")
    from nuscenes.nuscenes import NuScenes  # heavy import, only for this tool

    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except Exception as exc:  # the devkit raises bare AssertionError/Exception on bad tables
        raise DataError(f"{table_dir}: the devkit cannot load this nuScenes root ({exc})") from None


def lidarseg_lut(nusc: Any) -> np.ndarray | None:
    """(256,) uint8 lookup nuScenes-lidarseg index -> Occ3D class, or None without lidarseg."""
    if not hasattr(nusc, "lidarseg"):
        return None
    lut = np.zeros(256, dtype=np.uint8)  # unknown categories -> 0 "others"
    for index, name in nusc.lidarseg_idx2name_mapping.items():
        lut[int(index)] = LIDARSEG_TO_OCC.get(name, 0)
    return lut


def select_scenes(nusc: Any, split: str = "all", names: Iterable[str] | None = None) -> list[dict]:
    """Scenes of `split` ('train', 'val' or 'all'; nuScenes splits, mini_* for v1.0-mini), optionally
    restricted to `names`. Never empty: an empty selection is an error naming what was asked."""
    scenes = sorted(nusc.scene, key=lambda s: s["name"])
    if split != "all":
        from nuscenes.utils.splits import create_splits_scenes

        key = f"mini_{split}" if nusc.version.endswith("mini") else split
        allowed = set(create_splits_scenes()[key])
        scenes = [s for s in scenes if s["name"] in allowed]
    if names:
        wanted = list(names)
        unknown = sorted(set(wanted) - {s["name"] for s in nusc.scene})
        if unknown:
            raise DataError(f"{nusc.dataroot}: no scene named {', '.join(unknown)} in {nusc.version}")
        scenes = [s for s in scenes if s["name"] in set(wanted)]
    if not scenes:
        asked = f"split '{split}'" + (f" and scenes {', '.join(names)}" if names else "")
        raise DataError(f"{nusc.dataroot}: {nusc.version} has no scene in {asked} "
                        f"(its scenes: {', '.join(sorted(s['name'] for s in nusc.scene)[:10])})")
    return scenes


def _pose_fields(nusc: Any, sd: dict) -> dict[str, Any]:
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return {"ego2global_translation": list(pose["translation"]), "ego2global_rotation": list(pose["rotation"])}


def _check_file(root: Path, rel: str) -> None:
    if not (root / rel).is_file():
        raise DataError(f"{root / rel}: sample file not found")


def sample_info(nusc: Any, sample: dict, root: Path) -> dict[str, Any]:
    """The info dict of one key-frame sample (no imgseg yet); checks that its files exist."""
    scene = nusc.get("scene", sample["scene_token"])
    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    _check_file(root, lidar_sd["filename"])
    info: dict[str, Any] = {
        "token": sample["token"], "scene_token": sample["scene_token"], "scene_name": scene["name"],
        "timestamp": int(sample["timestamp"]), "prev": sample["prev"], "next": sample["next"],
        "lidar_token": lidar_sd["token"], "lidar_path": lidar_sd["filename"],
        "lidar_timestamp": int(lidar_sd["timestamp"]),
        "lidar2ego_translation": list(lidar_cs["translation"]), "lidar2ego_rotation": list(lidar_cs["rotation"]),
        **_pose_fields(nusc, lidar_sd),
        "lidarseg_path": None,
        "occ_path": f"gts/{scene['name']}/{sample['token']}",
        "sweeps": [], "cams": {}, "imgseg": None,
    }
    if hasattr(nusc, "lidarseg"):
        try:
            info["lidarseg_path"] = nusc.get("lidarseg", lidar_sd["token"])["filename"]
        except KeyError:
            pass
    lidar2global = (poses.transform_matrix(info["ego2global_translation"], info["ego2global_rotation"])
                    @ poses.transform_matrix(info["lidar2ego_translation"], info["lidar2ego_rotation"]))
    for cam in CAMERA_NAMES:
        if cam not in sample["data"]:
            raise DataError(f"{root / nusc.version / 'sample_data.json'}: sample {sample['token']} has no {cam}")
        sd = nusc.get("sample_data", sample["data"][cam])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        _check_file(root, sd["filename"])
        entry = {
            "data_path": sd["filename"], "type": cam, "sample_data_token": sd["token"],
            "timestamp": int(sd["timestamp"]), "width": int(sd.get("width") or 0), "height": int(sd.get("height") or 0),
            "cam_intrinsic": np.asarray(cs["camera_intrinsic"], np.float64),
            "sensor2ego_translation": list(cs["translation"]), "sensor2ego_rotation": list(cs["rotation"]),
            **_pose_fields(nusc, sd),
        }
        cam2global = (poses.transform_matrix(entry["ego2global_translation"], entry["ego2global_rotation"])
                      @ poses.transform_matrix(entry["sensor2ego_translation"], entry["sensor2ego_rotation"]))
        cam2lidar = poses.invert(lidar2global) @ cam2global
        entry["sensor2lidar_rotation"] = cam2lidar[:3, :3]
        entry["sensor2lidar_translation"] = cam2lidar[:3, 3]
        info["cams"][cam] = entry
    return info


def paint_label_map(uv: np.ndarray, depth: np.ndarray, labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Stride-8 label map (ceil(H/8), ceil(W/8)) of points at integer source pixels uv (M, 2): each
    paints the reference's box u-4..u+3 x v-8..v+7; the nearest point wins per cell; 17 elsewhere."""
    h, w = hw
    stride = IMGSEG_STRIDE
    out = np.full((-(-h // stride), -(-w // stride)), FREE_LABEL, dtype=np.uint8)
    if len(uv) == 0:
        return out
    u, v = uv[:, 0].astype(np.int64), uv[:, 1].astype(np.int64)
    # the box's cols u-4..u+3 hold exactly one multiple of 8, its rows v-8..v+7 exactly two
    c = (u + 3) // stride  # = ceil((u - 4) / 8)
    r0 = (v - 1) // stride  # = ceil((v - 8) / 8)
    rows = np.concatenate([r0, r0 + 1])
    cols = np.concatenate([c, c])
    d = np.concatenate([depth, depth])
    lab = np.concatenate([labels, labels])
    ok = (rows >= 0) & (rows < out.shape[0]) & (cols >= 0) & (cols < out.shape[1])
    rows, cols, d, lab = rows[ok], cols[ok], d[ok], lab[ok]
    cell = rows * out.shape[1] + cols
    order = np.argsort(d, kind="stable")  # nearest first
    _, first = np.unique(cell[order], return_index=True)
    pick = order[first]
    out.reshape(-1)[cell[pick]] = lab[pick]
    return out


def project_to_camera(points_lidar: np.ndarray, lidar2cam: np.ndarray, intrinsic: np.ndarray,
                      hw: tuple[int, int], min_depth: float = IMGSEG_MIN_DEPTH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LiDAR points (P, 3) -> (kept index (M,), integer pixel uv (M, 2), depth (M,)) inside the image."""
    cam = poses.apply(lidar2cam, np.asarray(points_lidar, np.float64))
    depth = cam[:, 2]
    idx = np.flatnonzero(depth > min_depth)
    uvw = cam[idx] @ np.asarray(intrinsic, np.float64).T
    uv = np.floor(uvw[:, :2] / uvw[:, 2:3]).astype(np.int64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < hw[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < hw[0])
    return idx[inside], uv[inside], depth[idx[inside]]


def imgseg_for_sample(info: dict[str, Any], root: Path, lut: np.ndarray) -> dict[str, Any]:
    """Per camera, the packed stride-8 label map painted from the key-frame lidarseg labels."""
    points = read_points(root / info["lidar_path"])
    labels = lut[read_lidarseg(root / info["lidarseg_path"], len(points))]
    lidar2global = (poses.transform_matrix(info["ego2global_translation"], info["ego2global_rotation"])
                    @ poses.transform_matrix(info["lidar2ego_translation"], info["lidar2ego_rotation"]))
    out = {}
    for cam, c in info["cams"].items():
        cam2global = (poses.transform_matrix(c["ego2global_translation"], c["ego2global_rotation"])
                      @ poses.transform_matrix(c["sensor2ego_translation"], c["sensor2ego_rotation"]))
        hw = (c["height"] or 900, c["width"] or 1600)
        idx, uv, depth = project_to_camera(points[:, :3], poses.invert(cam2global) @ lidar2global,
                                           c["cam_intrinsic"], hw)
        out[cam] = encode_label_map(paint_label_map(uv, depth, labels[idx], hw), IMGSEG_STRIDE)
    return out


def create_infos(data_root: str | Path, version: str, split: str = "all", scenes: Iterable[str] | None = None,
                 imgseg: bool = True, progress: bool = True) -> dict[str, Any]:
    """Build the info dict {'infos', 'metadata'} for the selected scenes of a nuScenes root."""
    root = Path(data_root)
    nusc = load_nuscenes(root, version)
    selected = select_scenes(nusc, split, scenes)
    lut = lidarseg_lut(nusc) if imgseg else None
    samples = []
    for scene in selected:
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            samples.append(sample)
            token = sample["next"]
    infos = []
    for sample in tqdm(samples, desc="fusionocc-prepare", unit="sample", disable=(not progress) or None):
        info = sample_info(nusc, sample, root)
        if lut is not None and info["lidarseg_path"]:
            info["imgseg"] = imgseg_for_sample(info, root, lut)
        infos.append(info)
    metadata = {"version": version, "format": INFO_FORMAT, "split": split,
                "scenes": [s["name"] for s in selected], "imgseg_stride": IMGSEG_STRIDE,
                "has_lidarseg": lut is not None}
    return {"infos": infos, "metadata": metadata}


def write_infos(data: dict[str, Any], out: str | Path) -> Path:
    """Pickle `data` to `out` atomically (temporary sibling + rename)."""
    return atomic_write(out, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL))


def build_parser() -> ToolParser:
    p = ToolParser(
        prog="fusionocc-prepare",
        description="Write a FusionOcc info pickle (sample poses, calibration, Occ3D paths, temporal "
                    "links and 2D seg labels from lidarseg) for a nuScenes root, real or synthetic.")
    p.add_argument("--data-root", required=True, type=Path,
                   help="nuScenes root holding samples/, sweeps/, <version>/ tables, lidarseg/ and gts/")
    p.add_argument("--version", default="v1.0-trainval",
                   help="table folder under the root: v1.0-mini, v1.0-trainval or v1.0-test (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="output .pkl path (written atomically)")
    p.add_argument("--scenes", nargs="+", metavar="NAME", help="only these scene names (e.g. scene-0061)")
    p.add_argument("--split", choices=("train", "val", "all"), default="all",
                   help="official nuScenes split to keep (mini_train/mini_val for v1.0-mini; default: %(default)s)")
    p.add_argument("--no-imgseg", action="store_true",
                   help="skip the 2D seg labels (faster; training then has no seg supervision)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@tool_main("fusionocc-prepare")
def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit codes as every fusionocc-* tool (fusionocc_core.cli)."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    data = create_infos(args.data_root, args.version, args.split, args.scenes,
                        imgseg=not args.no_imgseg, progress=not args.quiet)
    write_infos(data, args.out)
    infos = data["infos"]
    with_seg = sum(1 for i in infos if i["imgseg"] is not None)
    with_gt = sum(1 for i in infos if (args.data_root / i["occ_path"] / "labels.npz").is_file())
    print(f"fusionocc-prepare: {len(infos)} samples from {len(data['metadata']['scenes'])} scene(s) -> {args.out} "
          f"({with_gt} with Occ3D gts, {with_seg} with imgseg; {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

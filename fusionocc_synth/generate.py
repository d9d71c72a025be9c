"""Write a synthetic nuScenes + Occ3D dataset root: the orchestration of world, sensors, labels
and tables. Work is split into per-(scene, key-frame) tasks (a key frame and the sweeps up to
the next one), optionally run in worker processes; the root is built in a temporary sibling
directory and renamed into place at the end."""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fusionocc_core.classes import LIDAR_NAME
from fusionocc_synth import occ3d, tables
from fusionocc_synth.camera import CameraRenderer, encode_jpeg
from fusionocc_synth.categories import LIDARSEG_INDEX, LIDARSEG_NAMES
from fusionocc_synth.geometry import rigid_inverse, yaw_to_quat
from fusionocc_synth.lidar import LidarSimulator
from fusionocc_synth.rig import (CAMERA_CALIBRATIONS, CAMERA_FRAMES_PER_KEYFRAME, CAMERA_TRIGGER_OFFSET_US,
                                      IMAGE_HEIGHT, IMAGE_WIDTH, KEYFRAME_PERIOD_US, LIDAR_CALIBRATION,
                                      LIDAR_PERIOD_US)
from fusionocc_synth.world import RASTER_RES, World, build_world

SWEEPS_PER_KEYFRAME = KEYFRAME_PERIOD_US // LIDAR_PERIOD_US  # 10
ANNOTATION_RANGE = 60.0  # m: things farther than this from the ego are not annotated
START_US = 1_533_110_400_000_000  # 2018-08-01 08:00 UTC


@dataclass(frozen=True)
class SceneSpec:
    """What one scene is: its index, name, seed, length and options."""

    index: int
    name: str
    seed: int
    keyframes: int
    sweeps: bool
    version: str
    render_scale: float

    @property
    def start_us(self) -> int:
        return START_US + self.index * 3_600_000_000

    @property
    def duration_s(self) -> float:
        return (self.keyframes - 1) * KEYFRAME_PERIOD_US * 1e-6 + 0.1

    @property
    def logfile(self) -> str:
        return f"n015-synth-s{self.seed}-{self.name}"


_CACHE: dict = {}  # per process: worlds and sensor simulators (their ray fans are precomputed)


def _world(spec: SceneSpec) -> World:
    key = ("world", spec.seed, spec.index, spec.keyframes)
    if key not in _CACHE:
        if len(_CACHE) > 8:  # a worker process keeps a few worlds (one per scene it serves)
            _CACHE.clear()
        _CACHE[key] = build_world(spec.seed, spec.index, spec.duration_s)
    return _CACHE[key]


def _sensors(scale: float) -> tuple[LidarSimulator, dict[str, CameraRenderer]]:
    key = ("sensors", scale)
    if key not in _CACHE:
        _CACHE[key] = (LidarSimulator(), {n: CameraRenderer(c, scale) for n, c in CAMERA_CALIBRATIONS.items()})
    return _CACHE[key]


def _ego_pose_record(world: World, sd_token: str, ts: int, t: float) -> dict:
    pose = world.road2global @ world.ego_transform(t)
    yaw = float(np.arctan2(pose[1, 0], pose[0, 0]))
    return {"token": sd_token, "timestamp": ts, "rotation": yaw_to_quat(yaw),
            "translation": [float(pose[0, 3]), float(pose[1, 3]), 0.0]}


def _sd_record(spec: SceneSpec, channel: str, ts: int, key: bool, kf: int, fmt: str) -> dict:
    folder = "samples" if key else "sweeps"
    ext = "pcd.bin" if fmt == "pcd" else "jpg"
    sd_token = tables.token(spec.seed, spec.name, channel, ts)
    cam = fmt == "jpg"
    return {"token": sd_token, "sample_token": tables.token(spec.seed, spec.name, "sample", kf),
            "ego_pose_token": sd_token, "calibrated_sensor_token": tables.token(spec.seed, spec.name, "cs", channel),
            "timestamp": ts, "fileformat": fmt, "is_key_frame": key,
            "height": IMAGE_HEIGHT if cam else 0, "width": IMAGE_WIDTH if cam else 0,
            "filename": f"{folder}/{channel}/{spec.logfile}__{channel}__{ts}.{ext}"}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def run_task(root: Path, spec: SceneSpec, kf: int) -> dict[str, list[dict]]:
    """Produce key frame `kf` of a scene (+ its sweeps until the next key frame); returns the
    table records it created (prev/next links are set later)."""
    world = _world(spec)
    lidar, cams = _sensors(spec.render_scale)
    out: dict[str, list[dict]] = {"sample_data": [], "ego_pose": [], "sample_annotation": [], "lidarseg": []}
    last = spec.keyframes - 1
    lidar_js = [kf * SWEEPS_PER_KEYFRAME + j for j in (range(SWEEPS_PER_KEYFRAME) if spec.sweeps and kf < last else [0])]
    cam_ms = [kf * CAMERA_FRAMES_PER_KEYFRAME + m for m in
              (range(CAMERA_FRAMES_PER_KEYFRAME) if spec.sweeps and kf < last else [0])]
    sample_token = tables.token(spec.seed, spec.name, "sample", kf)
    t_key_us = kf * KEYFRAME_PERIOD_US
    key_cams = []
    for m in cam_ms:
        for name, cam in cams.items():
            rel = m * 1_000_000 // 12 + CAMERA_TRIGGER_OFFSET_US[name]
            ts = spec.start_us + rel
            t = rel * 1e-6
            key = m % CAMERA_FRAMES_PER_KEYFRAME == 0
            rec = _sd_record(spec, name, ts, key, kf, "jpg")
            render = cam.render(world, t)
            _write(root / rec["filename"], encode_jpeg(render.rgb))
            out["sample_data"].append(rec)
            out["ego_pose"].append(_ego_pose_record(world, rec["token"], ts, t))
            if key:
                key_cams.append((name, t, render))
    for j in lidar_js:
        rel = j * LIDAR_PERIOD_US
        ts, t = spec.start_us + rel, rel * 1e-6
        key = j % SWEEPS_PER_KEYFRAME == 0
        rec = _sd_record(spec, LIDAR_NAME, ts, key, kf, "pcd")
        sweep = lidar.sweep(world, t, np.random.default_rng([spec.seed, spec.index, j]))
        _write(root / rec["filename"], sweep.points.tobytes())
        out["sample_data"].append(rec)
        out["ego_pose"].append(_ego_pose_record(world, rec["token"], ts, t))
        if not key:
            continue
        seg_name = f"lidarseg/{spec.version}/{rec['token']}_lidarseg.bin"
        _write(root / seg_name, sweep.labels.astype(np.uint8).tobytes())
        out["lidarseg"].append({"token": rec["token"], "sample_data_token": rec["token"], "filename": seg_name})
        # Occ3D ground truth in the ego frame at the LiDAR stamp
        ego2road = world.ego_transform(t)
        sem = occ3d.semantics(world, t, ego2road)
        m_lidar = occ3d.mask_lidar(lidar.origin, sweep.points_ego)
        views = []
        for name, t_cam, render in key_cams:
            cam = cams[name]
            ego2cam = rigid_inverse(cam.cam2ego) @ rigid_inverse(world.ego_transform(t_cam)) @ ego2road
            views.append((ego2cam, cam.K, render.depth))
        m_cam = occ3d.mask_camera(views)
        gt = root / "gts" / spec.name / sample_token
        gt.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(gt / "labels.npz", semantics=sem, mask_lidar=m_lidar, mask_camera=m_cam)
        out["sample_annotation"] = _annotations(spec, world, t, ego2road, sample_token, sweep.solid)
    out["sample"] = [{"token": sample_token, "timestamp": spec.start_us + t_key_us,
                      "scene_token": tables.token(spec.seed, spec.name, "scene")}]
    return out


def _annotations(spec: SceneSpec, world: World, t: float, ego2road: np.ndarray, sample_token: str,
                 hit_solid: np.ndarray) -> list[dict]:
    """Boxes of the things within ANNOTATION_RANGE at key-frame time t (global frame)."""
    s = world.solids
    centre = s.centre_at(t)
    ego_xy = ego2road[:2, 3]
    sel = np.flatnonzero((s.instance >= 0) & (np.hypot(*(centre[:, :2] - ego_xy).T) < ANNOTATION_RANGE))
    n_pts = np.bincount(hit_solid[hit_solid >= 0], minlength=len(s))
    g = world.road2global
    psi = float(np.arctan2(g[1, 0], g[0, 0]))
    recs = []
    for i in sel:  # one record per annotated object (tens per sample): table assembly, not a hot path
        c = g[:3, :3] @ centre[i] + g[:3, 3]
        pts = int(n_pts[i])
        vis = "4" if pts >= 20 else "3" if pts >= 8 else "2" if pts >= 1 else "1"
        attr = s.attribute[i]
        recs.append({
            "token": tables.token(spec.seed, spec.name, "ann", int(s.instance[i]), sample_token),
            "sample_token": sample_token,
            "instance_token": tables.token(spec.seed, spec.name, "instance", int(s.instance[i])),
            "visibility_token": vis,
            "attribute_tokens": [tables.token("attribute", attr)] if attr else [],
            "translation": [float(c[0]), float(c[1]), float(c[2])],
            "size": [float(2 * s.half[i, 1]), float(2 * s.half[i, 0]), float(2 * s.half[i, 2])],
            "rotation": yaw_to_quat(float(s.yaw[i]) + psi),
            "num_lidar_pts": pts, "num_radar_pts": 0,
            "category_name": LIDARSEG_NAMES[int(s.cls[i])],  # removed before writing
        })
    return recs


def _scene_tables(root: Path, spec: SceneSpec, parts: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Assemble one scene's records: chains, instances, scene, log, map, calibrated sensors."""
    world = _world(spec)
    out: dict[str, list[dict]] = {k: [] for k in ("sample", "sample_data", "ego_pose", "sample_annotation", "lidarseg")}
    for p in parts:
        for k in out:
            out[k].extend(p.get(k, []))
    out["sample"].sort(key=lambda r: r["timestamp"])
    tables.link_chain(out["sample"])
    by_channel: dict[str, list[dict]] = {}
    for rec in sorted(out["sample_data"], key=lambda r: r["timestamp"]):
        by_channel.setdefault(rec["calibrated_sensor_token"], []).append(rec)
    for chain in by_channel.values():
        tables.link_chain(chain)
    # instances and their annotation chains
    sample_order = {r["token"]: i for i, r in enumerate(out["sample"])}
    anns_by_inst: dict[str, list[dict]] = {}
    for a in sorted(out["sample_annotation"], key=lambda r: sample_order[r["sample_token"]]):
        anns_by_inst.setdefault(a["instance_token"], []).append(a)
    out["instance"] = []
    for inst, anns in anns_by_inst.items():
        tables.link_chain(anns)
        out["instance"].append({"token": inst, "category_token": tables.token("category", anns[0]["category_name"]),
                                "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                "last_annotation_token": anns[-1]["token"]})
        for a in anns:
            del a["category_name"]
    log_token = tables.token(spec.seed, spec.name, "log")
    map_token = tables.token(spec.seed, spec.name, "map")
    out["log"] = [{"token": log_token, "logfile": spec.logfile, "vehicle": "n015",
                   "date_captured": "2018-08-01", "location": "synthetic-town"}]
    out["map"] = [{"token": map_token, "log_tokens": [log_token], "category": "semantic_prior",
                   "filename": f"maps/{map_token}.png"}]
    _write_map_png(root / out["map"][0]["filename"], world)
    out["scene"] = [{"token": tables.token(spec.seed, spec.name, "scene"), "log_token": log_token,
                     "nbr_samples": len(out["sample"]), "first_sample_token": out["sample"][0]["token"],
                     "last_sample_token": out["sample"][-1]["token"], "name": spec.name,
                     "description": f"synthetic street scene (seed {spec.seed})"}]
    out["calibrated_sensor"] = [
        {"token": tables.token(spec.seed, spec.name, "cs", c.channel), "sensor_token": tables.token("sensor", c.channel),
         "translation": list(c.translation), "rotation": list(c.rotation),
         "camera_intrinsic": [list(r) for r in c.intrinsic]}
        for c in (LIDAR_CALIBRATION, *CAMERA_CALIBRATIONS.values())]
    return out


def _write_map_png(path: Path, world: World) -> None:
    """The nuScenes semantic-prior map: 255 = driveable surface, 0.1 m/px, origin bottom-left."""
    hr, wr = world.ground_cls.shape
    x0, y0 = world.raster_origin
    corners = np.array([[x0, y0], [x0 + wr * RASTER_RES, y0], [x0, y0 + hr * RASTER_RES],
                        [x0 + wr * RASTER_RES, y0 + hr * RASTER_RES]])
    g = world.road2global
    glob = corners @ g[:2, :2].T + g[:2, 3]
    coarse = 4  # rasterise at 0.4 m, then upsample to the 0.1 m map resolution
    w_px = int(np.ceil(glob[:, 0].max() / (RASTER_RES * coarse))) + 1
    h_px = int(np.ceil(glob[:, 1].max() / (RASTER_RES * coarse))) + 1
    gx = (np.arange(w_px) + 0.5) * RASTER_RES * coarse
    gy = (h_px - np.arange(h_px) - 0.5) * RASTER_RES * coarse  # row 0 = top = max y
    X, Y = np.meshgrid(gx, gy)
    inv = rigid_inverse(g)
    rx = inv[0, 0] * X + inv[0, 1] * Y + inv[0, 3]
    ry = inv[1, 0] * X + inv[1, 1] * Y + inv[1, 3]
    inside = (rx >= x0) & (rx < x0 + wr * RASTER_RES) & (ry >= y0) & (ry < y0 + hr * RASTER_RES)
    cls = world.ground_cls.reshape(-1)[world.ground_lookup(rx.ravel(), ry.ravel())].reshape(X.shape)
    mask = np.where(inside & (cls == LIDARSEG_INDEX["flat.driveable_surface"]), 255, 0).astype(np.uint8)
    mask = cv2.resize(mask, (w_px * coarse, h_px * coarse), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask):
        raise RuntimeError(f"{path}: could not write the map png")


def _task_entry(args: tuple) -> tuple[int, int, dict]:
    root, spec, kf = args
    return spec.index, kf, run_task(Path(root), spec, kf)


def generate(out_dir: str | os.PathLike, scenes: int = 1, keyframes: int = 4, seed: int = 0, sweeps: bool = False,
             version: str = "v1.0-mini", workers: int = 1, render_scale: float = 0.5,
             progress: bool = False) -> Path:
    """Write a synthetic nuScenes-format root (tables, samples/, sweeps/, lidarseg/, maps/, gts/)
    to `out_dir`, which must not exist or be empty. Returns the root path."""
    out = Path(out_dir)
    if scenes < 1 or keyframes < 1:
        raise ValueError(f"scenes ({scenes}) and keyframes ({keyframes}) must be >= 1")
    if not version.startswith("v1.0-"):
        raise ValueError(f"version {version!r}: expected v1.0-mini, v1.0-trainval or v1.0-test")
    if not 0.1 <= render_scale <= 1.0:
        raise ValueError(f"render_scale {render_scale}: must be in [0.1, 1]")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: output exists and is not an empty directory")
    names = tables.scene_names(version, scenes)
    specs = [SceneSpec(i, n, seed, keyframes, sweeps, version, render_scale) for i, n in enumerate(names)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tasks = [(str(tmp), s, k) for s in specs for k in range(keyframes)]
        parts: dict[int, list[dict]] = {s.index: [] for s in specs}
        bar = tqdm(total=len(tasks), desc="fusionocc-synth key frames", unit="kf", disable=not progress)
        if workers > 1:
            ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
            with ctx.Pool(workers) as pool:
                for si, _, res in pool.imap_unordered(_task_entry, tasks):
                    parts[si].append(res)
                    bar.update()
        else:
            for task in tasks:
                si, _, res = _task_entry(task)
                parts[si].append(res)
                bar.update()
        bar.close()
        merged: dict[str, list[dict]] = tables.static_tables()
        for spec in specs:
            for k, v in _scene_tables(tmp, spec, parts[spec.index]).items():
                merged.setdefault(k, []).extend(v)
        (tmp / "lidarseg" / version).mkdir(parents=True, exist_ok=True)
        tables.write_tables(tmp / version, merged)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

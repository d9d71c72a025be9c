"""A minimal nuScenes + lidarseg + Occ3D root with *known* content, for the data-layer tests.

Small and exact on purpose (a few hundred points, planted where a test wants them); the full
synthetic world (`fusionocc_synth`) is exercised by the integration tests.
"""
from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion

from fusionocc_core.classes import CAMERA_NAMES

LIDARSEG_NAMES = [
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility", "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle",
    "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck", "flat.driveable_surface",
    "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade", "static.other", "static.vegetation", "vehicle.ego",
]
CAM_YAW_DEG = {"CAM_FRONT_LEFT": 55.0, "CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -55.0,
               "CAM_BACK_LEFT": 110.0, "CAM_BACK": 180.0, "CAM_BACK_RIGHT": -110.0}
K = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
LIDAR_T = [0.943713, 0.0, 1.84023]
LIDAR_Q = [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817]
W, H = 1600, 900
CAR_VOXELS = (slice(122, 128), slice(102, 108), slice(3, 8))  # x 8.8..11.2, y 0.8..3.2, z 0.2..2.2
GROUND_Z_INDEX = 2  # z 0.0..0.4


def tok() -> str:
    return uuid.uuid4().hex


def quat_from_matrix(r: np.ndarray) -> list[float]:
    """(w, x, y, z) of a rotation matrix."""
    w = math.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    return [w, x, y, z]


def yaw_quat(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def camera_rotation(yaw_deg: float) -> np.ndarray:
    """Optical frame (z forward, x right, y down) -> ego, looking along ego yaw."""
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    y = math.radians(yaw_deg)
    rz = np.array([[math.cos(y), -math.sin(y), 0.0], [math.sin(y), math.cos(y), 0.0], [0.0, 0.0, 1.0]])
    return rz @ base


def make_root(root: Path, scenes: int = 1, keyframes: int = 3, points: int = 400, seed: int = 0,
              version: str = "v1.0-mini", gts: bool = True, lidarseg: bool = True,
              first_camera_offset_us: int = 10_000) -> dict:
    """Write the root; returns {'version', 'samples': [token...], 'scene_names': [...]}. Camera n is
    stamped first_camera_offset_us + 5 ms * n after the LiDAR (nuScenes: about -43 ms + 8 ms * n)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    tables: dict[str, list] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                               "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                               "sample_data", "sample_annotation", "map", "lidarseg")}
    for i, name in enumerate(LIDARSEG_NAMES):
        tables["category"].append({"token": tok(), "name": name, "description": "", "index": i})
    tables["visibility"].append({"token": "1", "level": "v0-40", "description": ""})
    sensors = {}
    for ch in ("LIDAR_TOP",) + CAMERA_NAMES:
        sensors[ch] = tok()
        tables["sensor"].append({"token": sensors[ch], "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
    log = tok()
    tables["log"].append({"token": log, "logfile": "fixture", "vehicle": "n015", "date_captured": "2018-07-24",
                          "location": "singapore-onenorth"})
    tables["map"].append({"token": tok(), "log_tokens": [log], "category": "semantic_prior", "filename": ""})
    (root / version).mkdir(parents=True, exist_ok=True)
    (root / "lidarseg" / version).mkdir(parents=True, exist_ok=True)
    out = {"version": version, "samples": [], "scene_names": []}
    t0 = 1_532_402_927_000_000
    for s in range(scenes):
        calib = {}
        calib["LIDAR_TOP"] = tok()
        tables["calibrated_sensor"].append({"token": calib["LIDAR_TOP"], "sensor_token": sensors["LIDAR_TOP"],
                                            "translation": LIDAR_T, "rotation": LIDAR_Q, "camera_intrinsic": []})
        for cam in CAMERA_NAMES:
            calib[cam] = tok()
            yaw = math.radians(CAM_YAW_DEG[cam])
            tables["calibrated_sensor"].append({
                "token": calib[cam], "sensor_token": sensors[cam],
                "translation": [1.0 * math.cos(yaw) + 0.5, 1.0 * math.sin(yaw), 1.5],
                "rotation": quat_from_matrix(camera_rotation(CAM_YAW_DEG[cam])), "camera_intrinsic": K})
        scene_tok, name = tok(), f"scene-{9000 + s:04d}"
        sample_toks = [tok() for _ in range(keyframes)]
        prev_sd = {ch: "" for ch in calib}
        for k, st in enumerate(sample_toks):
            ts = t0 + s * 100_000_000 + k * 500_000
            tables["sample"].append({"token": st, "timestamp": ts, "scene_token": scene_tok,
                                     "prev": sample_toks[k - 1] if k else "",
                                     "next": sample_toks[k + 1] if k + 1 < keyframes else ""})
            out["samples"].append(st)
            for ch in ("LIDAR_TOP",) + CAMERA_NAMES:
                sd_ts = ts + (0 if ch == "LIDAR_TOP" else first_camera_offset_us + 5_000 * CAMERA_NAMES.index(ch))
                pose = tok()
                yaw = 0.05 * k + 0.3 * s + 1e-7 * (sd_ts - ts)
                tables["ego_pose"].append({"token": pose, "timestamp": sd_ts, "rotation": yaw_quat(yaw),
                                           "translation": [600.0 + 2.0 * k + 40 * (sd_ts - ts) / 1e6, 1600.0 + s, 0.0]})
                sd = tok()
                base = f"n015-fixture__{ch}__{sd_ts}"
                if ch == "LIDAR_TOP":
                    fn = f"samples/LIDAR_TOP/{base}.pcd.bin"
                    pts, labels = _cloud(rng, points)
                    (root / fn).parent.mkdir(parents=True, exist_ok=True)
                    pts.tofile(root / fn)
                    if lidarseg:
                        lfn = f"lidarseg/{version}/{sd}_lidarseg.bin"
                        labels.tofile(root / lfn)
                        tables["lidarseg"].append({"token": sd, "sample_data_token": sd, "filename": lfn})
                    width = height = 0
                else:
                    fn = f"samples/{ch}/{base}.jpg"
                    (root / fn).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / fn), _image(CAMERA_NAMES.index(ch), k))
                    width, height = W, H
                tables["sample_data"].append({
                    "token": sd, "sample_token": st, "ego_pose_token": pose, "calibrated_sensor_token": calib[ch],
                    "timestamp": sd_ts, "fileformat": fn.rsplit(".", 1)[-1], "is_key_frame": True,
                    "height": height, "width": width, "filename": fn, "prev": prev_sd[ch], "next": ""})
                if prev_sd[ch]:
                    next(r for r in tables["sample_data"] if r["token"] == prev_sd[ch])["next"] = sd
                prev_sd[ch] = sd
            if gts:
                d = root / "gts" / name / st
                d.mkdir(parents=True, exist_ok=True)
                sem = np.full((200, 200, 16), 17, np.uint8)
                sem[:, :, GROUND_Z_INDEX] = 11
                sem[CAR_VOXELS] = 4
                np.savez_compressed(d / "labels.npz", semantics=sem,
                                    mask_lidar=(rng.random((200, 200, 16)) < 0.5).astype(np.uint8),
                                    mask_camera=(rng.random((200, 200, 16)) < 0.3).astype(np.uint8))
        tables["scene"].append({"token": scene_tok, "log_token": log, "nbr_samples": keyframes, "name": name,
                                "description": "fixture", "first_sample_token": sample_toks[0],
                                "last_sample_token": sample_toks[-1]})
        out["scene_names"].append(name)
    if not lidarseg:
        del tables["lidarseg"]
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return out


def _cloud(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 5) float32 LiDAR-frame points and their nuScenes-lidarseg labels. Made in the ego frame:
    a flat ground ring at z = 0.04 (Occ3D z-layer 2) and a car cluster at x 9..11, y 1..3,
    z 0.4..1.8 (the voxels CAR_VOXELS of the fixture's ground truth); then moved to LIDAR_TOP."""
    r = rng.uniform(3.0, 30.0, n)
    a = rng.uniform(-math.pi, math.pi, n)
    ego = np.stack([r * np.cos(a), r * np.sin(a), 0.04 + rng.uniform(-0.05, 0.05, n)], axis=1)
    labels = np.full(n, 24, np.uint8)  # flat.driveable_surface
    car = np.arange(n) < n // 4
    ego[car] = rng.uniform([9.0, 1.0, 0.4], [11.0, 3.0, 1.8], size=(car.sum(), 3))
    labels[car] = 17  # vehicle.car
    rot = Quaternion(LIDAR_Q).rotation_matrix
    lidar = (ego - np.array(LIDAR_T)) @ rot  # ego -> lidar: R^T (p - t)
    pts = np.zeros((n, 5), np.float32)
    pts[:, :3] = lidar
    pts[:, 3] = rng.uniform(0, 100, n)
    pts[:, 4] = rng.integers(0, 32, n)
    return pts, labels


def _image(cam_index: int, frame: int) -> np.ndarray:
    """A 1600x900 BGR test pattern that differs per camera and frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (xx // 50 * 8 + 30 * cam_index) % 256
    img[..., 1] = (yy // 50 * 8 + 20 * frame) % 256
    img[..., 2] = 40 * cam_index
    return img

"""Read a nuScenes-format dataset (via the devkit) into picklable per-scene conversion plans.

A plan lists every sensor file of a scene with its stamp, ego pose and calibration, so that the
bag writer (possibly in another process) needs neither the devkit nor the JSON tables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fusionocc_core.classes import CAMERA_NAMES, LIDAR_NAME
from fusionocc_core.cli import ToolError

SENSOR_CHANNELS: tuple[str, ...] = CAMERA_NAMES + (LIDAR_NAME,)


class PlanError(ToolError):
    """A bad dataset input; the message is one line naming the file, scene or field."""


@dataclass(frozen=True)
class SensorReading:
    """One sample_data record: a camera JPEG or a LiDAR .pcd.bin at one stamp."""

    channel: str  # e.g. "CAM_FRONT", "LIDAR_TOP"
    path: str  # absolute file path
    stamp_ns: int
    is_key_frame: bool
    ego_translation: tuple[float, float, float]  # base_link in map, metres
    ego_rotation: tuple[float, float, float, float]  # w x y z


@dataclass(frozen=True)
class SensorCalibration:
    """A calibrated_sensor record: sensor frame -> base_link, and K for cameras."""

    channel: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # w x y z
    intrinsic: tuple[tuple[float, float, float], ...] | None  # 3x3 row-major, cameras only


@dataclass(frozen=True)
class GroundTruth:
    """An Occ3D labels.npz for one key-frame, stamped with the key-frame's LiDAR stamp."""

    sample_token: str
    stamp_ns: int
    path: str


@dataclass
class ScenePlan:
    """Everything needed to write one scene's bag."""

    name: str
    token: str
    source: str  # e.g. "nuScenes v1.0-mini at /data/nuscenes"
    keyframes: int
    sweeps: bool
    readings: list[SensorReading] = field(default_factory=list)  # sorted by stamp
    calibrations: dict[str, SensorCalibration] = field(default_factory=dict)
    gts: list[GroundTruth] = field(default_factory=list)


def load_nuscenes(data_root: str | Path, version: str) -> Any:
    """Open the dataset with the nuScenes devkit; one-line PlanError if the tables are missing."""
    from nuscenes.nuscenes import NuScenes

    root = Path(data_root)
    if not root.is_dir():
        raise PlanError(f"data root {root} does not exist or is not a directory")
    if not (root / version).is_dir():
        raise PlanError(f"nuScenes tables {root / version} not found (wrong --version or --data-root?)")
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, FileNotFoundError, KeyError, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise PlanError(f"cannot load nuScenes {version} from {root}: {detail}") from exc


def select_scenes(nusc: Any, names: Sequence[str] | None) -> list[dict]:
    """Return the scene records to convert (all when `names` is empty), in the requested order."""
    by_name = {s["name"]: s for s in nusc.scene}
    if not names:
        return sorted(nusc.scene, key=lambda s: s["name"])
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = sorted(by_name)
        shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
        raise PlanError(f"unknown scene name {unknown[0]!r} (this dataset has {len(known)}: {shown})")
    return [by_name[n] for n in dict.fromkeys(names)]


def _channel_chain(nusc: Any, first_token: str, sweeps: bool) -> list[dict]:
    """All sample_data of one channel in the scene (prev+next chain), or just the key-frame."""
    first = nusc.get("sample_data", first_token)
    if not sweeps:
        return [first]
    chain = [first]
    rec = first
    while rec["prev"]:
        rec = nusc.get("sample_data", rec["prev"])
        chain.append(rec)
    chain.reverse()
    rec = first
    while rec["next"]:
        rec = nusc.get("sample_data", rec["next"])
        chain.append(rec)
    return chain


def _reading(nusc: Any, root: Path, sd: dict) -> SensorReading:
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return SensorReading(
        channel=sd["channel"],
        path=str(root / sd["filename"]),
        stamp_ns=int(sd["timestamp"]) * 1000,
        is_key_frame=bool(sd["is_key_frame"]),
        ego_translation=tuple(float(v) for v in pose["translation"]),
        ego_rotation=tuple(float(v) for v in pose["rotation"]),
    )


def _calibration(nusc: Any, sd: dict) -> SensorCalibration:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    intrinsic = cs.get("camera_intrinsic") or None
    if sd["channel"] in CAMERA_NAMES:
        if not intrinsic or len(intrinsic) != 3 or any(len(row) != 3 for row in intrinsic):
            raise PlanError(
                f"calibrated_sensor {cs['token']} ({sd['channel']}): camera_intrinsic is not a 3x3 matrix"
            )
        intrinsic = tuple(tuple(float(v) for v in row) for row in intrinsic)
    else:
        intrinsic = None
    return SensorCalibration(
        channel=sd["channel"],
        translation=tuple(float(v) for v in cs["translation"]),
        rotation=tuple(float(v) for v in cs["rotation"]),
        intrinsic=intrinsic,
    )


def plan_scene(nusc: Any, scene: dict, sweeps: bool = False) -> ScenePlan:
    """Collect one scene's readings (key-frames, or every sweep), calibrations and gts."""
    root = Path(nusc.dataroot)
    samples = []
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        samples.append(sample)
        token = sample["next"]

    readings: list[SensorReading] = []
    calibrations: dict[str, SensorCalibration] = {}
    first = samples[0]
    for channel in SENSOR_CHANNELS:
        if channel not in first["data"]:
            raise PlanError(f"scene {scene['name']}: sample {first['token']} has no {channel} data")
        calibrations[channel] = _calibration(nusc, nusc.get("sample_data", first["data"][channel]))
        if sweeps:
            records = _channel_chain(nusc, first["data"][channel], sweeps=True)
        else:
            records = [nusc.get("sample_data", s["data"][channel]) for s in samples if channel in s["data"]]
        readings += [_reading(nusc, root, sd) for sd in records]
    readings.sort(key=lambda r: (r.stamp_ns, SENSOR_CHANNELS.index(r.channel)))

    gts: list[GroundTruth] = []
    gt_dir = root / "gts" / scene["name"]
    if gt_dir.is_dir():
        for sample in samples:
            lidar = nusc.get("sample_data", sample["data"][LIDAR_NAME])
            gts.append(
                GroundTruth(sample["token"], int(lidar["timestamp"]) * 1000, str(gt_dir / sample["token"] / "labels.npz"))
            )

    plan = ScenePlan(
        name=scene["name"],
        token=scene["token"],
        source=f"nuScenes {nusc.version} at {root.resolve()}",
        keyframes=len(samples),
        sweeps=sweeps,
        readings=readings,
        calibrations=calibrations,
        gts=gts,
    )
    check_files(plan)
    return plan


def check_files(plan: ScenePlan) -> None:
    """Fail with a one-line PlanError on the first missing or obviously truncated input file."""
    for r in plan.readings:
        if not os.path.isfile(r.path):
            raise PlanError(f"missing sensor file {r.path} ({r.channel}, scene {plan.name})")
        size = os.path.getsize(r.path)
        if r.channel == LIDAR_NAME and (size == 0 or size % 20):
            raise PlanError(
                f"truncated LiDAR file {r.path}: {size} bytes is not a whole number of 20-byte points"
            )
        if r.channel != LIDAR_NAME and size < 4:
            raise PlanError(f"truncated image file {r.path}: {size} bytes")
    for g in plan.gts:
        if not os.path.isfile(g.path):
            raise PlanError(f"missing ground-truth file {g.path} (scene {plan.name}, sample {g.sample_token})")

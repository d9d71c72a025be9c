"""nuScenes v1.0 table records: deterministic tokens, the static tables (sensor, category,
attribute, visibility), scene names from the devkit's splits, and JSON writing (into the
temporary root that the caller renames into place)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nuscenes.utils import splits

from fusionocc_synth.categories import ATTRIBUTES, LIDARSEG_CATEGORIES, VISIBILITIES
from fusionocc_synth.rig import CAMERA_CALIBRATIONS, LIDAR_CALIBRATION

TABLE_NAMES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
               "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map",
               "lidarseg")


def token(*parts: object) -> str:
    """Deterministic 32-hex nuScenes-style token from any identifying parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def scene_names(version: str, count: int) -> list[str]:
    """Scene names for `count` scenes, taken from the devkit's split lists for `version` so that
    `create_splits_scenes()` assigns them (mini: train and val interleaved, ~1 val in 5)."""
    if version.endswith("mini"):
        train, val = splits.mini_train, splits.mini_val
    elif version.endswith("test"):
        train, val = splits.test, []
    else:
        train, val = splits.train, splits.val
    names: list[str] = []
    ti = vi = 0
    while len(names) < count and (ti < len(train) or vi < len(val)):
        if vi < len(val) and (len(names) % 5 == 1 or ti >= len(train)):
            names.append(val[vi]); vi += 1
        else:
            names.append(train[ti]); ti += 1
    if len(names) < count:
        raise ValueError(f"--scenes {count}: {version} has only {len(names)} scene names")
    return names


def static_tables() -> dict[str, list[dict]]:
    """sensor, category (lidarseg flavour, with `index`), attribute and visibility tables."""
    sensors = [LIDAR_CALIBRATION, *CAMERA_CALIBRATIONS.values()]
    return {
        "sensor": [{"token": token("sensor", s.channel), "channel": s.channel, "modality": s.modality}
                   for s in sensors],
        "category": [{"token": token("category", name), "name": name, "description": desc, "index": idx}
                     for idx, name, desc in LIDARSEG_CATEGORIES],
        "attribute": [{"token": token("attribute", name), "name": name, "description": desc}
                      for name, desc in ATTRIBUTES],
        "visibility": [{"token": tok, "level": level, "description": desc} for tok, level, desc in VISIBILITIES],
    }


def link_chain(records: list[dict]) -> None:
    """Set prev/next tokens along `records` (already in time order)."""
    for i, rec in enumerate(records):
        rec["prev"] = records[i - 1]["token"] if i > 0 else ""
        rec["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""


def write_tables(table_dir: Path, tables: dict[str, list[dict]]) -> None:
    """Write every table as `<name>.json` into table_dir."""
    table_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        with open(table_dir / f"{name}.json", "w") as f:
            json.dump(tables.get(name, []), f, indent=0)

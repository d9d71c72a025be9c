"""The Occ3D-nuScenes class table: the one place that names and colours the 18 labels.

Indices 0-16 follow nuScenes-lidarseg's 16 evaluated classes plus `others`; 17 is free space.
Used by the metric, the palette of every picture, the marker encoder and the voxel message.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class OccClass(NamedTuple):
    index: int
    name: str
    rgb: tuple[int, int, int]


OCC_CLASSES: tuple[OccClass, ...] = (
    OccClass(0, "others", (112, 128, 144)),
    OccClass(1, "barrier", (255, 120, 50)),
    OccClass(2, "bicycle", (255, 192, 203)),
    OccClass(3, "bus", (255, 255, 0)),
    OccClass(4, "car", (0, 150, 245)),
    OccClass(5, "construction_vehicle", (0, 255, 255)),
    OccClass(6, "motorcycle", (200, 180, 0)),
    OccClass(7, "pedestrian", (255, 0, 0)),
    OccClass(8, "traffic_cone", (255, 240, 150)),
    OccClass(9, "trailer", (135, 60, 0)),
    OccClass(10, "truck", (160, 32, 240)),
    OccClass(11, "driveable_surface", (255, 0, 255)),
    OccClass(12, "other_flat", (139, 137, 137)),
    OccClass(13, "sidewalk", (75, 0, 75)),
    OccClass(14, "terrain", (150, 240, 80)),
    OccClass(15, "manmade", (230, 230, 250)),
    OccClass(16, "vegetation", (0, 175, 0)),
    OccClass(17, "free", (255, 255, 255)),
)

NUM_CLASSES: int = len(OCC_CLASSES)  # 18
FREE_LABEL: int = 17
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in OCC_CLASSES)
CLASS_INDEX: dict[str, int] = {c.name: c.index for c in OCC_CLASSES}
# (18, 3) uint8 palette: PALETTE[label] is the label's RGB colour.
PALETTE: np.ndarray = np.array([c.rgb for c in OCC_CLASSES], dtype=np.uint8)
PALETTE.setflags(write=False)

# nuScenes-lidarseg category name -> Occ3D class index (the reference's nuscenes.yaml learning_map):
# the 16 evaluated classes, everything else (noise, rare classes, ego) -> 0 "others".
LIDARSEG_NAME_TO_OCC: dict[str, int] = {
    "noise": 0, "animal": 0,
    "human.pedestrian.adult": 7, "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7, "human.pedestrian.police_officer": 7,
    "human.pedestrian.personal_mobility": 0, "human.pedestrian.stroller": 0, "human.pedestrian.wheelchair": 0,
    "movable_object.barrier": 1, "movable_object.debris": 0, "movable_object.pushable_pullable": 0,
    "movable_object.trafficcone": 8, "static_object.bicycle_rack": 0,
    "vehicle.bicycle": 2, "vehicle.bus.bendy": 3, "vehicle.bus.rigid": 3, "vehicle.car": 4,
    "vehicle.construction": 5, "vehicle.emergency.ambulance": 0, "vehicle.emergency.police": 0,
    "vehicle.motorcycle": 6, "vehicle.trailer": 9, "vehicle.truck": 10,
    "flat.driveable_surface": 11, "flat.other": 12, "flat.sidewalk": 13, "flat.terrain": 14,
    "static.manmade": 15, "static.other": 0, "static.vegetation": 16, "vehicle.ego": 0,
}

# The six cameras in the model's order, and their lower-case topic prefixes.
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
LIDAR_NAME: str = "LIDAR_TOP"

# The Occ3D-nuScenes grid: x, y in [-40, 40) m, z in [-1, 5.4) m, 0.4 m voxels, [x][y][z] order.
GRID_LOWER: tuple[float, float, float] = (-40.0, -40.0, -1.0)
GRID_UPPER: tuple[float, float, float] = (40.0, 40.0, 5.4)
VOXEL_SIZE: float = 0.4
GRID_SHAPE: tuple[int, int, int] = (200, 200, 16)

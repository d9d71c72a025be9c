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

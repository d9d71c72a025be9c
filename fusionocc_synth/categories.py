"""nuScenes-lidarseg's 32-class category table and its standard mapping to the 16+1 Occ3D classes.

The synthetic world labels every solid with a lidarseg index, so lidarseg files, the category
table and the Occ3D semantics come from one source.
"""
from __future__ import annotations

import numpy as np

from fusionocc_core.classes import LIDARSEG_NAME_TO_OCC

# (lidarseg index, name, description), in the index order of nuScenes-lidarseg's category.json.
LIDARSEG_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (0, "noise", "Any lidar return that does not correspond to a physical object."),
    (1, "animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    (2, "human.pedestrian.adult", "Adult subcategory."),
    (3, "human.pedestrian.child", "Child subcategory."),
    (4, "human.pedestrian.construction_worker", "Construction worker."),
    (5, "human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    (6, "human.pedestrian.police_officer", "Police officer."),
    (7, "human.pedestrian.stroller", "Strollers."),
    (8, "human.pedestrian.wheelchair", "Wheelchairs."),
    (9, "movable_object.barrier", "Temporary road barrier placed in the scene."),
    (10, "movable_object.debris", "Movable object that is left on the driveable surface."),
    (11, "movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    (12, "movable_object.trafficcone", "All types of traffic cone."),
    (13, "static_object.bicycle_rack", "Area or device intended to park or secure bicycles."),
    (14, "vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    (15, "vehicle.bus.bendy", "Bendy bus subcategory."),
    (16, "vehicle.bus.rigid", "Rigid bus subcategory."),
    (17, "vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans."),
    (18, "vehicle.construction", "Vehicles primarily designed for construction."),
    (19, "vehicle.emergency.ambulance", "All types of ambulances."),
    (20, "vehicle.emergency.police", "All types of police vehicles."),
    (21, "vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    (22, "vehicle.trailer", "Any vehicle trailer."),
    (23, "vehicle.truck", "Vehicles primarily designed to haul cargo."),
    (24, "flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on."),
    (25, "flat.other", "All other forms of horizontal ground-level structures."),
    (26, "flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc."),
    (27, "flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation."),
    (28, "static.manmade", "Includes man-made structures but not limited to buildings, poles."),
    (29, "static.other", "Points in the background that are not distinguishable."),
    (30, "static.vegetation", "Any vegetation in the frame that is higher than the ground."),
    (31, "vehicle.ego", "The vehicle on which the sensors are mounted."),
)
LIDARSEG_NAMES: tuple[str, ...] = tuple(name for _, name, _ in LIDARSEG_CATEGORIES)
LIDARSEG_INDEX: dict[str, int] = {name: idx for idx, name, _ in LIDARSEG_CATEGORIES}

# The nuScenes-lidarseg 32 -> 16 (+ 0 = others) mapping of fusionocc_core.classes.
_OCC_OF_NAME: dict[str, int] = LIDARSEG_NAME_TO_OCC
# (32,) uint8: LIDARSEG_TO_OCC[lidarseg_index] = Occ3D class index (0..16).
LIDARSEG_TO_OCC: np.ndarray = np.array([_OCC_OF_NAME.get(n, 0) for n in LIDARSEG_NAMES], np.uint8)
LIDARSEG_TO_OCC.setflags(write=False)

# nuScenes attribute table (name, description).
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

# nuScenes visibility table (token, level, description).
VISIBILITIES: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)

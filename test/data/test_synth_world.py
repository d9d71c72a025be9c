"""Unit tests of the synthetic world's parts: ray casting against analytic solids, the Occ3D
voxeliser and masks, world variety, and the scene names taken from the devkit's splits."""
from __future__ import annotations

import numpy as np
import pytest
from nuscenes.utils.splits import create_splits_scenes

from fusionocc_core.classes import FREE_LABEL, GRID_SHAPE
from fusionocc_synth import occ3d, raycast
from fusionocc_synth.categories import LIDARSEG_INDEX, LIDARSEG_TO_OCC
from fusionocc_synth.tables import scene_names
from fusionocc_synth.world import BOX, CYLINDER, build_world


def _solids(kind: int, centre: tuple, half: tuple, yaw: float = 0.0, cls: str = "vehicle.car") -> raycast.FrameSolids:
    return raycast.FrameSolids(np.array([centre], float), np.array([half], float), np.array([np.cos(yaw)]),
                               np.array([np.sin(yaw)]), np.array([kind], np.int8),
                               np.array([LIDARSEG_INDEX[cls]], np.uint8), np.array([0]), np.array([0]))


def test_hit_one_box_and_cylinder() -> None:
    origin = np.zeros(3)
    d = np.array([[1, 0, 0], [0, 1, 0], [1, 0.1, 0.05], [-1, 0, 0]], np.float32)
    box = _solids(BOX, (10.0, 0.0, 0.0), (2.0, 1.0, 1.0), yaw=np.pi / 2)  # rotated: extends 1 m in x
    t = raycast.hit_one(origin, d, box, 0)
    assert t[0] == pytest.approx(9.0, abs=1e-4) and np.isinf(t[1]) and np.isinf(t[3])
    assert t[2] == pytest.approx(9.0, abs=1e-4)
    normal, local = raycast.surface(origin, d[:1], t[:1], box, 0)
    assert np.allclose(normal[0], [-1, 0, 0], atol=1e-5)
    cyl = _solids(CYLINDER, (0.0, 5.0, 1.0), (0.5, 0.5, 1.0))
    t = raycast.hit_one(origin, d, cyl, 0)
    assert t[1] == pytest.approx(4.5, abs=1e-4) and np.isinf(t[0])
    down = np.array([[0, 5.0, -1.0]], np.float32) / np.float32(np.hypot(5, 1))
    top = raycast.hit_one(np.array([0.0, 0.0, 3.0]), down, cyl, 0)  # lands on the top cap
    p = np.array([0.0, 0.0, 3.0]) + down[0] * top[0]
    assert p[2] == pytest.approx(2.0, abs=1e-4) and np.hypot(p[0], p[1] - 5.0) <= 0.5


def test_semantics_of_a_box_and_the_ground() -> None:
    world = build_world(0, 0, 5.0)
    sem = occ3d.semantics(world, 0.0, world.ego_transform(0.0))
    assert sem.shape == GRID_SHAPE and sem.dtype == np.uint8
    assert (sem[:, :, :2] == FREE_LABEL).all()  # below the ground slab
    assert (sem[:, :, 2] != FREE_LABEL).all()  # the ground layer is fully labelled
    # a solid's centre voxel carries its class (things fully inside the grid, 1 m+ wide)
    s = world.solids
    centre = s.centre_at(0.0)
    ego = np.linalg.inv(world.ego_transform(0.0))
    c_ego = centre @ ego[:3, :3].T + ego[:3, 3]
    ijk = np.floor((c_ego - np.array([-40, -40, -1])) / 0.4).astype(int)
    pick = np.flatnonzero(((ijk >= 0) & (ijk < GRID_SHAPE)).all(1) & (s.half[:, :2].min(1) > 0.5) & (ijk[:, 2] > 2))
    assert len(pick) > 10
    got = sem[ijk[pick, 0], ijk[pick, 1], ijk[pick, 2]]
    assert (got == LIDARSEG_TO_OCC[s.cls[pick]]).mean() > 0.95


def test_mask_lidar_follows_the_ray() -> None:
    origin = np.array([0.94, 0.0, 1.84])
    end = np.array([[20.0, 0.0, 1.84]])
    mask = occ3d.mask_lidar(origin, end)
    j, k = 100, int((1.84 + 1) / 0.4)
    assert mask[102:150, j, k].all()  # x from ~0.94 to 20 m
    assert mask.sum() == mask[:, j, k].sum() == 150 - 102 + 1


def test_mask_camera_stops_at_surfaces() -> None:
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    ego2cam = np.array([[0, -1.0, 0, 0], [0, 0, -1.0, 1.0], [1.0, 0, 0, 0], [0, 0, 0, 1]])  # looks along +x at z=1
    depth = np.full((100, 100), 10.0, np.float32)  # a wall 10 m ahead
    mask = occ3d.mask_camera([(ego2cam, K, depth)])
    z1 = int((1.0 + 1) / 0.4)
    assert mask[110, 100, z1] and mask[124, 100, z1]  # 4 m and 9.8 m ahead
    assert not mask[130, 100, z1] and not mask[90, 100, z1]  # behind the wall / behind the camera
    far = occ3d.mask_camera([(ego2cam, K, np.full((100, 100), 60.0, np.float32))])
    assert far.sum() == 0  # rays ending outside the grid observe nothing


def test_worlds_vary_and_cover_the_classes() -> None:
    seen: set[int] = set()
    layouts = []
    for seed in range(4):
        w = build_world(seed, 0, 9.6)
        seen |= set(LIDARSEG_TO_OCC[w.solids.cls].tolist()) | set(LIDARSEG_TO_OCC[np.unique(w.ground_cls)].tolist())
        layouts.append((len(w.solids), w.ground_cls.shape))
        moving = np.flatnonzero(np.abs(w.solids.vel).sum(1) > 0)
        assert len(moving) > 3
        assert not np.allclose(w.solids.centre_at(0.0)[moving], w.solids.centre_at(1.0)[moving])
        assert w.ego.pose(5.0)[0] - w.ego.pose(0.0)[0] > 5.0
    assert len(set(layouts)) == 4
    assert seen >= set(range(17)) - {5, 6, 9}  # rare classes may be absent in 4 worlds
    again = build_world(2, 0, 9.6)
    assert np.array_equal(again.solids.centre, build_world(2, 0, 9.6).solids.centre)


def test_scene_names_follow_devkit_splits() -> None:
    splits = create_splits_scenes()
    mini = scene_names("v1.0-mini", 10)
    assert sorted(mini) == sorted(splits["mini_train"] + splits["mini_val"])
    assert mini[1] in splits["mini_val"]
    tv = scene_names("v1.0-trainval", 20)
    assert 2 <= sum(n in splits["val"] for n in tv) <= 6 and len(set(tv)) == 20
    with pytest.raises(ValueError, match="only 10"):
        scene_names("v1.0-mini", 11)

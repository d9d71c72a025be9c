"""LIDAR_TOP simulation: a 32-ring spinning LiDAR ray-cast against the world.

A sweep is motion-compensated to its stamp (all rays cast from the ego pose at the stamp), as
nuScenes sweeps are. Output rows are x y z intensity ring (float32) in the LIDAR_TOP frame, in
firing order (azimuth-major), plus the lidarseg index and the hit solid of every point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionocc_synth import raycast
from fusionocc_synth.rig import (LIDAR_AZIMUTH_STEPS, LIDAR_CALIBRATION, LIDAR_ELEVATIONS_DEG,
                                      LIDAR_MAX_RANGE)
from fusionocc_synth.geometry import transform_points
from fusionocc_synth.world import REFLECTIVITY, World

_REFLECT = np.array([REFLECTIVITY.get(c, 0.2) for c in range(32)], np.float32)


@dataclass
class Sweep:
    """One simulated sweep: points (P, 5) in the LiDAR frame, labels (P,) lidarseg uint8,
    solid (P,) world solid index or -1 (ground), points_ego (P, 3) in the ego frame."""

    points: np.ndarray
    labels: np.ndarray
    solid: np.ndarray
    points_ego: np.ndarray


class LidarSimulator:
    """Precomputes the ray fan and its ground hits once; `sweep(world, t)` casts one sweep."""

    def __init__(self, azimuth_steps: int = LIDAR_AZIMUTH_STEPS, max_range: float = LIDAR_MAX_RANGE,
                 range_noise: float = 0.01) -> None:
        self.rings = len(LIDAR_ELEVATIONS_DEG)
        self.cols = azimuth_steps
        self.max_range = max_range
        self.range_noise = range_noise
        el = np.radians(LIDAR_ELEVATIONS_DEG)[:, None]  # (32, 1)
        az = 2 * np.pi * np.arange(azimuth_steps)[None] / azimuth_steps  # (1, W)
        d_lidar = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
        self.lidar2ego = LIDAR_CALIBRATION.sensor2ego
        self.origin = self.lidar2ego[:3, 3]
        self.dirs = (d_lidar.reshape(-1, 3) @ self.lidar2ego[:3, :3].T).astype(np.float32)  # (32*W, 3) ego
        self.ring = np.repeat(np.arange(self.rings), azimuth_steps).astype(np.float32)
        dz = self.dirs[:, 2]
        tg = np.where(dz < -1e-6, -self.origin[2] / np.minimum(dz, -1e-6), np.inf)
        self.t_ground = np.where(tg <= max_range, tg, np.inf)

    def _columns(self, solids: raycast.FrameSolids) -> tuple[np.ndarray, np.ndarray]:
        """First and last (inclusive, may exceed W: wraps) azimuth column each solid can cover."""
        corners = solids.corners().reshape(-1, 3)  # (S*8, 3) ego
        loc = (corners - self.origin) @ self.lidar2ego[:3, :3]  # ego -> lidar frame
        az = np.arctan2(loc[:, 1], loc[:, 0]).reshape(len(solids), 8)
        cen = (solids.centre - self.origin) @ self.lidar2ego[:3, :3]
        az_c = np.arctan2(cen[:, 1], cen[:, 0])
        rel = np.mod(az - az_c[:, None] + np.pi, 2 * np.pi) - np.pi
        step = 2 * np.pi / self.cols
        c0 = np.floor((az_c + rel.min(1)) / step).astype(np.int64) - 1
        c1 = np.ceil((az_c + rel.max(1)) / step).astype(np.int64) + 1
        inside = np.hypot(cen[:, 0], cen[:, 1]) <= np.hypot(solids.half[:, 0], solids.half[:, 1]) + 0.5
        c1 = np.where(inside, c0 + self.cols - 1, np.minimum(c1, c0 + self.cols - 1))
        start = np.mod(c0, self.cols)
        return start, start + (c1 - c0)

    def sweep(self, world: World, t: float, rng: np.random.Generator) -> Sweep:
        """Cast one sweep at time t seconds (scene time)."""
        ego2road = world.ego_transform(t)
        solids = raycast.solids_in_ego(world, t, ego2road, self.max_range + 5)
        c0, c1 = self._columns(solids)
        rings = np.arange(self.rings)[:, None] * self.cols
        zmin = np.maximum(np.linalg.norm(solids.centre - self.origin, axis=1) - np.linalg.norm(solids.half, axis=1), 0)
        zmin[zmin > self.max_range] = np.inf
        n = len(self.dirs)
        zbuf = self.t_ground.astype(np.float32).copy()
        owner = np.full(n, -1, np.int64)
        normal = np.zeros((n, 3), np.float32)
        normal[:, 2] = 1.0  # the ground's

        def on_hit(i: int, rays: np.ndarray, d: np.ndarray, t_hit: np.ndarray) -> None:
            normal[rays] = raycast.surface(self.origin, d, t_hit, solids, i)[0]

        raycast.zbuffer_solids(self.origin, self.dirs, zbuf, owner, solids,
                               lambda i: (rings + np.mod(np.arange(c0[i], c1[i] + 1), self.cols)[None]).ravel(),
                               zmin, on_hit)
        zbuf[zbuf > self.max_range] = np.inf
        # firing order: azimuth-major (column, then ring)
        order = np.arange(n).reshape(self.rings, self.cols).T.reshape(-1)
        hit = order[np.isfinite(zbuf[order])]
        rng_m = zbuf[hit] + rng.normal(0.0, self.range_noise, hit.size)
        p_ego = self.origin + self.dirs[hit] * rng_m[:, None]
        own = owner[hit]
        labels = np.empty(hit.size, np.uint8)
        is_obj = own >= 0
        labels[is_obj] = solids.cls[own[is_obj]]
        # ground: class and brightness (lane markings reflect) from the raster
        g = np.flatnonzero(~is_obj)
        p_road = transform_points(p_ego[g], ego2road[:3, :3], ego2road[:3, 3])
        cell = world.ground_lookup(p_road[:, 0], p_road[:, 1])
        labels[g] = world.ground_cls.reshape(-1)[cell]
        # intensity: reflectivity x incidence; painted ground reflects more
        cos_inc = np.abs((normal[hit] * self.dirs[hit]).sum(1))
        refl = _REFLECT[labels].copy()
        paint = world.ground_rgb.reshape(-1, 3)[cell].mean(1) / 255.0
        refl[g] *= np.where(paint > 0.8, 6.0, 1.0)
        intensity = np.clip(255.0 * refl * (0.25 + 0.75 * cos_inc) + rng.normal(0, 1.5, hit.size), 0, 255)
        p_lidar = transform_points(p_ego - self.origin, self.lidar2ego[:3, :3].T)
        points = np.concatenate([p_lidar, intensity[:, None], self.ring[hit, None]], 1).astype(np.float32)
        solid_world = np.where(is_obj, solids.index[np.maximum(own, 0)], -1)
        return Sweep(points, labels, solid_world, p_ego)

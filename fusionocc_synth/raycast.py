"""Vectorised ray casting of one sensor's rays against the world's solids (the ground plane is
precomputed by each sensor: its ego-frame hits are constant).

Rays share one origin (the sensor). Solids are z-buffered nearest first; each is tested only on
its candidate rays (screen footprint) that are not already closer than the solid can be, so
hidden solids cost almost nothing. Coordinates: the ego frame at the sensor's stamp.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fusionocc_synth.geometry import rigid_inverse
from fusionocc_synth.world import BOX, Solids, World


@dataclass
class FrameSolids:
    """Solids posed in one ego frame: centre (S, 3), half (S, 3), cos/sin of yaw (S,), kind,
    cls, instance and the indices `index` into the world's Solids."""

    centre: np.ndarray
    half: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    kind: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def corners(self) -> np.ndarray:
        """(S, 8, 3) corners of each solid's oriented bounding box."""
        sgn = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
        local = sgn[None] * self.half[:, None, :]  # (S, 8, 3)
        x = self.cos[:, None] * local[..., 0] - self.sin[:, None] * local[..., 1]
        y = self.sin[:, None] * local[..., 0] + self.cos[:, None] * local[..., 1]
        return np.stack([x, y, local[..., 2]], -1) + self.centre[:, None, :]

    def to_local(self, points: np.ndarray, solid: np.ndarray) -> np.ndarray:
        """(P, 3) ego-frame points -> local frames of solids `solid` (P,)."""
        rel = points - self.centre[solid]
        c, s = self.cos[solid], self.sin[solid]
        return np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], -1)


def solids_in_ego(world: World, t: float, ego2road: np.ndarray, max_dist: float) -> FrameSolids:
    """Pose the world's solids at time t in the ego frame `ego2road`, keeping those within
    `max_dist` (xy, plus the solid's radius) of the ego origin."""
    s: Solids = world.solids
    centre = s.centre_at(t)
    road2ego = rigid_inverse(ego2road)
    c_ego = centre @ road2ego[:3, :3].T + road2ego[:3, 3]
    ego_yaw = np.arctan2(ego2road[1, 0], ego2road[0, 0])
    radius = np.hypot(s.half[:, 0], s.half[:, 1])
    keep = np.flatnonzero(np.hypot(c_ego[:, 0], c_ego[:, 1]) - radius < max_dist)
    yaw = s.yaw[keep] - ego_yaw
    return FrameSolids(c_ego[keep], s.half[keep], np.cos(yaw), np.sin(yaw), s.kind[keep], s.cls[keep],
                       s.instance[keep], keep)


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [start, start + count): (owner index per element, element value)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.repeat(starts, counts) + offset


def hit_one(origin: np.ndarray, d: np.ndarray, solids: FrameSolids, i: int) -> np.ndarray:
    """Ray parameter t (n,) of the first entry into solid i for rays origin + t d (n, 3); inf = miss."""
    c, s = np.float32(solids.cos[i]), np.float32(solids.sin[i])
    dx = c * d[:, 0] + s * d[:, 1]  # local ray directions, component-wise (n,)
    dy = c * d[:, 1] - s * d[:, 0]
    dz = d[:, 2]
    rx, ry, rz = origin - solids.centre[i]
    ox, oy, oz = c * rx + s * ry, c * ry - s * rx, rz  # local origin
    hx, hy, hz = solids.half[i]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if solids.kind[i] == BOX:
            tnear = np.full(len(d), -np.inf, np.float32)
            tfar = np.full(len(d), np.inf, np.float32)
            for o, h, dd in ((ox, hx, dx), (oy, hy, dy), (oz, hz, dz)):
                inv = 1.0 / dd
                t1 = (-h - o) * inv
                t2 = (h - o) * inv
                np.fmax(tnear, np.fmin(t1, t2), out=tnear)
                np.fmin(tfar, np.fmax(t1, t2), out=tfar)
            return np.where((tnear <= tfar) & (tnear > 0), tnear, np.float32(np.inf))
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - hx * hx)
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
        side = (disc >= 0) & (a > 1e-12) & (ts > 0) & (np.abs(oz + ts * dz) <= hz)
        tc = (np.where(dz < 0, hz, -hz) - oz) / dz  # the cap facing the ray
        xc, yc = ox + tc * dx, oy + tc * dy
        cap = (tc > 0) & (xc * xc + yc * yc <= hx * hx)
    return np.where(side, ts, np.where(cap, tc, np.float32(np.inf))).astype(np.float32)


def surface(origin: np.ndarray, d: np.ndarray, t: np.ndarray, solids: FrameSolids, i: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (n, 3) in the frame and solid-local hit points (n, 3) for rays hitting solid i."""
    c, s = np.float32(solids.cos[i]), np.float32(solids.sin[i])
    rx, ry, rz = (origin - solids.centre[i]).astype(np.float32)
    px, py, pz = rx + d[:, 0] * t, ry + d[:, 1] * t, rz + d[:, 2] * t  # hit - centre, frame axes
    pl = np.empty((len(t), 3), np.float32)
    pl[:, 0], pl[:, 1], pl[:, 2] = c * px + s * py, c * py - s * px, pz
    hx, hy, hz = solids.half[i].astype(np.float32)
    nx = np.zeros(len(t), np.float32)
    ny = np.zeros(len(t), np.float32)
    nz = np.zeros(len(t), np.float32)
    if solids.kind[i] == BOX:  # the face whose slab the point is at
        ax, ay, az = np.abs(pl[:, 0]) / hx, np.abs(pl[:, 1]) / hy, np.abs(pl[:, 2]) / hz
        on_x = (ax >= ay) & (ax >= az)
        on_y = ~on_x & (ay >= az)
        on_z = ~on_x & ~on_y
        nx[on_x] = np.sign(pl[on_x, 0])
        ny[on_y] = np.sign(pl[on_y, 1])
        nz[on_z] = np.sign(pl[on_z, 2])
    else:
        cap = np.abs(pl[:, 2]) >= hz - 1e-3
        rad = np.maximum(np.hypot(pl[:, 0], pl[:, 1]), 1e-6)
        nx = np.where(cap, 0.0, pl[:, 0] / rad).astype(np.float32)
        ny = np.where(cap, 0.0, pl[:, 1] / rad).astype(np.float32)
        nz = np.where(cap, np.sign(pl[:, 2]), 0.0).astype(np.float32)
    normal = np.empty((len(t), 3), np.float32)
    normal[:, 0], normal[:, 1], normal[:, 2] = c * nx - s * ny, s * nx + c * ny, nz
    return normal, pl


def zbuffer_solids(origin: np.ndarray, dirs: np.ndarray, zbuf: np.ndarray, owner: np.ndarray,
                   solids: FrameSolids, rays_of: Callable[[int], np.ndarray], zmin: np.ndarray,
                   on_hit: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]) -> None:
    """Z-buffer solids into `zbuf` / `owner` (per ray, modified in place), nearest solids first.
    rays_of(i): candidate ray indices of solid i; zmin[i]: a lower bound of its t, so rays
    already closer than that are skipped untested (exact occlusion culling). on_hit(i, rays,
    dirs, t) is called with the rays solid i now owns (to shade them)."""
    for i in np.argsort(zmin):
        if not np.isfinite(zmin[i]):
            break
        rays = rays_of(int(i))
        if rays.size == 0:
            continue
        rays = rays[zbuf[rays] > zmin[i]]
        if rays.size == 0:
            continue
        d = dirs[rays]
        t = hit_one(origin, d, solids, int(i))
        closer = t < zbuf[rays]
        if not closer.any():
            continue
        rays, t = rays[closer], t[closer]
        zbuf[rays] = t
        owner[rays] = i
        on_hit(int(i), rays, d[closer], t)

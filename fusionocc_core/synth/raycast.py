"""Vectorised ray casting of one sensor's rays against the world's solids and ground plane.

Rays share one origin (the sensor) and are tested only against the solids whose screen-space
footprint covers their tile (pairs built by `tile_pairs`), then z-buffered with `np.minimum.at`.
All coordinates are in the ego frame at the sensor's stamp (ground = plane z = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionocc_core.synth.world import BOX, CYLINDER, Solids, World


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
    road2ego = np.linalg.inv(ego2road)
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


@dataclass
class RayTiles:
    """Rays laid out on a (H, W) grid, cut into tiles of (th, tw) for culling."""

    height: int
    width: int
    th: int
    tw: int
    tile_rays: np.ndarray  # (n_tiles, th * tw) ray indices (edge tiles repeat border rays)

    @property
    def grid(self) -> tuple[int, int]:
        """(tiles along rows, tiles along columns)."""
        return -(-self.height // self.th), -(-self.width // self.tw)

    @classmethod
    def build(cls, height: int, width: int, th: int, tw: int) -> "RayTiles":
        ny, nx = -(-height // th), -(-width // tw)
        rows = np.minimum(np.arange(ny)[:, None] * th + np.arange(th)[None], height - 1)  # (ny, th)
        cols = np.minimum(np.arange(nx)[:, None] * tw + np.arange(tw)[None], width - 1)  # (nx, tw)
        idx = rows[:, None, :, None] * width + cols[None, :, None, :]  # (ny, nx, th, tw)
        return cls(height, width, th, tw, idx.reshape(ny * nx, th * tw).astype(np.int64))

    def pairs(self, rect: np.ndarray, wrap_cols: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(S, 4) pixel rects [r0, r1, c0, c1] (inclusive, may be empty: r1 < r0) -> (ray, solid)
        pairs for every ray of every tile touched by each rect."""
        ny, nx = self.grid
        r0 = np.clip(np.floor(rect[:, 0] / self.th), 0, ny - 1).astype(np.int64)
        r1 = np.clip(np.floor(rect[:, 1] / self.th), 0, ny - 1).astype(np.int64)
        c0 = np.floor(rect[:, 2] / self.tw).astype(np.int64)
        c1 = np.floor(rect[:, 3] / self.tw).astype(np.int64)
        if not wrap_cols:
            c0, c1 = np.clip(c0, 0, nx - 1), np.clip(c1, 0, nx - 1)
        else:
            c1 = np.minimum(c1, c0 + nx - 1)
        valid = (rect[:, 1] >= rect[:, 0]) & (rect[:, 3] >= rect[:, 2])
        nr = np.where(valid, r1 - r0 + 1, 0)
        nc = np.where(valid, c1 - c0 + 1, 0)
        solid, k = expand_ranges(np.zeros(len(rect), np.int64), nr * nc)
        tile = (r0[solid] + k // nc[solid]) * nx + np.mod(c0[solid] + k % nc[solid], nx)
        rays = self.tile_rays[tile]  # (pairs, th * tw)
        return rays.reshape(-1), np.repeat(solid, self.th * self.tw)


def intersect(origin: np.ndarray, dirs: np.ndarray, solids: FrameSolids, ray: np.ndarray,
              solid: np.ndarray) -> np.ndarray:
    """Ray parameter t of the first entry of each (ray, solid) pair, inf for a miss.
    origin (3,), dirs (N, 3); boxes by the slab test, vertical cylinders by side + top cap."""
    t = np.full(ray.shape, np.inf, np.float32)
    for kind in (BOX, CYLINDER):
        sel = np.flatnonzero(solids.kind[solid] == kind)
        if sel.size == 0:
            continue
        r, s = ray[sel], solid[sel]
        d = dirs[r]  # (P, 3)
        c, sn = solids.cos[s], solids.sin[s]
        dl = np.stack([c * d[:, 0] + sn * d[:, 1], -sn * d[:, 0] + c * d[:, 1], d[:, 2]], -1)
        ol_all = solids.to_local(np.broadcast_to(origin, (len(solids), 3)), np.arange(len(solids)))
        ol = ol_all[s]  # (P, 3)
        h = solids.half[s]
        if kind == BOX:
            inv = 1.0 / np.where(np.abs(dl) < 1e-9, 1e-9, dl)
            t1, t2 = (-h - ol) * inv, (h - ol) * inv
            tnear = np.minimum(t1, t2).max(1)
            tfar = np.maximum(t1, t2).min(1)
            hit = (tnear <= tfar) & (tnear > 0)
            t[sel] = np.where(hit, tnear, np.inf)
        else:
            rad = h[:, 0]
            a = dl[:, 0] ** 2 + dl[:, 1] ** 2
            b = ol[:, 0] * dl[:, 0] + ol[:, 1] * dl[:, 1]
            cc = ol[:, 0] ** 2 + ol[:, 1] ** 2 - rad ** 2
            disc = b * b - a * cc
            ts = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, 1e-12)
            zs = ol[:, 2] + ts * dl[:, 2]
            side = (disc >= 0) & (a > 1e-12) & (ts > 0) & (np.abs(zs) <= h[:, 2])
            dz = np.where(np.abs(dl[:, 2]) < 1e-9, -1e-9, dl[:, 2])
            tc = (np.where(dz < 0, h[:, 2], -h[:, 2]) - ol[:, 2]) / dz  # the cap facing the ray
            xc, yc = ol[:, 0] + tc * dl[:, 0], ol[:, 1] + tc * dl[:, 1]
            cap = (tc > 0) & (xc * xc + yc * yc <= rad * rad)
            t[sel] = np.where(side, ts, np.where(cap, tc, np.inf))
    return t


def zbuffer(n_rays: int, t_pairs: np.ndarray, ray: np.ndarray, solid: np.ndarray,
            t_init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit per ray: (t (N,), winning solid (N,) or -1 where `t_init` (the ground) or
    nothing wins)."""
    zbuf = np.full(n_rays, np.inf, np.float32) if t_init is None else t_init.astype(np.float32).copy()
    hit = np.isfinite(t_pairs)
    ray, solid, t_pairs = ray[hit], solid[hit], t_pairs[hit]
    np.minimum.at(zbuf, ray, t_pairs)
    win = t_pairs == zbuf[ray]
    owner = np.full(n_rays, -1, np.int64)
    owner[ray[win]] = solid[win]
    return zbuf, owner


def surface_normals(origin: np.ndarray, dirs: np.ndarray, t: np.ndarray, solids: FrameSolids,
                    solid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame unit normals (P, 3) and local hit points (P, 3) for rays hitting solids `solid`."""
    p = origin + dirs * t[:, None]
    pl = solids.to_local(p, solid)
    h = solids.half[solid]
    n_local = np.zeros_like(pl)
    box = solids.kind[solid] == BOX
    ratio = np.abs(pl) / h
    axis = ratio.argmax(1)
    rows = np.arange(len(pl))
    n_local[rows, axis] = np.sign(pl[rows, axis])
    cyl = ~box
    rad = np.hypot(pl[:, 0], pl[:, 1])
    on_cap = cyl & (np.abs(pl[:, 2]) >= h[:, 2] - 1e-3)
    side = cyl & ~on_cap
    n_local[cyl] = 0.0
    n_local[side, 0] = pl[side, 0] / np.maximum(rad[side], 1e-6)
    n_local[side, 1] = pl[side, 1] / np.maximum(rad[side], 1e-6)
    n_local[on_cap, 2] = np.sign(pl[on_cap, 2])
    c, s = solids.cos[solid], solids.sin[solid]
    n = np.stack([c * n_local[:, 0] - s * n_local[:, 1], s * n_local[:, 0] + c * n_local[:, 1], n_local[:, 2]], -1)
    return n, pl

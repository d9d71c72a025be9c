"""Occ3D-nuScenes ground truth from the world: semantics, mask_lidar and mask_camera.

* semantics (200, 200, 16) uint8 in the ego frame at the LiDAR stamp: a voxel takes the class
  of the solid covering most of its volume (4x4x4 sub-samples on solid boundaries; ties go to
  objects over the ground slab z in [-0.2, 0]); 17 = free.
* mask_lidar: voxels traversed by, or holding the end of, the key-frame sweep's rays.
* mask_camera: voxels on a camera ray before (or at, within half a voxel diagonal) the first
  surface it hits, from the six key-frame cameras' depth buffers; rays into the sky observe
  nothing — Occ3D's camera visibility (rays cast towards observed surfaces).
"""
from __future__ import annotations

import numpy as np

from fusionocc_core.classes import FREE_LABEL, GRID_LOWER, GRID_SHAPE, GRID_UPPER, VOXEL_SIZE
from fusionocc_core.synth import raycast
from fusionocc_core.synth.categories import LIDARSEG_TO_OCC
from fusionocc_core.synth.world import BOX, World

GROUND_SLAB = (-0.2, 0.0)  # the ground solid's z extent in the world
_SUB = (np.arange(4) + 0.5) / 4 - 0.5  # sub-sample offsets in voxel units
_SUB3 = np.stack(np.meshgrid(_SUB, _SUB, _SUB, indexing="ij"), -1).reshape(-1, 3) * VOXEL_SIZE  # (64, 3)
_LOWER = np.array(GRID_LOWER)
_SHAPE = np.array(GRID_SHAPE)


def voxel_centres() -> np.ndarray:
    """(200*200*16, 3) ego-frame voxel centres in C order [x][y][z]."""
    axes = [_LOWER[i] + VOXEL_SIZE * (np.arange(_SHAPE[i]) + 0.5) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _inside(local: np.ndarray, half: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Points (P, 3) in solid-local frames inside the solid (box or vertical cylinder)?"""
    inz = np.abs(local[:, 2]) <= half[:, 2]
    box = (np.abs(local[:, 0]) <= half[:, 0]) & (np.abs(local[:, 1]) <= half[:, 1])
    cyl = local[:, 0] ** 2 + local[:, 1] ** 2 <= half[:, 0] ** 2
    return inz & np.where(kind == BOX, box, cyl)


def semantics(world: World, t: float, ego2road: np.ndarray) -> np.ndarray:
    """(200, 200, 16) uint8 Occ3D labels of the world at time t in the ego frame `ego2road`."""
    nx, ny, nz = GRID_SHAPE
    solids = raycast.solids_in_ego(world, t, ego2road, 60.0)
    # ground slab: layers overlapping [-0.2, 0], class from the raster under each column
    z0 = _LOWER[2] + VOXEL_SIZE * np.arange(nz)
    g_frac = np.clip(np.minimum(z0 + VOXEL_SIZE, GROUND_SLAB[1]) - np.maximum(z0, GROUND_SLAB[0]), 0, None) / VOXEL_SIZE
    cols = voxel_centres().reshape(nx, ny, nz, 3)[:, :, 0, :2].reshape(-1, 2)
    road = cols @ ego2road[:2, :2].T + ego2road[:2, 3]
    g_cls = LIDARSEG_TO_OCC[world.ground_cls.reshape(-1)[world.ground_lookup(road[:, 0], road[:, 1])]]
    layers = np.flatnonzero(g_frac > 0)
    vox = (np.arange(nx * ny)[:, None] * nz + layers[None]).reshape(-1)
    frac = np.repeat(g_frac[layers][None], nx * ny, 0).reshape(-1)
    cls = np.repeat(g_cls, len(layers))
    prio = np.zeros(vox.size, np.int8)
    pairs = [(vox, frac, cls, prio)]
    if len(solids):
        # candidate voxels: each solid's axis-aligned bounding box in voxel indices
        corners = solids.corners()  # (S, 8, 3)
        lo = np.floor((corners.min(1) - _LOWER) / VOXEL_SIZE).astype(np.int64)
        hi = np.floor((corners.max(1) - _LOWER) / VOXEL_SIZE).astype(np.int64)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, _SHAPE - 1)
        n3 = np.where((hi >= lo).all(1)[:, None], hi - lo + 1, 0)
        s, k = raycast.expand_ranges(np.zeros(len(solids), np.int64), n3.prod(1))
        ijk = lo[s] + np.stack([k // (n3[s, 1] * n3[s, 2]), (k // n3[s, 2]) % n3[s, 1], k % n3[s, 2]], 1)
        centre = _LOWER + VOXEL_SIZE * (ijk + 0.5)
        local = solids.to_local(centre, s)
        half = solids.half[s]
        rho = VOXEL_SIZE * np.sqrt(3) / 2
        cyl = solids.kind[s] != BOX
        radial = np.hypot(local[:, 0], local[:, 1])  # used for cylinders only
        r_lim = half[:, 0]
        full = (np.abs(local[:, 2]) + rho <= half[:, 2]) & np.where(
            cyl, radial + rho <= r_lim,
            (np.abs(local[:, 0]) + rho <= half[:, 0]) & (np.abs(local[:, 1]) + rho <= half[:, 1]))
        out = (np.abs(local[:, 2]) - rho >= half[:, 2]) | np.where(
            cyl, radial - rho >= r_lim,
            (np.abs(local[:, 0]) - rho >= half[:, 0]) | (np.abs(local[:, 1]) - rho >= half[:, 1]))
        fr = full.astype(np.float64)
        edge = np.flatnonzero(~full & ~out)
        if edge.size:
            pts = (centre[edge, None, :] + _SUB3[None]).reshape(-1, 3)
            se = np.repeat(s[edge], len(_SUB3))
            ins = _inside(solids.to_local(pts, se), solids.half[se], solids.kind[se])
            fr[edge] = ins.reshape(-1, len(_SUB3)).mean(1)
        keep = fr > 0
        flat = (ijk[:, 0] * ny + ijk[:, 1]) * nz + ijk[:, 2]
        pairs.append((flat[keep], fr[keep], LIDARSEG_TO_OCC[solids.cls[s[keep]]], np.ones(keep.sum(), np.int8)))
    vox, frac, cls, prio = (np.concatenate(x) for x in zip(*pairs))
    order = np.lexsort((prio, frac, vox))  # last per voxel = largest fraction, objects on ties
    vox, cls = vox[order], cls[order]
    last = np.r_[vox[1:] != vox[:-1], True]
    out_sem = np.full(nx * ny * nz, FREE_LABEL, np.uint8)
    out_sem[vox[last]] = cls[last]
    return out_sem.reshape(nx, ny, nz)


def mask_lidar(origin: np.ndarray, points_ego: np.ndarray, step: float = 0.2) -> np.ndarray:
    """(200, 200, 16) uint8: voxels that rays from `origin` to `points_ego` (P, 3) traverse or end in."""
    d = points_ego - origin
    length = np.linalg.norm(d, axis=1)
    d = d / np.maximum(length, 1e-9)[:, None]
    # clip each ray to the grid box (slab test) to sample only inside it
    inv = 1.0 / np.where(np.abs(d) < 1e-9, 1e-9, d)
    t1, t2 = (_LOWER - origin) * inv, (np.array(GRID_UPPER) - origin) * inv
    t_in = np.maximum(np.minimum(t1, t2).max(1), 0.0)
    t_out = np.minimum(np.maximum(t1, t2).min(1), length)
    n = np.where(t_out > t_in, np.ceil((t_out - t_in) / step).astype(np.int64) + 1, 0)
    ray, k = raycast.expand_ranges(np.zeros(len(d), np.int64), n)
    tt = np.minimum(t_in[ray] + k * step, t_out[ray])
    p = origin + d[ray] * tt[:, None]
    mask = np.zeros(int(np.prod(GRID_SHAPE)), np.uint8)
    _mark(mask, p)
    _mark(mask, points_ego)
    return mask.reshape(GRID_SHAPE)


def _mark(mask: np.ndarray, p: np.ndarray) -> None:
    ijk = np.floor((p - _LOWER) / VOXEL_SIZE).astype(np.int64)
    ok = ((ijk >= 0) & (ijk < _SHAPE)).all(1)
    ijk = ijk[ok]
    mask[(ijk[:, 0] * _SHAPE[1] + ijk[:, 1]) * _SHAPE[2] + ijk[:, 2]] = 1


def mask_camera(cameras: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """(200, 200, 16) uint8 visibility from cameras given as (key-ego -> camera (4, 4), K of the
    depth buffer (3, 3), depth buffer (h, w) along the optical axis)."""
    centres = voxel_centres()
    tol = VOXEL_SIZE * np.sqrt(3) / 2
    mask = np.zeros(len(centres), bool)
    for ego2cam, K, depth in cameras:
        p = centres @ ego2cam[:3, :3].T + ego2cam[:3, 3]
        z = p[:, 2]
        front = np.flatnonzero(z > 0.1)
        u = np.floor(K[0, 0] * p[front, 0] / z[front] + K[0, 2] + 0.5).astype(np.int64)
        v = np.floor(K[1, 1] * p[front, 1] / z[front] + K[1, 2] + 0.5).astype(np.int64)
        h, w = depth.shape
        inimg = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx = front[inimg]
        surface = depth[v[inimg], u[inimg]]
        vis = np.isfinite(surface) & (z[idx] <= surface + tol)  # sky rays observe nothing
        mask[idx[vis]] = True
    return mask.astype(np.uint8).reshape(GRID_SHAPE)

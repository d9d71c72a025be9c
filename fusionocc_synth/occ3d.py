"""Occ3D-nuScenes ground truth from the world: semantics, mask_lidar and mask_camera.

* semantics (200, 200, 16) uint8 in the ego frame at the LiDAR stamp: a voxel takes the class
  of the solid covering most of its volume (exact in z, 4x4 sub-samples along footprint
  outlines; ties go to objects over the ground slab z in [-0.2, 0]); 17 = free.
* mask_lidar: voxels traversed by, or holding the end of, the key-frame sweep's rays.
* mask_camera: voxels on a camera ray before (or at, within half a voxel diagonal) the first
  surface it hits, from the six key-frame cameras' depth buffers; only rays ending on a surface
  inside the grid count — Occ3D's camera visibility (rays cast towards occupied voxels).
"""
from __future__ import annotations

import numpy as np

from fusionocc_core.classes import FREE_LABEL, GRID_LOWER, GRID_SHAPE, GRID_UPPER, VOXEL_SIZE
from fusionocc_synth import raycast
from fusionocc_synth.geometry import rigid_inverse, transform_points
from fusionocc_synth.categories import LIDARSEG_TO_OCC
from fusionocc_synth.world import BOX, World

GROUND_SLAB = (-0.2, 0.0)  # the ground solid's z extent in the world
_SUB = (np.arange(4) + 0.5) / 4 - 0.5  # sub-sample offsets in voxel units
_SUB2 = np.stack(np.meshgrid(_SUB, _SUB, indexing="ij"), -1).reshape(-1, 2) * VOXEL_SIZE  # (16, 2)
_LOWER = np.array(GRID_LOWER)
_SHAPE = np.array(GRID_SHAPE)


def voxel_centres() -> np.ndarray:
    """(200*200*16, 3) ego-frame voxel centres in C order [x][y][z]."""
    axes = [_LOWER[i] + VOXEL_SIZE * (np.arange(_SHAPE[i]) + 0.5) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _footprint_fraction(solids: raycast.FrameSolids, s: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Fraction (P,) of each grid column cell (centre xy (P, 2)) covered by solid s's footprint:
    exact 1 / 0 away from the outline, 4x4 sub-samples near it."""
    local = solids.to_local(np.concatenate([xy, np.zeros((len(xy), 1))], 1), s)[:, :2]
    half = solids.half[s]
    cyl = solids.kind[s] != BOX
    rho = VOXEL_SIZE * np.sqrt(2) / 2
    radial = np.hypot(local[:, 0], local[:, 1])  # used for cylinders only
    ax, ay = np.abs(local[:, 0]), np.abs(local[:, 1])
    full = np.where(cyl, radial + rho <= half[:, 0], (ax + rho <= half[:, 0]) & (ay + rho <= half[:, 1]))
    out = np.where(cyl, radial - rho >= half[:, 0], (ax - rho >= half[:, 0]) | (ay - rho >= half[:, 1]))
    frac = full.astype(np.float64)
    edge = np.flatnonzero(~full & ~out)
    if edge.size:
        c, sn = solids.cos[s[edge]], solids.sin[s[edge]]
        # sub-sample offsets rotated into each solid's frame, added to the cell centre's local xy
        ox = c[:, None] * _SUB2[None, :, 0] + sn[:, None] * _SUB2[None, :, 1]  # (E, 16)
        oy = -sn[:, None] * _SUB2[None, :, 0] + c[:, None] * _SUB2[None, :, 1]
        lx, ly = local[edge, 0:1] + ox, local[edge, 1:2] + oy
        hx, hy = half[edge, 0:1], half[edge, 1:2]
        inside = np.where(cyl[edge, None], lx * lx + ly * ly <= hx * hx, (np.abs(lx) <= hx) & (np.abs(ly) <= hy))
        frac[edge] = inside.mean(1)
    return frac


def semantics(world: World, t: float, ego2road: np.ndarray) -> np.ndarray:
    """(200, 200, 16) uint8 Occ3D labels of the world at time t in the ego frame `ego2road`.
    Solids are vertical prisms, so a voxel's covered fraction = footprint fraction of its column
    cell x overlap of its z interval with the solid's."""
    nx, ny, nz = GRID_SHAPE
    solids = raycast.solids_in_ego(world, t, ego2road, 60.0)
    z0 = _LOWER[2] + VOXEL_SIZE * np.arange(nz)  # layer bottoms

    def z_overlap(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # (S,) -> (S, nz) fractions
        frac = (np.minimum(z0 + VOXEL_SIZE, hi[:, None]) - np.maximum(z0, lo[:, None])) / VOXEL_SIZE
        return np.where(frac > 1e-6, frac, 0.0)  # touching faces (float round-off) do not overlap

    # ground slab: layers overlapping [-0.2, 0], class from the raster under each column
    g_frac = z_overlap(np.array([GROUND_SLAB[0]]), np.array([GROUND_SLAB[1]]))[0]
    cols = voxel_centres().reshape(nx, ny, nz, 3)[:, :, 0, :2].reshape(-1, 2)
    road = cols @ ego2road[:2, :2].T + ego2road[:2, 3]
    g_cls = LIDARSEG_TO_OCC[world.ground_cls.reshape(-1)[world.ground_lookup(road[:, 0], road[:, 1])]]
    layers = np.flatnonzero(g_frac > 0)
    vox = (np.arange(nx * ny)[:, None] * nz + layers[None]).reshape(-1)
    pairs = [(vox, np.repeat(g_frac[layers][None], nx * ny, 0).reshape(-1), np.repeat(g_cls, len(layers)),
              np.zeros(vox.size, np.int8))]
    if len(solids):
        corners = solids.corners()  # (S, 8, 3)
        lo = np.floor((corners.min(1)[:, :2] - _LOWER[:2]) / VOXEL_SIZE).astype(np.int64)
        hi = np.floor((corners.max(1)[:, :2] - _LOWER[:2]) / VOXEL_SIZE).astype(np.int64)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, _SHAPE[:2] - 1)
        fz = z_overlap(solids.centre[:, 2] - solids.half[:, 2], solids.centre[:, 2] + solids.half[:, 2])  # (S, nz)
        n2 = np.where((hi >= lo).all(1)[:, None] & (fz.max(1) > 0)[:, None], hi - lo + 1, 0)
        s, k = raycast.expand_ranges(np.zeros(len(solids), np.int64), n2.prod(1))
        ij = lo[s] + np.stack([k // n2[s, 1], k % n2[s, 1]], 1)  # (P, 2) column cells
        fxy = _footprint_fraction(solids, s, _LOWER[:2] + VOXEL_SIZE * (ij + 0.5))
        keep = np.flatnonzero(fxy > 0)
        s, ij, fxy = s[keep], ij[keep], fxy[keep]
        frac = fxy[:, None] * fz[s]  # (P, nz)
        p, kz = np.nonzero(frac > 0)
        pairs.append(((ij[p, 0] * ny + ij[p, 1]) * nz + kz, frac[p, kz], LIDARSEG_TO_OCC[solids.cls[s[p]]],
                      np.ones(p.size, np.int8)))
    vox, frac, cls, prio = (np.concatenate(x) for x in zip(*pairs))
    order = np.lexsort((prio, frac, vox))  # last per voxel = largest fraction, objects on ties
    vox, cls = vox[order], cls[order]
    last = np.r_[vox[1:] != vox[:-1], True]
    out_sem = np.full(nx * ny * nz, FREE_LABEL, np.uint8)
    out_sem[vox[last]] = cls[last]
    return out_sem.reshape(nx, ny, nz)


def mask_lidar(origin: np.ndarray, points_ego: np.ndarray, step: float = 0.3) -> np.ndarray:
    """(200, 200, 16) uint8: voxels that rays from `origin` to `points_ego` (P, 3) traverse or end in
    (sampled every `step` m along each ray, clipped to the grid box, plus the end point)."""
    o = origin.astype(np.float32)
    d = points_ego.astype(np.float32) - o
    length = np.linalg.norm(d, axis=1)
    d /= np.maximum(length, 1e-6)[:, None]
    # clip each ray to the grid box (slab test) to sample only inside it
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (_LOWER.astype(np.float32) - o) / d
        t2 = (np.array(GRID_UPPER, np.float32) - o) / d
    near, far = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf), np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
    t_in = np.maximum(np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2]), 0.0)
    t_out = np.minimum(np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2]), length)
    n = np.where(t_out > t_in, np.ceil((t_out - t_in) / step).astype(np.int64) + 1, 0)
    ray, k = raycast.expand_ranges(np.zeros(len(d), np.int64), n)
    tt = np.minimum(t_in[ray] + k.astype(np.float32) * np.float32(step), t_out[ray])
    mask = np.zeros(int(np.prod(GRID_SHAPE)), np.uint8)
    mask[_flat_index(o + d[ray] * tt[:, None])] = 1
    mask[_flat_index(points_ego.astype(np.float32))] = 1
    return mask.reshape(GRID_SHAPE)


def _flat_index(p: np.ndarray) -> np.ndarray:
    """Flat [x][y][z] indices of the voxels holding points (P, 3) (points outside dropped)."""
    scale = np.float32(1 / VOXEL_SIZE)
    i, j, k = (np.floor((p[:, a] - np.float32(_LOWER[a])) * scale).astype(np.int32) for a in range(3))
    ok = (i >= 0) & (i < _SHAPE[0]) & (j >= 0) & (j < _SHAPE[1]) & (k >= 0) & (k < _SHAPE[2])
    return ((i * _SHAPE[1] + j) * _SHAPE[2] + k)[ok]


def mask_camera(cameras: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """(200, 200, 16) uint8 visibility from cameras given as (key-ego -> camera (4, 4), K of the
    depth buffer (3, 3), depth buffer (h, w) along the optical axis). As in Occ3D, only rays that
    end on a surface inside the grid observe anything (sky and far facades do not)."""
    centres = voxel_centres()
    tol = VOXEL_SIZE * np.sqrt(3) / 2
    lower, upper = _LOWER - tol, np.array(GRID_UPPER) + tol
    mask = np.zeros(len(centres), bool)
    centres = centres.astype(np.float32)
    for ego2cam, K, depth in cameras:
        # min-pool the depth buffer 2x (keeps thin occluders) to halve the work
        hh, ww = depth.shape[0] // 2 * 2, depth.shape[1] // 2 * 2
        depth = depth[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2).min((1, 3))
        K = K.copy()
        K[:2] *= 0.5
        K[:2, 2] -= 0.25  # pixel centres of the pooled grid
        h, w = depth.shape
        # surface points of all pixels, back in the key ego frame: keep those inside the grid
        v_px, u_px = np.nonzero(np.isfinite(depth))
        z_s = depth[v_px, u_px]
        x_s = (u_px - np.float32(K[0, 2])) * np.float32(1 / K[0, 0]) * z_s
        y_s = (v_px - np.float32(K[1, 2])) * np.float32(1 / K[1, 1]) * z_s
        cam2ego = rigid_inverse(ego2cam).astype(np.float32)
        inside = np.ones(len(z_s), bool)
        for a in range(3):
            coord = cam2ego[a, 0] * x_s + cam2ego[a, 1] * y_s + cam2ego[a, 2] * z_s + cam2ego[a, 3]
            inside &= (coord >= lower[a]) & (coord <= upper[a])
        surface = np.full((h, w), np.inf, np.float32)
        surface[v_px[inside], u_px[inside]] = z_s[inside]
        p = transform_points(centres, ego2cam[:3, :3], ego2cam[:3, 3])
        z = p[:, 2]
        front = np.flatnonzero(z > 0.1)
        u = np.floor(K[0, 0] * p[front, 0] / z[front] + K[0, 2] + 0.5).astype(np.int64)
        v = np.floor(K[1, 1] * p[front, 1] / z[front] + K[1, 2] + 0.5).astype(np.int64)
        inimg = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx = front[inimg]
        hit = surface[v[inimg], u[inimg]]
        vis = np.isfinite(hit) & (z[idx] <= hit + tol)
        mask[idx[vis]] = True
    return mask.astype(np.uint8).reshape(GRID_SHAPE)

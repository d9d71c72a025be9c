"""A test-only reference for SparseOcc's RayIoU, written from the official rules (MCG-NJU/SparseOcc:
ray_metrics.py, loaders/ego_pose_dataset.py, loaders/ray_metrics.py, lib/dvr/dvr.cu), step by
step and independently of fusionocc_core.metrics: pyquaternion poses and per-frame loops for the
origins, scalar per-ray loops for the ray list, the CUDA kernel's traversal transcribed one ray at
a time (`render_ray`) and, for whole volumes, the same kernel run in lock-step over all rays
(`render`), then calc_rayiou's per-class counting. Nothing here is shared with the code under test.
"""
from __future__ import annotations

import math

import numpy as np
from pyquaternion import Quaternion

PC_LOWER = (-40.0, -40.0, -1.0)
VOXEL = 0.4
SIZE_XYZ = (200, 200, 16)
MAX_STEP = 1000
FREE = 17
DBL_MAX = np.finfo(np.float64).max


def _trans_matrix(t, q) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Quaternion(q).rotation_matrix
    m[:3, 3] = t
    return m


def origins(scene_infos: list[dict]) -> list[np.ndarray]:
    """EgoPoseDataset.__getitem__ for every frame of one scene (infos in scene order)."""
    out = []
    for ref in scene_infos:
        global_from_ref_lidar = _trans_matrix(ref["ego2global_translation"], ref["ego2global_rotation"]) @ _trans_matrix(
            ref["lidar2ego_translation"], ref["lidar2ego_rotation"])
        ref_lidar_from_global = np.linalg.inv(global_from_ref_lidar)
        ref_ego_from_lidar = _trans_matrix(ref["lidar2ego_translation"], ref["lidar2ego_rotation"])
        kept = []
        for cur in scene_infos:
            if cur is ref:
                origin_tf = np.array([0.0, 0.0, 0.0], dtype=np.float32)
            else:
                global_from_cur = _trans_matrix(cur["ego2global_translation"], cur["ego2global_rotation"]) @ _trans_matrix(
                    cur["lidar2ego_translation"], cur["lidar2ego_rotation"])
                origin_tf = np.array(ref_lidar_from_global.dot(global_from_cur)[:3, 3], dtype=np.float32)
            pad = np.ones([4])
            pad[:3] = origin_tf
            o = np.dot(ref_ego_from_lidar[:3], pad.T).T
            if np.abs(o[0]) < 39 and np.abs(o[1]) < 39:
                kept.append(o)
        if len(kept) > 8:
            idx = np.round(np.linspace(0, len(kept) - 1, 8)).astype(np.int64)
            kept = [kept[i] for i in idx]
        out.append(np.stack(kept))
    return out


def lidar_rays() -> np.ndarray:
    """generate_lidar_rays: (R, 3) float32."""
    pitch_angles = []
    for k in range(10):
        pitch_angles.append(-(math.pi / 2 - math.atan(k + 1)))
    while pitch_angles[-1] < 0.21:
        pitch_angles.append(pitch_angles[-1] + (pitch_angles[-1] - pitch_angles[-2]))
    rays = []
    for pitch in pitch_angles:
        for az in np.arange(0, 360, 1):
            az = np.deg2rad(az)
            rays.append((np.cos(pitch) * np.cos(az), np.cos(pitch) * np.sin(az), np.sin(pitch)))
    return np.array(rays, dtype=np.float32)


def render_inputs(origin: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """process_one_sample's tensors handed to dvr: origin (3,) and end points (R, 3), float32 voxel units
    (float64 origin + float32 rays, minus a float32 offset, over a float32 scaler, then .float())."""
    offset = np.array(PC_LOWER, dtype=np.float32).astype(np.float64)
    scaler = np.float64(np.float32(VOXEL))
    o = np.asarray(origin, dtype=np.float64)
    ends = rays.astype(np.float64) + o[None]
    return ((o - offset) / scaler).astype(np.float32), ((ends - offset) / scaler).astype(np.float32)


def render_ray(occ: np.ndarray, o32: np.ndarray, e32: np.ndarray) -> tuple[float, tuple[int, int, int]]:
    """dvr.cu render_forward_cuda_kernel (test phase) for ONE ray, line by line: (pred_dist in voxel
    units, written as float32; coord_index x y z). occ is [x][y][z] bool."""
    xo, yo, zo = (float(v) for v in o32)
    xe, ye, ze = (float(v) for v in e32)
    vx, vy, vz = int(xo), int(yo), int(zo)
    rx, ry, rz = xe - xo, ye - yo, ze - zo
    gt_d = math.sqrt(rx * rx + ry * ry + rz * rz)
    dx, dy, dz = rx / gt_d, ry / gt_d, rz / gt_d
    step_x = 1 if dx >= 0 else -1
    step_y = 1 if dy >= 0 else -1
    step_z = 1 if dz >= 0 else -1
    t_max_x = (vx + (0 if step_x < 0 else 1) - xo) / dx if dx != 0 else DBL_MAX
    t_max_y = (vy + (0 if step_y < 0 else 1) - yo) / dy if dy != 0 else DBL_MAX
    t_max_z = (vz + (0 if step_z < 0 else 1) - zo) / dz if dz != 0 else DBL_MAX
    t_delta_x = step_x / dx if dx != 0 else DBL_MAX
    t_delta_y = step_y / dy if dy != 0 else DBL_MAX
    t_delta_z = step_z / dz if dz != 0 else DBL_MAX
    path, dist = [], []
    step, was_inside = 0, False
    sx, sy, sz = SIZE_XYZ
    while True:
        inside = 0 <= vx < sx and 0 <= vy < sy and 0 <= vz < sz
        if inside:
            was_inside = True
            path.append((vx, vy, vz))
        elif was_inside:
            break
        if t_max_x < t_max_y:
            if t_max_x < t_max_z:
                d, vx, t_max_x = t_max_x, vx + step_x, t_max_x + t_delta_x
            else:
                d, vz, t_max_z = t_max_z, vz + step_z, t_max_z + t_delta_z
        else:
            if t_max_y < t_max_z:
                d, vy, t_max_y = t_max_y, vy + step_y, t_max_y + t_delta_y
            else:
                d, vz, t_max_z = t_max_z, vz + step_z, t_max_z + t_delta_z
        if inside:
            dist.append(d)
        step += 1
        if step > MAX_STEP:
            break
    if not path:
        return float(np.float32(-1.0)), (0, 0, 0)  # pred_dist initialised to -1, coord_index to 0
    for v, d in zip(path, dist):
        if occ[v]:
            return float(np.float32(d)), v
    return float(np.float32(dist[-1])), path[-1]


def render(occs: np.ndarray, o32: np.ndarray, e32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same kernel for all rays at once (lock-step, every ray runs until the kernel would stop
    it), for V occupancy volumes seen from the same origin along the same rays (the walk through the
    voxels does not depend on the volume, only what it hits): occs (V, X, Y, Z) bool ->
    (pred_dist (V, R) float32 voxel units, coord_index (V, R, 3))."""
    o = o32.astype(np.float64)
    e = e32.astype(np.float64)
    num, nvol = len(e), len(occs)
    r = e - o[None]
    gt_d = np.sqrt(r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1] + r[:, 2] * r[:, 2])
    dvec = r / gt_d[:, None]
    stepv = np.where(dvec >= 0, 1, -1)
    vox = np.tile(np.trunc(o).astype(np.int64), (num, 1))
    nz = dvec != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max = np.where(nz, (vox + np.where(stepv < 0, 0, 1) - o[None]) / dvec, DBL_MAX)
        t_delta = np.where(nz, stepv / dvec, DBL_MAX)
    size = np.array(SIZE_XYZ)
    pred = np.full((nvol, num), -1.0)
    coord = np.zeros((nvol, num, 3), np.int64)
    found = np.zeros((nvol, num), bool)
    was_inside = np.zeros(num, bool)
    live = np.arange(num)
    for _ in range(MAX_STEP + 1):
        if live.size == 0:
            break
        v = vox[live]
        inside = np.all((v >= 0) & (v < size), axis=1)
        go = inside | ~was_inside[live]
        live, v, inside = live[go], v[go], inside[go]
        tm = t_max[live]
        ax = np.where(tm[:, 0] < tm[:, 1], np.where(tm[:, 0] < tm[:, 2], 0, 2), np.where(tm[:, 1] < tm[:, 2], 1, 2))
        d = tm[np.arange(live.size), ax]
        ins = live[inside]
        vin = v[inside]
        din = d[inside]
        for k in range(nvol):
            first = ~found[k, ins] & occs[k][vin[:, 0], vin[:, 1], vin[:, 2]]
            pred[k, ins[first]] = din[first]
            coord[k, ins[first]] = vin[first]
            found[k, ins[first]] = True
            last = ~found[k, ins]
            pred[k, ins[last]] = din[last]  # the last voxel so far, for rays that never hit
            coord[k, ins[last]] = vin[last]
        was_inside[ins] = True
        vox[live, ax] += stepv[live, ax]
        t_max[live, ax] += t_delta[live, ax]
    return pred.astype(np.float32), coord


def pcd(sems: list[np.ndarray], origins_t: np.ndarray, rays: np.ndarray) -> list[np.ndarray]:
    """process_one_sample for each volume of `sems` (same origins): (T*R, 2) float32 [label,
    distance in metres] per volume."""
    occs = np.stack([sem != FREE for sem in sems])
    out: list[list[np.ndarray]] = [[] for _ in sems]
    for origin in origins_t:
        o32, e32 = render_inputs(origin, rays)
        dist, coord = render(occs, o32, e32)
        for k, sem in enumerate(sems):
            dist_m = dist[k] * np.float32(VOXEL)  # pred_dist *= _voxel_size, float32 tensor
            label = sem[coord[k, :, 0], coord[k, :, 1], coord[k, :, 2]].astype(np.float32)
            out[k].append(np.stack([label, dist_m], axis=1))
    return [np.concatenate(o) for o in out]


def rayiou(preds: list[np.ndarray], gts: list[np.ndarray], origin_list: list[np.ndarray]) -> dict[str, float]:
    """main_rayiou + calc_rayiou: {'rayiou', 'rayiou@1', 'rayiou@2', 'rayiou@4'} as fractions."""
    rays = lidar_rays()
    pred_list, gt_list = [], []
    for pred, gt, o in zip(preds, gts, origin_list):
        p, g = pcd([pred, gt], o, rays)
        valid = g[:, 0].astype(np.int32) != FREE
        pred_list.append(p[valid])
        gt_list.append(g[valid])
    thresholds = [1, 2, 4]
    gt_cnt, pred_cnt = np.zeros(18), np.zeros(18)
    tp_cnt = np.zeros([3, 18])
    for p, g in zip(pred_list, gt_list):
        for j, thr in enumerate(thresholds):
            tp_dist = np.abs(p[:, 1] - g[:, 1]) < thr
            for c in range(18):
                m_p, m_g = p[:, 0] == c, g[:, 0] == c
                if j == 0:
                    gt_cnt[c] += m_g.sum()
                    pred_cnt[c] += m_p.sum()
                tp_cnt[j][c] += (m_g & m_p & tp_dist).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = [(tp_cnt[j] / (gt_cnt + pred_cnt - tp_cnt[j]))[:-1] for j in range(3)]
    return {"rayiou": float(np.nanmean(iou)), "rayiou@1": float(np.nanmean(iou[0])),
            "rayiou@2": float(np.nanmean(iou[1])), "rayiou@4": float(np.nanmean(iou[2]))}

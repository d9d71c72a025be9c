"""Camera rendering: ray-cast z-buffer images of the world for the six nuScenes cameras.

Each pixel ray (optical frame, depth-parametrised: t = camera z) hits the ground plane or a
solid; colour = per-class albedo x per-solid tint x Lambert shading x a procedural texture
(windows, wheels, stripes, foliage noise, ground raster with lane markings). Rendering can run
at a fraction of 1600x900 (`scale`) and is upsampled to full size for the JPEG.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fusionocc_core.synth import raycast
from fusionocc_core.synth.categories import LIDARSEG_INDEX as L
from fusionocc_core.synth.rig import IMAGE_HEIGHT, IMAGE_WIDTH, SensorCalibration
from fusionocc_core.synth.world import APPEARANCE, World

_ALBEDO = np.array([APPEARANCE.get(c, (0.5, 0.5, 0.5)) for c in range(32)], np.float32)
_VEHICLES = np.array([L[n] for n in ("vehicle.car", "vehicle.truck", "vehicle.bus.rigid",
                                     "vehicle.construction", "vehicle.trailer")])
NO_LABEL = 255


@dataclass
class Render:
    """One rendered camera frame: rgb (H, W, 3) uint8 at full size; depth (h, w) float32 metres
    along the optical axis (inf = sky) and label (h, w) uint8 lidarseg index (255 = sky) and
    solid (h, w) world solid index (-1 = ground/sky) at the render scale."""

    rgb: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    solid: np.ndarray
    scale: float


def _hash_noise(p: np.ndarray, cell: float) -> np.ndarray:
    """Cheap deterministic value noise in [0, 1) from (P, 3) coordinates quantised to `cell`."""
    q = np.floor(p / cell)
    v = np.sin(q[:, 0] * 12.9898 + q[:, 1] * 78.233 + q[:, 2] * 37.719) * 43758.5453
    return (v - np.floor(v)).astype(np.float32)


class CameraRenderer:
    """Precomputes one camera's pixel rays (ego frame), ground hits and sky; `render` draws."""

    def __init__(self, calib: SensorCalibration, scale: float = 1.0, max_depth: float = 150.0) -> None:
        self.calib = calib
        self.scale = scale
        self.h, self.w = int(round(IMAGE_HEIGHT * scale)), int(round(IMAGE_WIDTH * scale))
        K = calib.K.copy()
        K[:2] *= scale
        K[0, 2] += 0.5 * scale - 0.5  # pixel centres of the scaled grid sample the full-res image
        K[1, 2] += 0.5 * scale - 0.5
        self.K = K
        u, v = np.meshgrid(np.arange(self.w), np.arange(self.h))
        d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
        self.cam2ego = calib.sensor2ego
        self.origin = self.cam2ego[:3, 3]
        self.dirs = d_cam.reshape(-1, 3) @ self.cam2ego[:3, :3].T  # (h*w, 3), t = optical depth
        dz = self.dirs[:, 2]
        tg = np.where(dz < -1e-6, -self.origin[2] / np.minimum(dz, -1e-6), np.inf)
        self.t_ground = np.where(tg <= max_depth, tg, np.inf).astype(np.float32)
        self.ground_px = np.flatnonzero(np.isfinite(self.t_ground))
        self.ground_xy = (self.origin[:2] + self.dirs[self.ground_px, :2] * self.t_ground[self.ground_px, None])
        unit_z = dz / np.linalg.norm(self.dirs, axis=1)
        sky = np.clip(unit_z, 0, 1)[:, None]
        self.sky = ((1 - sky) * np.array([0.80, 0.86, 0.93]) + sky * np.array([0.35, 0.55, 0.85])).astype(np.float32)
        self.tiles = raycast.RayTiles.build(self.h, self.w, 32, 32)
        self.max_depth = max_depth

    def _rects(self, solids: raycast.FrameSolids) -> np.ndarray:
        """(S, 4) pixel rects covering each solid's projection (clipped at the near plane)."""
        corners = solids.corners()  # (S, 8, 3) ego
        cam = (corners - self.origin) @ self.cam2ego[:3, :3]  # (S, 8, 3) optical frame
        near = 0.05
        edges = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])
        pa, pb = cam[:, edges[:, 0]], cam[:, edges[:, 1]]  # (S, 12, 3)
        za, zb = pa[..., 2], pb[..., 2]
        cross = (za - near) * (zb - near) < 0
        f = np.where(cross, (near - za) / np.where(cross, zb - za, 1.0), 0.0)
        pc = pa + f[..., None] * (pb - pa)
        pts = np.concatenate([cam, pc], 1)  # (S, 20, 3)
        ok = np.concatenate([cam[..., 2] >= near, cross], 1)
        z = np.where(ok, pts[..., 2], 1.0)
        u = self.K[0, 0] * pts[..., 0] / z + self.K[0, 2]
        v = self.K[1, 1] * pts[..., 1] / z + self.K[1, 2]
        big = 1e9
        u0, u1 = np.where(ok, u, big).min(1), np.where(ok, u, -big).max(1)
        v0, v1 = np.where(ok, v, big).min(1), np.where(ok, v, -big).max(1)
        any_ok = ok.any(1)
        rect = np.stack([np.floor(v0) - 1, np.ceil(v1) + 1, np.floor(u0) - 1, np.ceil(u1) + 1], 1)
        rect[:, [0, 2]] = np.maximum(rect[:, [0, 2]], 0)
        rect[:, 1] = np.minimum(rect[:, 1], self.h - 1)
        rect[:, 3] = np.minimum(rect[:, 3], self.w - 1)
        rect[~any_ok] = (1, 0, 1, 0)  # empty
        return rect

    def render(self, world: World, t: float) -> Render:
        """Render the camera at scene time t seconds."""
        ego2road = world.ego_transform(t)
        solids = raycast.solids_in_ego(world, t, ego2road, self.max_depth)
        ray, sid = self.tiles.pairs(self._rects(solids))
        t_pair = raycast.intersect(self.origin, self.dirs, solids, ray, sid)
        zbuf, owner = raycast.zbuffer(len(self.dirs), t_pair, ray, sid, self.t_ground)
        n = len(self.dirs)
        rgb = self.sky.copy()
        label = np.full(n, NO_LABEL, np.uint8)
        # ground pixels not covered by a solid
        gp = self.ground_px[owner[self.ground_px] < 0]
        gxy = self.origin[:2] + self.dirs[gp, :2] * zbuf[gp, None]
        road_xy = gxy @ ego2road[:2, :2].T + ego2road[:2, 3]
        cell = world.ground_lookup(road_xy[:, 0], road_xy[:, 1])
        label[gp] = world.ground_cls.reshape(-1)[cell]
        rgb[gp] = world.ground_rgb.reshape(-1, 3)[cell].astype(np.float32) * (1.0 / 255.0)
        # solids: albedo x tint x shading x texture
        op = np.flatnonzero(owner >= 0)
        own = owner[op]
        normal, pl = raycast.surface_normals(self.origin, self.dirs[op], zbuf[op], solids, own)
        cls = solids.cls[own]
        label[op] = cls
        sun = world.sun.copy()
        sun[:2] = ego2road[:2, :2].T @ sun[:2]
        shade = 0.45 + 0.55 * np.clip(normal @ sun, 0, 1)
        tex = self._texture(cls, pl, solids.half[own], normal)
        tint = world.solids.tint[solids.index[own]]
        rgb[op] = _ALBEDO[cls] * tint * (shade * tex)[:, None]
        img = np.clip(rgb * 255.0, 0, 255).astype(np.uint8).reshape(self.h, self.w, 3)
        if self.scale != 1.0:
            img = cv2.resize(img, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_LINEAR)
        solid_world = np.full(n, -1, np.int64)
        solid_world[op] = solids.index[own]
        return Render(img, zbuf.reshape(self.h, self.w), label.reshape(self.h, self.w),
                      solid_world.reshape(self.h, self.w), self.scale)

    @staticmethod
    def _texture(cls: np.ndarray, pl: np.ndarray, half: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Per-pixel brightness factor giving each class a recognisable pattern."""
        tex = np.ones(len(cls), np.float32)
        zrel = (pl[:, 2] + half[:, 2]) / (2 * half[:, 2])  # 0 bottom .. 1 top
        vertical = np.abs(normal[:, 2]) < 0.5
        veh = np.isin(cls, _VEHICLES)
        tex[veh & vertical & (zrel > 0.55) & (zrel < 0.88)] = 0.35  # windows
        tex[veh & vertical & (zrel < 0.22)] = 0.25  # wheels / shadow
        build = cls == L["static.manmade"]
        u = np.where(np.abs(normal[:, 0]) > 0.5, pl[:, 1], pl[:, 0])
        win = build & vertical & (half[:, 2] > 1.5) & (np.mod(u, 3.0) > 0.8) & (np.mod(u, 3.0) < 2.2) \
            & (np.mod(pl[:, 2] + half[:, 2], 3.2) > 1.0) & (np.mod(pl[:, 2] + half[:, 2], 3.2) < 2.4)
        tex[win] = 0.45
        veg = cls == L["static.vegetation"]
        tex[veg] = 0.7 + 0.5 * _hash_noise(pl[veg], 0.25)
        ped = cls == L["human.pedestrian.adult"]
        tex[ped & (zrel < 0.5)] = 0.45  # trousers
        tex[ped & (zrel > 0.87)] = 1.25  # head
        cone = cls == L["movable_object.trafficcone"]
        tex[cone & (zrel > 0.45) & (zrel < 0.65)] = 2.0  # reflective band
        bar = cls == L["movable_object.barrier"]
        tex[bar & (np.mod(pl[:, 0] + pl[:, 2], 0.8) < 0.4)] = 0.3  # stripes
        return tex


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 image -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()

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

from fusionocc_synth import raycast
from fusionocc_synth.categories import LIDARSEG_INDEX as L
from fusionocc_synth.rig import IMAGE_HEIGHT, IMAGE_WIDTH, SensorCalibration
from fusionocc_synth.world import APPEARANCE, RASTER_RES, World

_ALBEDO = np.array([APPEARANCE.get(c, (0.5, 0.5, 0.5)) for c in range(32)], np.float32)
_VEHICLES = frozenset(L[n] for n in ("vehicle.car", "vehicle.truck", "vehicle.bus.rigid",
                                      "vehicle.construction", "vehicle.trailer"))
NO_LABEL = 255
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])  # 12 box edges
_KERNEL = np.ones((3, 3), np.uint8)


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
        self.dirs = (d_cam.reshape(-1, 3) @ self.cam2ego[:3, :3].T).astype(np.float32)  # (h*w, 3), t = depth
        dz = self.dirs[:, 2]
        self.t_ground = np.where(dz < -1e-6, -self.origin[2] / np.minimum(dz, -1e-6), np.inf).astype(np.float32)
        # pixel -> ground point (homogeneous ego x, y): g = o - o_z d / d_z for d = R K^-1 [u v 1]
        ox, oy, oz = self.origin
        to_ground = np.array([[-oz, 0.0, ox], [0.0, -oz, oy], [0.0, 0.0, 1.0]])
        self.pixel2ground = to_ground @ self.cam2ego[:3, :3] @ np.linalg.inv(K)
        unit_z = dz / np.linalg.norm(self.dirs, axis=1)
        sky = np.clip(unit_z, 0, 1)[:, None]
        sky_rgb = (1 - sky) * np.array([0.80, 0.86, 0.93]) + sky * np.array([0.35, 0.55, 0.85])
        self.sky = np.round(sky_rgb * 255).astype(np.uint8).reshape(self.h, self.w, 3)
        self.sky_mask = ~np.isfinite(self.t_ground).reshape(self.h, self.w)
        self.max_depth = max_depth

    def _project(self, solids: raycast.FrameSolids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Project each solid's bounding box, clipped at the near plane: pixel rects (S, 4)
        [r0, r1, c0, c1] (empty: r1 < r0), vertices uv (S, 20, 2), vertex validity (S, 20) and
        the smallest optical depth of the solid (S,) (inf when behind the camera)."""
        corners = solids.corners()  # (S, 8, 3) ego
        cam = (corners - self.origin) @ self.cam2ego[:3, :3]  # (S, 8, 3) optical frame
        near = 0.05
        pa, pb = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]  # (S, 12, 3)
        za, zb = pa[..., 2], pb[..., 2]
        cross = (za - near) * (zb - near) < 0
        f = np.where(cross, (near - za) / np.where(cross, zb - za, 1.0), 0.0)
        pts = np.concatenate([cam, pa + f[..., None] * (pb - pa)], 1)  # (S, 20, 3)
        ok = np.concatenate([cam[..., 2] >= near, cross], 1)
        z = np.where(ok, pts[..., 2], 1.0)
        uv = np.stack([self.K[0, 0] * pts[..., 0] / z + self.K[0, 2], self.K[1, 1] * pts[..., 1] / z + self.K[1, 2]], -1)
        big = 1e9
        lo = np.where(ok[..., None], uv, big).min(1)
        hi = np.where(ok[..., None], uv, -big).max(1)
        rect = np.stack([np.floor(lo[:, 1]) - 1, np.ceil(hi[:, 1]) + 1, np.floor(lo[:, 0]) - 1, np.ceil(hi[:, 0]) + 1], 1)
        rect = np.clip(rect, -1, [self.h, self.h, self.w, self.w]).astype(np.int64)
        rect[:, [0, 2]] = np.maximum(rect[:, [0, 2]], 0)
        rect[:, 1] = np.minimum(rect[:, 1], self.h - 1)
        rect[:, 3] = np.minimum(rect[:, 3], self.w - 1)
        zmin = np.where(ok, pts[..., 2], np.inf).min(1)
        return rect, uv, ok, zmin

    def _silhouette_rays(self, rect: np.ndarray, uv: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Flat ray indices inside one solid's projected convex hull (dilated by one pixel)."""
        r0, r1, c0, c1 = rect
        if r1 < r0 or c1 < c0:
            return np.zeros(0, np.int64)
        pts = uv[ok] - (c0, r0)
        hull = cv2.convexHull(np.round(np.clip(pts, -4 * self.w, 4 * self.w) * 16).astype(np.int32))
        mask = np.zeros((r1 - r0 + 1, c1 - c0 + 1), np.uint8)
        cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
        mask = cv2.dilate(mask, _KERNEL)
        rr, cc = np.nonzero(mask)
        return (rr + r0) * self.w + (cc + c0)

    def render(self, world: World, t: float) -> Render:
        """Render the camera at scene time t seconds."""
        ego2road = world.ego_transform(t)
        solids = raycast.solids_in_ego(world, t, ego2road, self.max_depth)
        rect, uv, ok, zmin = self._project(solids)
        empty = (rect[:, 1] < rect[:, 0]) | (rect[:, 3] < rect[:, 2])
        zmin[empty] = np.inf
        n = len(self.dirs)
        # ground: the raster (texture + class) warped into the image by the ground homography
        ego2raster = np.array([[1 / RASTER_RES, 0, -world.raster_origin[0] / RASTER_RES - 0.5],
                               [0, 1 / RASTER_RES, -world.raster_origin[1] / RASTER_RES - 0.5], [0, 0, 1]])
        hom = ego2raster @ ego2road[[0, 1, 3]][:, [0, 1, 3]] @ self.pixel2ground  # pixel -> raster cell
        flags = cv2.WARP_INVERSE_MAP
        img = cv2.warpPerspective(world.ground_rgb, hom, (self.w, self.h), flags=flags | cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        label = cv2.warpPerspective(world.ground_cls, hom, (self.w, self.h), flags=flags | cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_REPLICATE)
        np.copyto(img, self.sky, where=self.sky_mask[..., None])
        label[self.sky_mask] = NO_LABEL
        img, label = img.reshape(n, 3), label.reshape(n)
        # solids: albedo x tint x Lambert shading x class texture, shaded as they win pixels
        zbuf = self.t_ground.copy()
        owner = np.full(n, -1, np.int32)
        sun = world.sun.copy()
        sun[:2] = ego2road[:2, :2].T @ sun[:2]
        sun = sun.astype(np.float32)

        def on_hit(i: int, rays: np.ndarray, d: np.ndarray, t_hit: np.ndarray) -> None:
            normal, pl = raycast.surface(self.origin, d, t_hit, solids, i)
            cls = int(solids.cls[i])
            shade = 0.45 + 0.55 * np.clip(normal[:, 0] * sun[0] + normal[:, 1] * sun[1] + normal[:, 2] * sun[2], 0, 1)
            shade *= _texture(cls, pl, solids.half[i].astype(np.float32), normal)
            base = (_ALBEDO[cls] * 255.0) * world.solids.tint[solids.index[i]]
            img[rays] = np.clip(shade[:, None] * base, 0, 255).astype(np.uint8)
            label[rays] = cls

        raycast.zbuffer_solids(self.origin, self.dirs, zbuf, owner, solids,
                               lambda i: self._silhouette_rays(rect[i], uv[i], ok[i]), zmin, on_hit)
        img = img.reshape(self.h, self.w, 3)
        if self.scale != 1.0:
            img = cv2.resize(img, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_LINEAR)
        solid_world = np.where(owner >= 0, solids.index[np.maximum(owner, 0)], -1)
        return Render(img, zbuf.reshape(self.h, self.w), label.reshape(self.h, self.w),
                      solid_world.reshape(self.h, self.w), self.scale)


def _texture(cls: int, pl: np.ndarray, half: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Per-pixel brightness factor (n,) giving class `cls` a recognisable pattern; pl: solid-local
    hit points (n, 3), half: the solid's half sizes, normal: (n, 3)."""
    tex = np.ones(len(pl), np.float32)
    zrel = (pl[:, 2] + half[2]) / (2 * half[2])  # 0 bottom .. 1 top
    if cls in _VEHICLES:
        vertical = np.abs(normal[:, 2]) < 0.5
        tex[vertical & (zrel > 0.55) & (zrel < 0.88)] = 0.35  # windows
        tex[vertical & (zrel < 0.22)] = 0.25  # wheels / shadow
    elif cls == L["static.manmade"] and half[2] > 1.5:  # buildings: a grid of windows
        vertical = np.abs(normal[:, 2]) < 0.5
        u = np.mod(np.where(np.abs(normal[:, 0]) > 0.5, pl[:, 1], pl[:, 0]), 3.0)
        z = np.mod(pl[:, 2] + half[2], 3.2)
        tex[vertical & (u > 0.8) & (u < 2.2) & (z > 1.0) & (z < 2.4)] = 0.45
    elif cls == L["static.vegetation"]:
        tex = 0.7 + 0.5 * _hash_noise(pl, 0.25)
    elif cls == L["human.pedestrian.adult"]:
        tex[zrel < 0.5] = 0.45  # trousers
        tex[zrel > 0.87] = 1.25  # head
    elif cls == L["movable_object.trafficcone"]:
        tex[(zrel > 0.45) & (zrel < 0.65)] = 2.0  # reflective band
    elif cls == L["movable_object.barrier"]:
        tex[np.mod(pl[:, 0] + pl[:, 2], 0.8) < 0.4] = 0.3  # stripes
    return tex


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 image -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()

"""The synthetic street world: labelled solids (boxes, vertical cylinders), a labelled ground
raster and the ego trajectory, all in a planar "road frame" (x along the road, z up, ground z=0).

Every sensor, the Occ3D voxeliser and the annotation tables read this one description, so the
labels of points, pixels, voxels and boxes agree by construction. `build_world(seed, index,
duration_s)` is deterministic. The road frame maps to nuScenes' global frame by `road2global`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusionocc_synth.categories import LIDARSEG_INDEX as L

BOX, CYLINDER = 0, 1
RASTER_RES = 0.1  # m per ground raster cell (also the nuScenes map png resolution)

# Base albedo (RGB, 0..1) per lidarseg class: what makes the images carry class signal.
APPEARANCE: dict[int, tuple[float, float, float]] = {
    L["flat.driveable_surface"]: (0.33, 0.33, 0.35),
    L["flat.sidewalk"]: (0.62, 0.60, 0.56),
    L["flat.terrain"]: (0.42, 0.50, 0.25),
    L["flat.other"]: (0.55, 0.45, 0.38),
    L["static.manmade"]: (0.70, 0.64, 0.56),
    L["static.vegetation"]: (0.16, 0.45, 0.14),
    L["static.other"]: (0.45, 0.30, 0.20),
    L["vehicle.car"]: (0.20, 0.35, 0.70),
    L["vehicle.truck"]: (0.75, 0.75, 0.78),
    L["vehicle.bus.rigid"]: (0.85, 0.70, 0.10),
    L["vehicle.construction"]: (0.95, 0.65, 0.05),
    L["vehicle.trailer"]: (0.60, 0.35, 0.20),
    L["vehicle.motorcycle"]: (0.55, 0.10, 0.10),
    L["vehicle.bicycle"]: (0.10, 0.55, 0.55),
    L["human.pedestrian.adult"]: (0.80, 0.20, 0.25),
    L["movable_object.barrier"]: (0.90, 0.90, 0.90),
    L["movable_object.trafficcone"]: (1.00, 0.45, 0.05),
}
# LiDAR reflectivity (0..1) per lidarseg class.
REFLECTIVITY: dict[int, float] = {
    L["flat.driveable_surface"]: 0.08, L["flat.sidewalk"]: 0.14, L["flat.terrain"]: 0.10,
    L["flat.other"]: 0.12, L["static.manmade"]: 0.22, L["static.vegetation"]: 0.12,
    L["static.other"]: 0.20, L["vehicle.car"]: 0.30, L["vehicle.truck"]: 0.30,
    L["vehicle.bus.rigid"]: 0.30, L["vehicle.construction"]: 0.35, L["vehicle.trailer"]: 0.30,
    L["vehicle.motorcycle"]: 0.30, L["vehicle.bicycle"]: 0.25,
    L["human.pedestrian.adult"]: 0.10, L["movable_object.barrier"]: 0.55,
    L["movable_object.trafficcone"]: 0.70,
}

# Sizes (length, width, height) ranges per thing class.
_SIZES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "vehicle.car": ((4.1, 4.9), (1.75, 2.0), (1.45, 1.8)),
    "vehicle.truck": ((6.0, 9.0), (2.3, 2.6), (2.8, 3.6)),
    "vehicle.bus.rigid": ((10.0, 12.0), (2.5, 2.9), (3.0, 3.4)),
    "vehicle.construction": ((5.0, 7.0), (2.5, 2.8), (2.8, 3.5)),
    "vehicle.trailer": ((8.0, 11.0), (2.4, 2.6), (3.2, 3.8)),
    "vehicle.motorcycle": ((1.9, 2.2), (0.7, 0.9), (1.3, 1.5)),
    "vehicle.bicycle": ((1.6, 1.8), (0.5, 0.7), (1.0, 1.2)),
    "human.pedestrian.adult": ((0.55, 0.7), (0.55, 0.7), (1.6, 1.9)),
    "movable_object.barrier": ((1.8, 2.2), (0.4, 0.6), (0.9, 1.1)),
    "movable_object.trafficcone": ((0.35, 0.45), (0.35, 0.45), (0.6, 0.8)),
}
_CAR_COLOURS = np.array([(0.85, 0.85, 0.85), (0.12, 0.12, 0.14), (0.55, 0.57, 0.60),
                         (0.70, 0.12, 0.10), (0.15, 0.25, 0.60), (0.20, 0.35, 0.70)])


@dataclass
class Solids:
    """Structure of arrays over S solids; positions at t = 0 s plus constant acceleration motion.

    centre (S, 3) road-frame box centre at t=0 (z = height of the centre); half (S, 3) half
    length/width/height (cylinder: half[0] = radius); yaw (S,); vel, acc (S, 2) m/s, m/s^2;
    kind (S,) BOX/CYLINDER; cls (S,) lidarseg index; instance (S,) thing id or -1 for stuff;
    tint (S, 3) per-solid colour; attribute: nuScenes attribute name per thing ('' for none).
    """

    centre: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    vel: np.ndarray
    acc: np.ndarray
    kind: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    tint: np.ndarray
    attribute: list[str]

    def __len__(self) -> int:
        return len(self.yaw)

    def centre_at(self, t: float) -> np.ndarray:
        """(S, 3) centres at time t seconds after the scene start."""
        out = self.centre.copy()
        out[:, :2] += self.vel * t + 0.5 * self.acc * t * t
        return out

    def velocity_at(self, t: float) -> np.ndarray:
        """(S, 2) planar velocities at time t."""
        return self.vel + self.acc * t


@dataclass
class EgoMotion:
    """Ego trajectory in the road frame: x = x0 + v t + a t^2 / 2, y = y0 + A sin(w t + phi)."""

    x0: float
    v: float
    a: float
    y0: float
    amp: float
    omega: float
    phase: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego frame at time t seconds."""
        x = self.x0 + self.v * t + 0.5 * self.a * t * t
        y = self.y0 + self.amp * np.sin(self.omega * t + self.phase)
        dx = self.v + self.a * t
        dy = self.amp * self.omega * np.cos(self.omega * t + self.phase)
        return float(x), float(y), float(np.arctan2(dy, dx))


@dataclass
class World:
    """One scene's world: solids, ground raster (road frame), ego motion, road -> global pose."""

    solids: Solids
    ground_cls: np.ndarray  # (Hr, Wr) uint8 lidarseg index; row = y, col = x
    ground_rgb: np.ndarray  # (Hr, Wr, 3) uint8 ground texture
    raster_origin: tuple[float, float]  # road-frame (x, y) of cell (0, 0)'s corner
    ego: EgoMotion
    road2global: np.ndarray  # (4, 4)
    sun: np.ndarray = field(default_factory=lambda: np.array([0.35, 0.45, 0.82]))

    def ground_lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat raster cell indices for road-frame points (clamped to the raster border)."""
        hr, wr = self.ground_cls.shape
        col = np.clip(((x - self.raster_origin[0]) * (1.0 / RASTER_RES)).astype(np.int32), 0, wr - 1)
        row = np.clip(((y - self.raster_origin[1]) * (1.0 / RASTER_RES)).astype(np.int32), 0, hr - 1)
        return row * wr + col

    def ego_transform(self, t: float) -> np.ndarray:
        """(4, 4) ego -> road frame at time t seconds."""
        x, y, yaw = self.ego.pose(t)
        c, s = np.cos(yaw), np.sin(yaw)
        out = np.eye(4)
        out[:2, :2] = [[c, -s], [s, c]]
        out[0, 3], out[1, 3] = x, y
        return out


class _SolidList:
    """Accumulates solids while the world is laid out; `.build()` gives the arrays."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.next_instance = 0

    def add(self, kind: int, cls: int, x: float, y: float, z0: float, length: float, width: float,
            height: float, yaw: float = 0.0, vel: tuple = (0.0, 0.0), acc: tuple = (0.0, 0.0),
            tint: tuple = (1.0, 1.0, 1.0), thing: bool = False, attribute: str = "") -> None:
        inst = -1
        if thing:
            inst, self.next_instance = self.next_instance, self.next_instance + 1
        self.rows.append((kind, cls, x, y, z0 + height / 2, length / 2, width / 2, height / 2, yaw,
                          vel, acc, tint, inst, attribute))

    def build(self) -> Solids:
        r = self.rows
        return Solids(
            centre=np.array([(x[2], x[3], x[4]) for x in r], np.float64).reshape(-1, 3),
            half=np.array([(x[5], x[6], x[7]) for x in r], np.float64).reshape(-1, 3),
            yaw=np.array([x[8] for x in r], np.float64),
            vel=np.array([x[9] for x in r], np.float64).reshape(-1, 2),
            acc=np.array([x[10] for x in r], np.float64).reshape(-1, 2),
            kind=np.array([x[0] for x in r], np.int8),
            cls=np.array([x[1] for x in r], np.uint8),
            instance=np.array([x[12] for x in r], np.int64),
            tint=np.array([x[11] for x in r], np.float32).reshape(-1, 3),
            attribute=[x[13] for x in r],
        )


def _size(rng: np.random.Generator, name: str) -> tuple[float, float, float]:
    (l0, l1), (w0, w1), (h0, h1) = _SIZES[name]
    return float(rng.uniform(l0, l1)), float(rng.uniform(w0, w1)), float(rng.uniform(h0, h1))


def _vehicle_tint(rng: np.random.Generator, name: str) -> tuple:
    if name == "vehicle.car":
        base = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] / np.array(APPEARANCE[L[name]])
        return tuple(np.clip(base, 0.1, 5.0))
    return tuple(rng.uniform(0.85, 1.15, 3))


def _slots(rng: np.random.Generator, x0: float, x1: float, gap: tuple[float, float]) -> np.ndarray:
    """Sorted random positions in [x0, x1] with spacing drawn from `gap`."""
    n = int((x1 - x0) / gap[0]) + 2
    xs = x0 + np.cumsum(rng.uniform(gap[0], gap[1], n))
    return xs[xs < x1]


@dataclass
class _Street:
    """The random street layout in the road frame (x along the street, y across, ego lane at y < 0)."""

    lanes: int  # driving lanes per direction
    lane_w: float
    median: float
    park: float  # parking lane width (0: none)
    edge: float  # |y| of the curb
    sidewalk: float
    terrain: float
    setback: float  # |y| where the building zone starts
    ego: EgoMotion
    ego_lane: int
    x_lo: float
    x_hi: float
    y_half: float
    cross: float | None  # x of the cross street, or None
    cross_w: float
    duration_s: float

    def in_cross(self, x: np.ndarray | float, margin: float = 0.0) -> np.ndarray | bool:
        """True where x lies in the cross street (with its sidewalks, plus `margin`)."""
        return self.cross is not None and np.abs(np.asarray(x) - self.cross) < self.cross_w / 2 + self.sidewalk + margin


def _street(rng: np.random.Generator, duration_s: float) -> _Street:
    """Lanes, curb, sidewalk, terrain strip, the ego's motion and the optional cross street."""
    lanes = int(rng.integers(1, 3))
    lane_w = 3.5
    median = float(rng.uniform(1.0, 2.0)) if lanes == 2 and rng.random() < 0.5 else 0.0
    park = 2.5 if rng.random() < 0.8 else 0.0
    edge = median / 2 + lanes * lane_w + park
    sidewalk = float(rng.uniform(2.0, 4.5))
    terrain = float(rng.choice([0.0, rng.uniform(1.5, 6.0)]))
    setback = edge + sidewalk + terrain

    ego_v = float(rng.uniform(3.0, 9.0))
    ego_a = float(rng.uniform(-0.3, 0.5))
    if ego_v + ego_a * duration_s < 1.0:
        ego_a = 0.0
    ego_lane = int(rng.integers(lanes))
    ego_y = -(median / 2 + (ego_lane + 0.5) * lane_w)
    ego = EgoMotion(0.0, ego_v, ego_a, ego_y, float(rng.uniform(0.0, 0.35)),
                    float(rng.uniform(0.3, 0.9)), float(rng.uniform(0, 2 * np.pi)))
    travel = ego.pose(duration_s)[0]
    cross = float(rng.uniform(10.0, travel + 30.0)) if rng.random() < 0.6 else None
    cross_w = float(rng.uniform(7.0, 10.0))
    return _Street(lanes, lane_w, median, park, edge, sidewalk, terrain, setback, ego, ego_lane,
                   -70.0, travel + 70.0, setback + 35.0, cross, cross_w, duration_s)


def _ground(rng: np.random.Generator, st: _Street) -> tuple[np.ndarray, np.ndarray]:
    """The ground raster (road frame): lidarseg class (Hr, Wr) uint8 and texture (Hr, Wr, 3) uint8
    (asphalt, sidewalk tiles, lane markings, zebra crossings)."""
    wr = int(np.ceil((st.x_hi - st.x_lo) / RASTER_RES))
    hr = int(np.ceil(2 * st.y_half / RASTER_RES))
    xs = st.x_lo + (np.arange(wr) + 0.5) * RASTER_RES  # (Wr,)
    ys = -st.y_half + (np.arange(hr) + 0.5) * RASTER_RES  # (Hr,)
    ay = np.abs(ys)[:, None]  # (Hr, 1)
    ax = xs[None, :]  # (1, Wr)
    edge, sidewalk, cross, cross_w = st.edge, st.sidewalk, st.cross, st.cross_w
    gcls = np.full((hr, wr), L["flat.terrain"], np.uint8)
    behind = rng.choice([L["flat.terrain"], L["flat.other"], L["flat.sidewalk"]])
    gcls[np.broadcast_to(ay >= st.setback, (hr, wr))] = behind
    gcls[np.broadcast_to((ay >= edge) & (ay < edge + sidewalk), (hr, wr))] = L["flat.sidewalk"]
    gcls[np.broadcast_to(ay < edge, (hr, wr))] = L["flat.driveable_surface"]
    if st.median > 0:
        gcls[np.broadcast_to(ay < st.median / 2, (hr, wr))] = L["flat.other"]
    if cross is not None:
        cx_mask = np.abs(ax - cross) < cross_w / 2
        gcls[np.broadcast_to(cx_mask, (hr, wr))] = L["flat.driveable_surface"]
        side = (np.abs(ax - cross) >= cross_w / 2) & (np.abs(ax - cross) < cross_w / 2 + sidewalk) & (ay >= edge)
        gcls[side] = L["flat.sidewalk"]
    # a few random flat.other / terrain patches in the building zone
    for _ in range(int(rng.integers(2, 6))):
        px, py = rng.uniform(st.x_lo, st.x_hi), rng.choice([-1, 1]) * rng.uniform(st.setback + 2, st.y_half - 5)
        sx, sy = rng.uniform(4, 15), rng.uniform(3, 10)
        m = (np.abs(ax - px) < sx / 2) & (np.abs(ys[:, None] - py) < sy / 2)
        gcls[m] = rng.choice([L["flat.other"], L["flat.terrain"]])

    base = np.array([APPEARANCE.get(c, (0.5, 0.5, 0.5)) for c in range(32)], np.float32)
    rgb = base[gcls]  # (Hr, Wr, 3)
    coarse = rng.uniform(0.85, 1.15, (hr // 5 + 1, wr // 5 + 1)).astype(np.float32)
    rgb *= np.repeat(np.repeat(coarse, 5, 0), 5, 1)[:hr, :wr, None]
    rgb *= rng.uniform(0.93, 1.07, (hr, wr, 1)).astype(np.float32)
    # sidewalk tiles
    tiles = ((np.mod(ax, 1.0) < 0.05) | (np.mod(ys[:, None], 1.0) < 0.05))
    rgb[tiles & (gcls == L["flat.sidewalk"])] *= 0.8
    # lane markings: white dashed lines between lanes, solid edge lines, yellow centre
    road = gcls == L["flat.driveable_surface"]
    along = ~st.in_cross(ax) if cross is not None else np.ones_like(ax, bool)
    white = np.zeros((hr, wr), bool)
    for k in range(1, st.lanes):
        yl = st.median / 2 + k * st.lane_w
        white |= (np.abs(ay - yl) < 0.075) & (np.mod(ax, 9.0) < 3.0)
    white |= np.abs(ay - (st.median / 2 + st.lanes * st.lane_w)) < 0.075
    white &= along & road
    rgb[white] = (0.92, 0.92, 0.88)
    if st.median == 0:
        rgb[(ay < 0.1) & along & road] = (0.85, 0.7, 0.15)
    if cross is not None:
        zebra = (np.abs(ax - (cross - cross_w / 2 - 2.0)) < 1.5) | (np.abs(ax - (cross + cross_w / 2 + 2.0)) < 1.5)
        zebra = zebra & (np.mod(ys[:, None], 1.2) < 0.6) & road
        rgb[zebra] = (0.9, 0.9, 0.88)
    return gcls, np.clip(rgb * 255.0, 0, 255).astype(np.uint8)


def _add_buildings(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """Buildings (and walls) on both sides, leaving the cross street open."""
    for sgn in (-1.0, 1.0):
        x = st.x_lo - rng.uniform(0, 10)
        while x < st.x_hi:
            length = float(rng.uniform(8, 30))
            depth = float(rng.uniform(8, 20))
            if not np.any(st.in_cross(np.linspace(x, x + length, 8), 2.0)):
                off = float(rng.uniform(0.5, 6.0))
                S.add(BOX, L["static.manmade"], x + length / 2, sgn * (st.setback + off + depth / 2), 0.0,
                      length, depth, float(rng.uniform(4, 20)), tint=tuple(rng.uniform(0.75, 1.2, 3)))
            x += length + float(rng.uniform(1.0, 12.0))


def _add_curb_furniture(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """Poles, trees, bicycles, motorcycles, benches and bins along both curbs."""
    edge, sidewalk = st.edge, st.sidewalk
    for sgn in (-1.0, 1.0):
        for x in _slots(rng, st.x_lo, st.x_hi, (3.0, 9.0)):
            if st.in_cross(x, 1.0):
                continue
            r = rng.random()
            yc = sgn * (edge + 0.45)
            if r < 0.22:  # pole (street light / sign)
                S.add(CYLINDER, L["static.manmade"], x, yc, 0.0, 0.3, 0.3, float(rng.uniform(4, 8)))
            elif r < 0.42:  # tree: trunk + crown
                trunk = float(rng.uniform(2.0, 3.0))
                crown = float(rng.uniform(1.2, 2.3))
                S.add(CYLINDER, L["static.vegetation"], x, yc, 0.0, 0.4, 0.4, trunk,
                      tint=(0.6, 0.45, 0.5))
                S.add(CYLINDER, L["static.vegetation"], x, yc + sgn * 0.2, trunk, 2 * crown, 2 * crown,
                      float(rng.uniform(2.0, 4.0)), tint=tuple(rng.uniform(0.8, 1.2, 3)))
            elif r < 0.55:
                l, w, h = _size(rng, "vehicle.bicycle")
                S.add(BOX, L["vehicle.bicycle"], x, yc, 0.0, l, w, h, yaw=float(rng.normal(0, 0.1)),
                      tint=tuple(rng.uniform(0.7, 1.3, 3)), thing=True, attribute="cycle.without_rider")
            elif r < 0.62:
                l, w, h = _size(rng, "vehicle.motorcycle")
                S.add(BOX, L["vehicle.motorcycle"], x, sgn * (edge + 0.6), 0.0, l, w, h,
                      yaw=float(rng.normal(0, 0.1)), tint=tuple(rng.uniform(0.7, 1.3, 3)), thing=True,
                      attribute="cycle.without_rider")
            elif r < 0.72:  # bench / bin: static.other -> Occ3D "others"
                S.add(BOX, L["static.other"], x, sgn * (edge + sidewalk - 0.5), 0.0,
                      float(rng.uniform(0.6, 1.8)), 0.5, float(rng.uniform(0.5, 1.1)))
            # else: empty slot


def _add_terrain_vegetation(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """Bushes in the terrain strip between sidewalk and buildings (when it is wide enough)."""
    if st.terrain <= 1.5:
        return
    for sgn in (-1.0, 1.0):
        for x in _slots(rng, st.x_lo, st.x_hi, (3.0, 10.0)):
            if st.in_cross(x, 1.0):
                continue
            w = float(rng.uniform(0.8, min(2.5, st.terrain - 0.3)))
            S.add(BOX, L["static.vegetation"], x, sgn * (st.edge + st.sidewalk + st.terrain / 2), 0.0,
                  float(rng.uniform(1.0, 3.0)), w, float(rng.uniform(0.6, 1.6)),
                  tint=tuple(rng.uniform(0.8, 1.2, 3)))


def _add_parking(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """Parked vehicles, or a construction zone (barriers, cones, a machine), in the parking lanes."""
    if st.park <= 0:
        return
    park = st.park
    yp = st.median / 2 + st.lanes * st.lane_w + park / 2
    for sgn in (-1.0, 1.0):
        x = st.x_lo + float(rng.uniform(0, 8))
        while x < st.x_hi:
            if rng.random() < 0.12:  # construction zone
                zone = float(rng.uniform(8, 20))
                for bx in np.arange(x, x + zone, 2.2):
                    if st.in_cross(bx, 1.0):
                        continue
                    l, w, h = _size(rng, "movable_object.barrier")
                    S.add(BOX, L["movable_object.barrier"], bx + l / 2, sgn * (yp - park / 2 + 0.4), 0.0,
                          l, w, h, thing=True)
                for cx in np.arange(x + 1.0, x + zone, 3.0):
                    if st.in_cross(cx, 1.0):
                        continue
                    l, w, h = _size(rng, "movable_object.trafficcone")
                    S.add(CYLINDER, L["movable_object.trafficcone"], cx, sgn * (yp + 0.3), 0.0, l, l, h,
                          thing=True)
                if rng.random() < 0.5 and not st.in_cross(x + zone / 2, 4.0):
                    l, w, h = _size(rng, "vehicle.construction")
                    S.add(BOX, L["vehicle.construction"], x + zone / 2, sgn * yp, 0.0, l, min(w, park),
                          h, yaw=0.0, thing=True, attribute="vehicle.parked")
                x += zone + 3.0
                continue
            name = str(rng.choice(["vehicle.car"] * 14 + ["vehicle.truck", "vehicle.bus.rigid",
                                                            "vehicle.trailer", "vehicle.motorcycle"]))
            l, w, h = _size(rng, name)
            w = min(w, park - 0.1) if name != "vehicle.motorcycle" else w
            if not np.any(st.in_cross(np.array([x, x + l]), 0.5)) and rng.random() < 0.75:
                S.add(BOX, L[name], x + l / 2, sgn * yp, 0.0, l, w, h,
                      yaw=float(np.pi if sgn > 0 else 0.0) + float(rng.normal(0, 0.03)),
                      tint=_vehicle_tint(rng, name), thing=True,
                      attribute="cycle.without_rider" if name == "vehicle.motorcycle" else "vehicle.parked")
            x += l + float(rng.uniform(1.0, 6.0))


def _add_traffic(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """Moving (or queued) vehicles in every lane, one speed per lane, and a lead car before the ego."""
    ego = st.ego
    for lane in range(st.lanes):
        for sgn in (-1.0, 1.0):
            yl = sgn * (st.median / 2 + (lane + 0.5) * st.lane_w)
            if sgn < 0 and lane == st.ego_lane:  # a lead vehicle following the ego's speed profile
                if rng.random() < 0.7:
                    l, w, h = _size(rng, "vehicle.car")
                    gap = float(rng.uniform(10, 25))
                    S.add(BOX, L["vehicle.car"], ego.x0 + gap + l / 2, yl, 0.0, l, w, h,
                          vel=(ego.v, 0.0), acc=(ego.a, 0.0), tint=_vehicle_tint(rng, "vehicle.car"),
                          thing=True, attribute="vehicle.moving")
                continue
            speed = float(rng.uniform(4.0, 12.0)) * (-sgn)  # y<0 lanes drive +x
            if rng.random() < 0.15:
                speed = 0.0  # a queue of stopped cars
            span_lo = st.x_lo - max(0.0, speed * st.duration_s)
            span_hi = st.x_hi - min(0.0, speed * st.duration_s)
            x = span_lo + float(rng.uniform(0, 15))
            while x < span_hi:
                name = str(rng.choice(["vehicle.car"] * 10 + ["vehicle.truck", "vehicle.bus.rigid"]))
                l, w, h = _size(rng, name)
                S.add(BOX, L[name], x + l / 2, yl + float(rng.normal(0, 0.15)), 0.0, l, w, h,
                      yaw=0.0 if speed > 0 or (speed == 0 and sgn < 0) else float(np.pi),
                      vel=(speed, 0.0), tint=_vehicle_tint(rng, name), thing=True,
                      attribute="vehicle.moving" if speed != 0 else "vehicle.stopped")
                x += l + float(rng.uniform(8.0, 35.0))


def _add_pedestrians(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """One walking band per sidewalk (one speed: no collisions) and people standing near the buildings."""
    edge, sidewalk = st.edge, st.sidewalk
    for sgn in (-1.0, 1.0):
        yb = sgn * (edge + sidewalk * 0.55)
        speed = float(rng.uniform(0.9, 1.6)) * float(rng.choice([-1.0, 1.0]))
        for x in _slots(rng, st.x_lo - 20, st.x_hi + 20, (4.0, 25.0)):
            l, w, h = _size(rng, "human.pedestrian.adult")
            S.add(CYLINDER, L["human.pedestrian.adult"], x, yb, 0.0, l, l, h, yaw=0.0 if speed > 0 else np.pi,
                  vel=(speed, 0.0), tint=tuple(rng.uniform(0.5, 1.3, 3)), thing=True,
                  attribute="pedestrian.moving")
        for x in _slots(rng, st.x_lo, st.x_hi, (15.0, 60.0)):
            if st.in_cross(x, 0.0):
                continue
            l, w, h = _size(rng, "human.pedestrian.adult")
            S.add(CYLINDER, L["human.pedestrian.adult"], x, sgn * (edge + sidewalk * 0.85), 0.0, l, l, h,
                  yaw=float(rng.uniform(-np.pi, np.pi)), tint=tuple(rng.uniform(0.5, 1.3, 3)), thing=True,
                  attribute="pedestrian.standing")


def _add_cross_queue(rng: np.random.Generator, st: _Street, S: _SolidList) -> None:
    """A queue of stopped cars on the cross street, waiting at the stop line."""
    if st.cross is None:
        return
    for sgn in (-1.0, 1.0):
        y = sgn * (st.edge + st.sidewalk + 3.0)
        for _ in range(int(rng.integers(0, 3))):
            l, w, h = _size(rng, "vehicle.car")
            xc = st.cross + (-sgn) * st.cross_w / 4
            if abs(y) + l < st.y_half:
                S.add(BOX, L["vehicle.car"], xc, y + sgn * l / 2, 0.0, l, w, h,
                      yaw=float(-sgn * np.pi / 2), tint=_vehicle_tint(rng, "vehicle.car"), thing=True,
                      attribute="vehicle.stopped")
            y += sgn * (l + float(rng.uniform(1.5, 4.0)))


def _road_to_global(rng: np.random.Generator, st: _Street) -> np.ndarray:
    """(4, 4) road frame -> global: a random heading, offset so the world's bounding box is positive."""
    psi = float(rng.uniform(-np.pi, np.pi))
    c, s = np.cos(psi), np.sin(psi)
    corners = np.array([[st.x_lo, -st.y_half], [st.x_lo, st.y_half], [st.x_hi, -st.y_half], [st.x_hi, st.y_half]])
    rot = corners @ np.array([[c, -s], [s, c]]).T
    road2global = np.eye(4)
    road2global[:2, :2] = [[c, -s], [s, c]]
    road2global[:2, 3] = -rot.min(0) + rng.uniform(5.0, 50.0, 2)
    return road2global


def build_world(seed: int, index: int, duration_s: float) -> World:
    """Lay out one random street scene long enough for `duration_s` seconds of ego driving.
    The layout depends on (seed, index) and on the duration only in 10 s steps, so a scene's
    first key frames are the same whatever the number of key frames. The steps draw from one
    generator in a fixed order (changing it changes every generated dataset)."""
    duration_s = 10.0 * max(1, int(np.ceil(duration_s / 10.0)))
    rng = np.random.default_rng([seed, index, 0x5EED])
    st = _street(rng, duration_s)
    ground_cls, ground_rgb = _ground(rng, st)
    S = _SolidList()
    for add in (_add_buildings, _add_curb_furniture, _add_terrain_vegetation, _add_parking, _add_traffic,
                _add_pedestrians, _add_cross_queue):
        add(rng, st, S)
    return World(S.build(), ground_cls, ground_rgb, (st.x_lo, -st.y_half), st.ego, _road_to_global(rng, st))

"""Pictures of occupancy for people: a top view and a low oblique 3D view of label grids, with the
voxels outside the camera mask (the ones the metric does not score) faded and hatched.

Top view: per (x, y) column the class of the highest non-free voxel, +x up, +y left, as seen from
above the ego vehicle (rviz2 top-down). 3D view: an orthographic, z-buffered splat of the voxel
cubes (each cube drawn from one precomputed pixel stencil with shaded faces), pure numpy, a fraction
of a second for 200x200x16. Matplotlib (Agg) only lays the images out with titles, legend and the
caption, which states the frame's camera-mask mIoU from `fusionocc_core.metrics` (the scorer's core).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, GRID_LOWER, GRID_SHAPE, PALETTE, VOXEL_SIZE
from fusionocc_core.metrics import confusion_matrix, iou_per_class, mean_iou

UNSEEN_GREY = np.array([196, 196, 196], dtype=np.float64)  # what unscored voxels fade toward
UNSEEN_FADE = 0.7  # share of grey in an unscored voxel's colour
HATCH_RGB = np.array([150, 150, 150], dtype=np.uint8)  # hatch lines over unscored columns (top view)
HATCH_PERIOD, HATCH_WIDTH = 10, 2  # pixels, diagonal lines
EGO_RGB = np.array([20, 20, 20], dtype=np.uint8)
EGO_BOX_M = ((-0.8, 3.6), (-0.9, 0.9), (0.0, 1.6))  # the ego car marker (x, y, z) in the ego frame
BACKGROUND = 255
FACE_SHADE = np.array([0.80, 0.64, 1.0])  # 3D view: brightness of x-, y- and z-facing cube faces
SPLAT_CHUNK = 65536  # 3D view: cubes splatted at a time (bounds memory)
# PALETTE faded toward grey: FADED_PALETTE[label] is the colour of an unscored voxel of that class.
FADED_PALETTE: np.ndarray = np.round(UNSEEN_FADE * UNSEEN_GREY + (1 - UNSEEN_FADE) * PALETTE).astype(np.uint8)
FADED_PALETTE.setflags(write=False)


class FrameScore(NamedTuple):
    """One frame's voxel IoU over a mask, in percent, as fusionocc-score computes it for a split."""

    miou: float
    per_class: np.ndarray  # (18,) float64, NaN where a class is in neither volume's scored voxels


class Picture(NamedTuple):
    """A saved figure: its path, the caption drawn on it, and each panel's pixel box (x0, y0, x1, y1)."""

    path: Path
    caption: str
    panels: dict[str, tuple[int, int, int, int]]


def frame_score(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> FrameScore:
    """The camera-mask (or any mask) IoU of one prediction against its ground truth."""
    matrix = confusion_matrix(gt, pred, mask)
    return FrameScore(mean_iou(matrix), iou_per_class(matrix))


# ----------------------------------------------------------------------------------------------
# top view


def top_labels(labels: np.ndarray, free_label: int = FREE_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) labels -> (X, Y) label of the highest non-free voxel per column (free if none)
    and that voxel's z index (-1 if none)."""
    occupied = labels != free_label  # (X, Y, Z)
    z_top = labels.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # (X, Y)
    any_occupied = occupied.any(axis=2)
    top = np.take_along_axis(labels, z_top[..., None], axis=2)[..., 0]
    return np.where(any_occupied, top, free_label).astype(np.uint8), np.where(any_occupied, z_top, -1)


def top_view_scored(labels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(X, Y) bool: the column's shown voxel is scored (its top non-free voxel is in the mask; for
    an empty column, some voxel of it is)."""
    if mask is None:
        return np.ones(labels.shape[:2], dtype=bool)
    _, z_top = top_labels(labels)
    top_in_mask = np.take_along_axis(mask, np.maximum(z_top, 0)[..., None], axis=2)[..., 0]
    return np.where(z_top >= 0, top_in_mask, mask.any(axis=2))


def top_view_rgb(labels: np.ndarray, mask: np.ndarray | None = None, scale: int = 3) -> np.ndarray:
    """(X, Y, Z) labels -> (X*scale, Y*scale, 3) uint8 top view, +x up and +y left: class colours
    where scored, faded colours under diagonal hatching where the mask leaves the column out,
    the ego car's footprint in near-black."""
    top, _ = top_labels(labels)
    scored = top_view_scored(labels, mask)
    rgb = np.where(scored[..., None], PALETTE[top], FADED_PALETTE[top])  # (X, Y, 3)
    x0, x1, y0, y1 = _ego_footprint_cells()
    rgb[x0:x1, y0:y1] = EGO_RGB
    unscored = ~scored
    unscored[x0:x1, y0:y1] = False  # the marker stays solid
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    unscored = np.repeat(np.repeat(unscored, scale, axis=0), scale, axis=1)
    rows, cols = np.indices(unscored.shape)
    hatch = unscored & ((rows + cols) % HATCH_PERIOD < HATCH_WIDTH)
    rgb[hatch] = HATCH_RGB
    return np.ascontiguousarray(rgb[::-1, ::-1])  # row 0 = +x far end, column 0 = +y


def _ego_footprint_cells() -> tuple[int, int, int, int]:
    """Grid index ranges [x0, x1) x [y0, y1) of the ego car marker."""
    (xa, xb), (ya, yb), _ = EGO_BOX_M
    ix = [int(round((v - GRID_LOWER[0]) / VOXEL_SIZE)) for v in (xa, xb)]
    iy = [int(round((v - GRID_LOWER[1]) / VOXEL_SIZE)) for v in (ya, yb)]
    return ix[0], ix[1], iy[0], iy[1]


# ----------------------------------------------------------------------------------------------
# oblique 3D view


class ObliqueCamera(NamedTuple):
    """An orthographic camera: unit vectors right, up, forward (into the scene) in the ego frame,
    and the image scale in pixels per metre."""

    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    pixels_per_m: float


def oblique_camera(width: int, height: int, azimuth_deg: float = 200.0, elevation_deg: float = 28.0,
                   extent_m: float = 40.0, margin_px: int = 6) -> tuple[ObliqueCamera, np.ndarray]:
    """The camera looking at the grid (|x|, |y| <= extent_m) from azimuth/elevation (the camera's
    direction seen from the ego, 180 = behind, 270 = right; elevation above the ground), scaled to
    fit width x height; also the pixel offset (2,) such that a point p lands at column
    p.right * ppm + offset[0], row -p.up * ppm + offset[1]."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    forward = -np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    z0, z1 = GRID_LOWER[2], GRID_LOWER[2] + GRID_SHAPE[2] * VOXEL_SIZE
    corners = np.array([[x, y, z] for x in (-extent_m, extent_m) for y in (-extent_m, extent_m) for z in (z0, z1)])
    u, v = corners @ right, corners @ up
    ppm = min((width - 2 * margin_px) / (u.max() - u.min()), (height - 2 * margin_px) / (v.max() - v.min()))
    off = np.array([(width - ppm * (u.max() + u.min())) / 2, (height + ppm * (v.max() + v.min())) / 2])
    return ObliqueCamera(right, up, forward, ppm), off


def cube_stencil(camera: ObliqueCamera, half_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels an axis-aligned cube of half side half_m covers around its centre's pixel: offsets
    (K, 2) int (d_col, d_row), depth offsets (K,) metres of the cube's front surface, and the
    axis (K,) 0/1/2 of the face seen there. The cube is grown by 0.6 px so neighbours leave no gaps."""
    grown = half_m + 0.6 / camera.pixels_per_m
    reach = int(math.ceil(grown * math.sqrt(3) * camera.pixels_per_m)) + 1
    d = np.arange(-reach, reach + 1)
    dc, dr = (a.reshape(-1) for a in np.meshgrid(d, d, indexing="xy"))
    start = (np.outer(dc, camera.right) - np.outer(dr, camera.up)) / camera.pixels_per_m  # (K, 3) on plane
    f = np.where(np.abs(camera.forward) < 1e-9, 1e-9, camera.forward)  # (3,)
    t1, t2 = (-grown - start) / f, (grown - start) / f  # (K, 3) slab entries/exits
    t_near, t_far = np.minimum(t1, t2), np.maximum(t1, t2)
    hit = t_near.max(axis=1) <= t_far.min(axis=1)
    return (np.stack([dc, dr], 1)[hit], t_near.max(axis=1)[hit], np.argmax(t_near, axis=1)[hit])


def oblique_view_rgb(labels: np.ndarray, mask: np.ndarray | None = None, width: int = 760, height: int = 410,
                     azimuth_deg: float = 200.0, elevation_deg: float = 28.0) -> np.ndarray:
    """(X, Y, Z) labels -> (height, width, 3) uint8 low oblique orthographic view of the non-free
    voxels as shaded cubes (white background): class colours where the mask holds, faded where
    it does not, the ego car as a dark box. Only cubes with a free neighbour toward the camera
    are drawn (the rest are hidden); a z-buffer keeps the nearest surface per pixel."""
    camera, off = oblique_camera(width, height, azimuth_deg, elevation_deg)
    occupied = labels != FREE_LABEL
    colours = np.where(mask[..., None], PALETTE[labels], FADED_PALETTE[labels]) if mask is not None \
        else PALETTE[labels]  # (X, Y, Z, 3)
    ego = _ego_box_cells(labels.shape) & ~occupied
    colours[ego] = EGO_RGB
    solid = occupied | ego
    idx = np.argwhere(solid & _exposed(solid, camera.forward))  # (N, 3)
    centres = np.asarray(GRID_LOWER) + (idx + 0.5) * VOXEL_SIZE  # (N, 3) metres
    base = colours[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float32)  # (N, 3)

    offsets, depth_off, face = cube_stencil(camera, VOXEL_SIZE / 2)  # (K, 2), (K,), (K,)
    shade = FACE_SHADE[face]  # (K,)
    col = np.round(centres @ camera.right * camera.pixels_per_m + off[0]).astype(np.int64)  # (N,)
    row = np.round(-(centres @ camera.up) * camera.pixels_per_m + off[1]).astype(np.int64)
    near = (centres @ camera.forward).astype(np.float32)  # (N,) depth of each cube's centre
    zbuf = np.full(height * width, np.inf, dtype=np.float32)
    image = np.full((height * width, 3), BACKGROUND, dtype=np.uint8)
    for start in range(0, len(idx), SPLAT_CHUNK):  # bounded memory even if every voxel shows
        part = slice(start, start + SPLAT_CHUNK)
        cols = col[part, None] + offsets[None, :, 0]  # (n, K)
        rows = row[part, None] + offsets[None, :, 1]
        inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        voxel, k = np.nonzero(inside)  # row-major, as the boolean selections below
        pixel = (rows * width + cols)[inside]
        depth = (near[part, None] + depth_off[None, :])[inside]
        order = np.lexsort((depth, pixel))  # by pixel, nearest first
        first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]] if order.size else order
        first = first[depth[first] < zbuf[pixel[first]]]  # nearer than earlier chunks
        zbuf[pixel[first]] = depth[first]
        image[pixel[first]] = np.clip(base[start + voxel[first]] * shade[k[first], None], 0, 255).astype(np.uint8)
    return image.reshape(height, width, 3)


def _exposed(solid: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: a voxel whose neighbour toward the camera along some axis is empty (or off
    the grid); the others are covered on every face the camera can see."""
    padded = np.pad(solid, 1, constant_values=False)
    core = (slice(1, -1),) * 3
    out = np.zeros_like(solid)
    for axis in range(3):
        step = -1 if forward[axis] > 0 else 1  # the neighbour on the camera's side
        sl = list(core)
        sl[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
        out |= ~padded[tuple(sl)]
    return out


def _ego_box_cells(shape: tuple[int, ...]) -> np.ndarray:
    """(X, Y, Z) bool: the cells of the ego car marker box."""
    out = np.zeros(shape, dtype=bool)
    x0, x1, y0, y1 = _ego_footprint_cells()
    z0, z1 = (int(round((v - GRID_LOWER[2]) / VOXEL_SIZE)) for v in EGO_BOX_M[2])
    out[x0:x1, y0:y1, z0:z1] = True
    return out


# ----------------------------------------------------------------------------------------------
# figures


def demo_caption(score: FrameScore, scene_miou: float | None = None, scene_samples: int | None = None,
                 unscored_look: str = "faded, hatched") -> str:
    """The caption under a prediction/ground-truth picture: the frame's camera-mask mIoU (and the
    scene's, from score.json, when given) and what the faded voxels mean."""
    text = f"camera-mask mIoU of this key-frame: {score.miou:.1f}"
    if scene_miou is not None:
        text += f"   (held-out scene{f', {scene_samples} key-frames' if scene_samples else ''}: {scene_miou:.1f})"
    return text + f"\n{unscored_look}: outside the camera mask (no camera sees it), not scored - on both sides"


def _legend_handles(present: Sequence[int], score: FrameScore, hatched: bool) -> list:
    """Legend entries: each class present with its IoU on this frame, then the unscored look and the ego."""
    from matplotlib.patches import Patch

    handles = []
    for c in present:
        iou = score.per_class[c]
        tag = "not in view" if np.isnan(iou) else f"IoU {iou:.0f}"
        handles.append(Patch(facecolor=PALETTE[c] / 255.0, edgecolor="0.5", linewidth=0.5,
                             label=f"{CLASS_NAMES[c]}  ({tag})"))
    handles.append(Patch(facecolor=FADED_PALETTE[FREE_LABEL] / 255.0, edgecolor=HATCH_RGB / 255.0,
                         hatch="///" if hatched else None, label="outside camera mask\n(not scored)"))
    handles.append(Patch(facecolor=EGO_RGB / 255.0, label="ego vehicle"))
    return handles


def _present_classes(*volumes: np.ndarray) -> list[int]:
    """Classes (free excluded) that occur in any of the volumes, in class order."""
    present = np.zeros(len(CLASS_NAMES), dtype=bool)
    for vol in volumes:
        present[np.unique(vol)] = True
    present[FREE_LABEL] = False
    return np.nonzero(present)[0].tolist()


LEFT_PX, GAP_PX, TOP_PX, BOTTOM_PX, LEGEND_PX = 60, 40, 62, 76, 280  # figure layout (dpi 100)


def _save_pair(images: Sequence[np.ndarray], names: Sequence[str], path: str | Path, title: str, caption: str,
               legend: list, extent: tuple[float, float, float, float] | None) -> Picture:
    """Lay out two RGB images side by side at one screen pixel per image pixel, with titles, the
    legend on the right and the caption below; write a PNG atomically (Title and Description text
    chunks hold the title and caption) and return where each panel landed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    h_px, w_px = images[0].shape[:2]
    width = LEFT_PX + len(images) * w_px + (len(images) - 1) * GAP_PX + LEGEND_PX
    height = TOP_PX + h_px + BOTTOM_PX
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = {}
    for i, (name, image) in enumerate(zip(names, images)):
        ax = fig.add_axes(((LEFT_PX + i * (w_px + GAP_PX)) / width, BOTTOM_PX / height, w_px / width, h_px / height))
        ax.imshow(image, extent=extent, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        if extent is None:
            ax.set_axis_off()
        else:
            ax.set_xlabel("y [m]  (left +)", fontsize=8, labelpad=1)
            ax.tick_params(labelsize=7, pad=1)
            if i == 0:
                ax.set_ylabel("x [m]  (forward +)", fontsize=8, labelpad=1)
        axes[name] = ax
    fig.legend(handles=legend, loc="center right", fontsize=8, frameon=False, title="class (IoU, this frame)",
               title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 10 / height)
    fig.text(LEFT_PX / width, 8 / height, caption, fontsize=10, va="bottom", ha="left")

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.canvas.draw()
    boxes = {}
    for name, ax in axes.items():
        b = ax.get_window_extent()
        boxes[name] = (int(round(b.x0)), int(round(height - b.y1)), int(round(b.x1)), int(round(height - b.y0)))
    try:
        fig.savefig(tmp, dpi=dpi, metadata={"Title": title, "Description": caption})
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return Picture(path, caption, boxes)


def save_comparison(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, path: str | Path, title: str = "",
                    names: tuple[str, str] = ("prediction", "ground truth"), scene_miou: float | None = None,
                    scene_samples: int | None = None, scale: int = 3) -> Picture:
    """Save the top views of a prediction and its ground truth side by side, unscored voxels faded
    and hatched on both, with a legend of the classes present and the camera-mask mIoU caption."""
    score = frame_score(pred, gt, mask)
    caption = demo_caption(score, scene_miou, scene_samples, "faded, hatched")
    half = GRID_SHAPE[0] * VOXEL_SIZE / 2
    return _save_pair([top_view_rgb(pred, mask, scale), top_view_rgb(gt, mask, scale)], names, path, title,
                      caption, _legend_handles(_present_classes(pred, gt), score, hatched=True),
                      extent=(half, -half, -half, half))


def save_oblique_comparison(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, path: str | Path,
                            title: str = "", names: tuple[str, str] = ("prediction", "ground truth"),
                            scene_miou: float | None = None, scene_samples: int | None = None,
                            panel_px: tuple[int, int] = (760, 410)) -> Picture:
    """Save low oblique 3D views (from behind the ego, to its right) of a prediction and its
    ground truth side by side, unscored voxels faded on both, with the same legend and caption."""
    score = frame_score(pred, gt, mask)
    caption = demo_caption(score, scene_miou, scene_samples, "faded")
    w, h = panel_px
    return _save_pair([oblique_view_rgb(pred, mask, w, h), oblique_view_rgb(gt, mask, w, h)], names, path, title,
                      caption, _legend_handles(_present_classes(pred, gt), score, hatched=False), extent=None)

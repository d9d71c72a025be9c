"""The demo pictures (fusionocc_core.viz): a small hand-built scene, its expected IoU worked out by
hand, rendered to PNG and read back pixel by pixel."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionocc_core import viz
from fusionocc_core.classes import CLASS_INDEX, FREE_LABEL, GRID_SHAPE, PALETTE
from fusionocc_core.tools.score import GroundTruth, score_pairs

ROAD, CAR, BUILDING = CLASS_INDEX["driveable_surface"], CLASS_INDEX["car"], CLASS_INDEX["manmade"]
SCALE = 3  # top-view pixels per voxel


def small_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pred, gt, camera mask: a road layer everywhere, a car the prediction puts half a car too
    far forward (IoU 1/3), and a building in a quadrant no camera sees (front right)."""
    gt = np.full(GRID_SHAPE, FREE_LABEL, dtype=np.uint8)
    gt[:, :, 2] = ROAD
    gt[120:140, 40:70, 3:12] = BUILDING  # x 8..16 m, y -24..-12 m
    pred = gt.copy()
    gt[150:160, 120:130, 3:6] = CAR
    pred[155:165, 120:130, 3:6] = CAR  # overlap 5x10x3 of 300 each: IoU 150 / 450
    mask = np.ones(GRID_SHAPE, dtype=bool)
    mask[110:, :100] = False  # x > 4 m, y < 0: out of every camera's view
    return pred, gt, mask


EXPECTED_MIOU = (100.0 + 100.0 / 3) / 2  # road 100, car 33.3, building not in view (left out)


def panel_pixels(png: np.ndarray, box: tuple[int, int, int, int], cells_x: slice, cells_y: slice) -> np.ndarray:
    """(P, 3) RGB of a top-view panel inside grid cells [x][y] (+x up, +y left, SCALE px per cell),
    one pixel in from the cells' edges."""
    x0, y0, x1, y1 = box
    panel = png[y0:y1, x0:x1]
    rows = slice((GRID_SHAPE[0] - cells_x.stop) * SCALE + 1, (GRID_SHAPE[0] - cells_x.start) * SCALE - 1)
    cols = slice((GRID_SHAPE[1] - cells_y.stop) * SCALE + 1, (GRID_SHAPE[1] - cells_y.start) * SCALE - 1)
    return panel[rows, cols].reshape(-1, 3)


def colours(pixels: np.ndarray) -> set[tuple[int, ...]]:
    """The distinct RGB triples among (..., 3) pixels."""
    return {rgb(p) for p in np.unique(pixels.reshape(-1, 3), axis=0)}


def rgb(colour: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in colour)


def shaded(colour: np.ndarray) -> set[tuple[int, ...]]:
    """A class colour as the 3D view draws it on each kind of face."""
    return {rgb(np.clip(colour * s, 0, 255).astype(np.uint8)) for s in viz.FACE_SHADE}


def test_frame_score_is_the_scorers_miou() -> None:
    pred, gt, mask = small_scene()
    mine = viz.frame_score(pred, gt, mask)
    scorer = score_pairs([(pred, GroundTruth(gt, mask, None))], mask="camera")
    assert mine.miou == pytest.approx(EXPECTED_MIOU) == pytest.approx(scorer.miou)
    assert mine.per_class[CAR] == pytest.approx(100 / 3) and np.isnan(mine.per_class[BUILDING])


def test_top_view_fades_and_hatches_what_the_mask_leaves_out() -> None:
    pred, gt, mask = small_scene()
    view = viz.top_view_rgb(gt, mask)
    assert view.shape == (GRID_SHAPE[0] * 3, GRID_SHAPE[1] * 3, 3) and view.dtype == np.uint8
    # cells x 120..129 (8..12 m), y 80..89 (-8..-4 m): road on top, outside the mask -> faded under hatching
    hidden = view[(200 - 130) * 3:(200 - 120) * 3, (200 - 90) * 3:(200 - 80) * 3]
    assert colours(hidden) == {rgb(viz.FADED_PALETTE[ROAD]), rgb(viz.HATCH_RGB)}
    seen = view[(200 - 30) * 3:(200 - 20) * 3, (200 - 190) * 3:(200 - 180) * 3]
    assert colours(seen) == {rgb(PALETTE[ROAD])}
    # a column whose top voxel is unseen but whose ground is seen shows the top voxel, faded
    one = np.full(GRID_SHAPE, FREE_LABEL, dtype=np.uint8)
    one[20, 20, 2], one[20, 20, 9] = ROAD, CAR
    seen_ground = np.zeros(GRID_SHAPE, dtype=bool)
    seen_ground[20, 20, :5] = True
    cell = viz.top_view_rgb(one, seen_ground, scale=1)[199 - 20, 199 - 20]
    assert rgb(cell) in {rgb(viz.FADED_PALETTE[CAR]), rgb(viz.HATCH_RGB)}
    seen_ground[20, 20, 9] = True
    assert rgb(viz.top_view_rgb(one, seen_ground, scale=1)[199 - 20, 199 - 20]) == rgb(PALETTE[CAR])


def test_demo_picture_draws_unscored_voxels_apart_on_both_panels(tmp_path: Path) -> None:
    pred, gt, mask = small_scene()
    picture = viz.save_comparison(pred, gt, mask, tmp_path / "occupancy.png", title="scene-x",
                                  names=("prediction", "ground truth"), scene_miou=55.55, scene_samples=10)
    image = Image.open(picture.path)
    png = np.asarray(image.convert("RGB"))
    assert set(picture.panels) == {"prediction", "ground truth"}
    (px0, py0, px1, py1), (gx0, gy0, gx1, gy1) = picture.panels["prediction"], picture.panels["ground truth"]
    assert px1 - px0 == gx1 - gx0 == GRID_SHAPE[1] * SCALE and py1 - py0 == GRID_SHAPE[0] * SCALE  # 1:1 pixels
    assert px1 <= gx0 and (py0, py1) == (gy0, gy1)  # side by side
    assert gx1 + 150 < image.width <= 2000 and py1 + 40 < image.height <= 900  # legend right, caption below

    for name in picture.panels:
        box = picture.panels[name]
        building = panel_pixels(png, box, slice(122, 138), slice(42, 68))  # unseen: faded + hatch only
        assert colours(building) == {rgb(viz.FADED_PALETTE[BUILDING]), rgb(viz.HATCH_RGB)}, name
        unseen_road = panel_pixels(png, box, slice(170, 195), slice(75, 95))
        assert colours(unseen_road) == {rgb(viz.FADED_PALETTE[ROAD]), rgb(viz.HATCH_RGB)}, name
        seen_road = panel_pixels(png, box, slice(20, 60), slice(150, 190))
        assert colours(seen_road) == {rgb(PALETTE[ROAD])}, name
        car_in_both = panel_pixels(png, box, slice(155, 160), slice(120, 130))
        assert colours(car_in_both) == {rgb(PALETTE[CAR])}, name
    # the panels differ where the prediction does: the car's front half is only predicted
    assert colours(panel_pixels(png, picture.panels["prediction"], slice(160, 165), slice(120, 130))) \
        == {rgb(PALETTE[CAR])}
    assert colours(panel_pixels(png, picture.panels["ground truth"], slice(160, 165), slice(120, 130))) \
        == {rgb(PALETTE[ROAD])}

    assert "camera-mask mIoU of this key-frame: 66.7" in picture.caption
    assert "10 key-frames: 55.5" in picture.caption or "10 key-frames: 55.6" in picture.caption
    assert image.info["Description"] == picture.caption and image.info["Title"] == "scene-x"
    below = png[py1 + 25:, px0:gx1]  # the caption is drawn under the panels
    assert (below.min(axis=2) < 80).sum() > 200
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_oblique_view_draws_cubes_nearest_first_with_unscored_ones_faded() -> None:
    pred, gt, mask = small_scene()
    image = viz.oblique_view_rgb(gt, mask, width=400, height=220)
    assert image.shape == (220, 400, 3) and image.dtype == np.uint8
    drawn = colours(image)
    assert rgb(PALETTE[CAR]) in drawn  # the seen car's roof, in its class colour
    assert rgb(viz.FADED_PALETTE[BUILDING]) in drawn  # the unseen building's roof, faded
    assert not drawn & shaded(PALETTE[BUILDING])  # and no face of it in the class colour
    assert (image != viz.BACKGROUND).any(axis=2).mean() > 0.3  # the ground fills much of the view

    # depth order: the camera looks from behind (-x) and above; a tall wall hides a car behind it
    empty = np.full(GRID_SHAPE, FREE_LABEL, dtype=np.uint8)
    car = empty.copy()
    car[60:65, 95:105, 3:6] = CAR  # x -16..-14 m
    wall = empty.copy()
    wall[55, 80:120, :] = BUILDING  # x = -18 m, 6.4 m high, nearer to the camera
    assert shaded(PALETTE[CAR]) <= colours(viz.oblique_view_rgb(car, width=400, height=220))  # 3 faces seen
    both = np.where(wall != FREE_LABEL, wall, car)
    assert not shaded(PALETTE[CAR]) & colours(viz.oblique_view_rgb(both, width=400, height=220))


def test_oblique_picture_is_saved_with_its_caption(tmp_path: Path) -> None:
    pred, gt, mask = small_scene()
    picture = viz.save_oblique_comparison(pred, gt, mask, tmp_path / "occupancy_3d.png", panel_px=(400, 220))
    image = Image.open(picture.path)
    png = np.asarray(image.convert("RGB"))
    for name, (x0, y0, x1, y1) in picture.panels.items():
        assert (x1 - x0, y1 - y0) == (400, 220), name
        assert (png[y0:y1, x0:x1] != 255).any(axis=2).mean() > 0.3, name  # not an empty panel
    assert image.width < 400 * 2 + 500 and image.height < 220 + 200
    assert "camera-mask mIoU of this key-frame: 66.7" in image.info["Description"]

"""Image/BEV transforms: pixels, matrices, depth maps and labels stay consistent under augmentation."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fusionocc_core.config import load_config
from fusionocc_core.data import transforms as T

CFG = load_config("tiny")
OFFICIAL = load_config("official")
SRC_HW = (900, 1600)
K_NUSC = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])


def camera_to_ego(yaw: float, height: float = 1.5) -> np.ndarray:
    """Optical camera frame (z forward, x right, y down) looking along ego yaw -> ego (4, 4)."""
    # optical axes expressed in a forward-looking ego frame: z_opt = x_ego, x_opt = -y_ego, y_opt = -z_ego
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    c, s = math.cos(yaw), math.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m = np.eye(4)
    m[:3, :3] = rz @ base
    m[:3, 3] = [1.0 * c, 1.0 * s, height]
    return m


def project(point_ego, sensor2ego, k, post_rot, post_tran):
    """Forward: ego point -> (u', v', d) in the augmented image."""
    cam = np.linalg.inv(sensor2ego) @ np.append(point_ego, 1.0)
    uvw = k @ cam[:3]
    uvd = np.array([uvw[0] / uvw[2], uvw[1] / uvw[2], cam[2]])
    return post_rot @ uvd + post_tran


def lift(uvd_aug, sensor2ego, k, post_rot, post_tran, bda):
    """The view transformer's inverse: undo post-aug, multiply by depth, K^-1, sensor2ego, bda."""
    p = np.linalg.inv(post_rot) @ (uvd_aug - post_tran)
    p = np.array([p[0] * p[2], p[1] * p[2], p[2]])
    p = sensor2ego[:3, :3] @ np.linalg.inv(k) @ p + sensor2ego[:3, 3]
    return bda @ p


def test_test_transform_matches_official_matrices() -> None:
    aug = T.eval_image_aug(SRC_HW, OFFICIAL.data.input_size)
    assert aug.resize == pytest.approx(0.88)
    assert aug.crop == (0, 280, 1408, 792)  # rows 280..791, the bottom 512 of 792
    rot, tran = T.image_aug_matrices(aug)
    np.testing.assert_allclose(rot, np.diag([0.88, 0.88, 1.0]), atol=1e-6)
    np.testing.assert_allclose(tran, [0.0, -280.0, 0.0], atol=1e-6)
    tiny = T.eval_image_aug(SRC_HW, CFG.data.input_size)
    assert tiny.crop == (0, 198 - 128, 352, 198)


@pytest.mark.parametrize("seed", range(6))
def test_warped_pixels_follow_matrices(seed: int) -> None:
    """Warp a float image whose channels hold its own source coordinates: every interior output
    pixel must read back A^-1 (x - b) -- the pixels and the matrices describe the same map."""
    rng = np.random.default_rng(seed)
    cfg = CFG if seed % 2 else OFFICIAL
    h, w = SRC_HW
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
    aug = T.sample_image_aug(SRC_HW, cfg.data, rng) if seed else T.eval_image_aug(SRC_HW, cfg.data.input_size)
    rot, tran = T.image_aug_matrices(aug)
    out = T.warp_image(coords, rot, tran, aug.out_hw)
    assert out.shape == aug.out_hw + (3,)
    oh, ow = aug.out_hw
    ys, xs = np.mgrid[0:oh, 0:ow]
    src = np.linalg.inv(rot[:2, :2].astype(np.float64)) @ (np.stack([xs.ravel(), ys.ravel()]) - tran[:2, None])
    inside = (src[0] > 8) & (src[0] < w - 9) & (src[1] > 8) & (src[1] < h - 9)
    assert inside.mean() > 0.3
    got = out.reshape(-1, 3)[inside]
    assert np.all(got[:, 2] > 0.999)  # fully inside the source: no border blending
    # divide by the ones channel: cv2's INTER_AREA weights can sum to 1 - 6e-4 at some columns
    # (harmless for uint8 images, but amplified by a coordinate ramp in the thousands)
    err = (got[:, :2] / got[:, 2:] - src[:, inside].T) * aug.resize  # (M, 2) in output pixels
    # INTER_AREA weights and cv2's 1/32-px fixed-point interpolation add zero-mean noise below
    # 0.1 px; a half-pixel convention slip would shift the mean by >= 0.06 px
    assert np.abs(err).max() < 0.1
    assert np.all(np.abs(err.mean(axis=0)) < 0.01)
    # pixels that map outside the source are black
    m = 2.0 / aug.resize  # two output pixels, in source pixels
    outside = (src[0] < -m) | (src[0] > w - 1 + m) | (src[1] < -m) | (src[1] > h - 1 + m)
    assert np.all(out.reshape(-1, 3)[outside] == 0)


@pytest.mark.parametrize("preset", ["tiny", "official"])
def test_point_survives_augmentation_and_lift(preset: str) -> None:
    """A known 3D point, projected into the augmented image (intrinsics, sensor2ego, post_rot/
    post_tran) and lifted back like the view transformer, lands on the bda-mapped point."""
    cfg = load_config(preset)
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(200):
        aug = T.sample_image_aug(SRC_HW, cfg.data, rng)
        rot, tran = T.image_aug_matrices(aug)
        flip_x, flip_y = T.sample_bda(cfg.data, rng)
        bda = T.bda_matrix(flip_x, flip_y).astype(np.float64)
        s2e = camera_to_ego(rng.uniform(-math.pi, math.pi))
        # a point 2-40 m in front of the camera, inside its field of view
        d = rng.uniform(2.0, 40.0)
        u, v = rng.uniform(100, 1500), rng.uniform(100, 800)
        cam = np.linalg.inv(K_NUSC) @ np.array([u * d, v * d, d])
        point = (s2e @ np.append(cam, 1.0))[:3]
        uvd = project(point, s2e, K_NUSC, rot.astype(np.float64), tran.astype(np.float64))
        assert uvd[2] == pytest.approx(d)
        if not (0 <= uvd[0] < aug.out_hw[1] and 0 <= uvd[1] < aug.out_hw[0]):
            continue  # cropped away by this augmentation
        checked += 1
        back = lift(uvd, s2e, K_NUSC, rot.astype(np.float64), tran.astype(np.float64), bda)
        expected = T.apply_bda_points(point[None], bda)[0]
        np.testing.assert_allclose(back, expected, atol=1e-3)
        # and the points path applies the same bda as the matrix
        np.testing.assert_allclose(expected[:2], point[:2] * [-1 if flip_x else 1, -1 if flip_y else 1])
    assert checked > 50


def test_sparse_depth_pixel_is_where_the_point_projects() -> None:
    rng = np.random.default_rng(3)
    aug = T.sample_image_aug(SRC_HW, CFG.data, rng)
    rot, tran = T.image_aug_matrices(aug)
    s2e = camera_to_ego(0.3)
    h, w = aug.out_hw
    pts = []
    for u, v, d in [(400, 600, 10.0), (900, 500, 25.0), (1200, 700, 44.0)]:
        cam = np.linalg.inv(K_NUSC) @ np.array([u * d, v * d, d])
        pts.append((s2e @ np.append(cam, 1.0))[:3])
    pts = np.array(pts)
    # a farther point behind the first one on the same ray, one beyond d_max, one behind the camera
    ray = pts[0] - s2e[:3, 3]
    extra = np.array([s2e[:3, 3] + ray * 1.5, s2e[:3, 3] + ray * 4.6, s2e[:3, 3] - ray])
    cloud = np.concatenate([pts, extra]).astype(np.float32)
    cloud5 = np.concatenate([cloud, np.zeros((len(cloud), 2), np.float32)], axis=1)
    depth = T.sparse_depth_map(cloud5, s2e, K_NUSC, rot, tran, (h, w), (1.0, 45.0))
    assert depth.shape == (h, w) and depth.dtype == np.float32
    hits = 0
    for p, d in zip(pts, (10.0, 25.0, 44.0)):
        uvd = project(p, s2e, K_NUSC, rot.astype(np.float64), tran.astype(np.float64))
        col, row = int(np.rint(uvd[0])), int(np.rint(uvd[1]))
        if 0 <= col < w and 0 <= row < h:
            hits += 1
            assert depth[row, col] == pytest.approx(d, rel=1e-5)  # the nearest point wins
    assert hits >= 1
    assert np.count_nonzero(depth) == hits  # nothing from the far/behind/out-of-range points
    assert depth.max() < 45.0


def test_sparse_depth_nearest_wins_many_points() -> None:
    """Random clouds: each non-zero pixel holds the minimum depth of the points rounding into it."""
    rng = np.random.default_rng(11)
    s2e = camera_to_ego(-1.0)
    aug = T.eval_image_aug(SRC_HW, CFG.data.input_size)
    rot, tran = T.image_aug_matrices(aug)
    h, w = aug.out_hw
    n = 20000
    uv = rng.uniform([0, 0], [1600, 900], size=(n, 2))
    d = rng.uniform(0.5, 50, size=n)
    cam = (np.linalg.inv(K_NUSC) @ np.stack([uv[:, 0] * d, uv[:, 1] * d, d])).T
    pts = cam @ s2e[:3, :3].T + s2e[:3, 3]
    depth = T.sparse_depth_map(pts, s2e, K_NUSC, rot, tran, (h, w), (1.0, 45.0))
    px = np.rint(uv @ rot[:2, :2].T.astype(np.float64) + tran[:2]).astype(int)
    ok = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h) & (d >= 1.0) & (d < 45.0)
    expected = np.full((h, w), np.inf)
    np.minimum.at(expected, (px[ok, 1], px[ok, 0]), d[ok])
    expected[np.isinf(expected)] = 0
    np.testing.assert_allclose(depth, expected, rtol=1e-5)


def test_normalize_image_replicates_the_bgr_quirk() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = (200, 100, 50)  # R, G, B
    out = T.normalize_image(img)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    # channel 0 receives blue, normalised with the *red* mean/std (mmcv to_rgb on an RGB image)
    assert out[0, 0, 0] == pytest.approx((50 - 123.675) / 58.395, rel=1e-5)
    assert out[1, 0, 0] == pytest.approx((100 - 116.28) / 57.12, rel=1e-5)
    assert out[2, 0, 0] == pytest.approx((200 - 103.53) / 57.375, rel=1e-5)
    # bit-identical to mmcv's arithmetic (float32 subtract, multiply by 1/std), also into a buffer
    big = np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    mmcv = (big[..., ::-1].astype(np.float32) - T.IMG_MEAN) * T.IMG_STD_INV
    buf = np.zeros((2, 3, 64, 96), np.float32)
    T.normalize_image(big, out=buf[1])
    np.testing.assert_array_equal(buf[1], mmcv.transpose(2, 0, 1))
    np.testing.assert_array_equal(T.normalize_image(big), buf[1])
    with pytest.raises(ValueError, match="C-contiguous"):
        T.normalize_image(big, out=np.zeros((3, 96, 64), np.float32).transpose(0, 2, 1))


def test_label_map_warps_nearest_with_the_image() -> None:
    """A stride-8 label map: a source pixel's label (its nearest stored sample) appears where that
    pixel projects; outside the source image the label is 17."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 17, size=(113, 200)).astype(np.uint8)
    for k in range(10):  # the test transform (separable fast path), then random augmentations
        aug = T.sample_image_aug(SRC_HW, CFG.data, rng) if k else T.eval_image_aug(SRC_HW, CFG.data.input_size)
        rot, tran = T.image_aug_matrices(aug)
        out = T.warp_label_map(labels, 8, SRC_HW, rot, tran, aug.out_hw)
        assert out.shape == aug.out_hw and out.dtype == np.uint8
        h, w = aug.out_hw
        ys, xs = np.mgrid[0:h, 0:w]
        src = np.linalg.inv(rot[:2, :2].astype(np.float64)) @ (np.stack([xs.ravel(), ys.ravel()]) - tran[:2, None])
        # take pixels whose source lies well inside a label cell (no rounding ambiguity)
        cu, cv = np.rint(src[0]), np.rint(src[1])
        inside = (cu >= 0) & (cu < 1600) & (cv >= 0) & (cv < 900)
        flat = out.ravel()
        # nearest stored sample (cell (r, c) = source pixel (8r, 8c)), ties to the lower cell
        row, col = ((cv[inside] + 3) // 8).astype(int), ((cu[inside] + 3) // 8).astype(int)
        np.testing.assert_array_equal(flat[inside], labels[np.minimum(row, 112), np.minimum(col, 199)])
        assert np.all(flat[~inside] == T.NO_LABEL)


def test_bev_flips_keep_grid_and_points_consistent() -> None:
    """A labelled voxel stays under its points after x/y flips of both the points and the grid."""
    rng = np.random.default_rng(2)
    grid = rng.integers(0, 18, size=(200, 200, 16)).astype(np.uint8)
    idx = rng.integers([0, 0, 0], [200, 200, 16], size=(500, 3))
    centres = -np.array([40.0, 40.0, 1.0]) + 0.4 * (idx + 0.5)
    for fx in (False, True):
        for fy in (False, True):
            bda = T.bda_matrix(fx, fy)
            pts = T.apply_bda_points(centres.astype(np.float32), bda)
            g = T.flip_grid(grid, fx, fy)
            j = np.floor((pts - [-40.0, -40.0, -1.0]) / 0.4).astype(int)
            np.testing.assert_array_equal(g[j[:, 0], j[:, 1], j[:, 2]], grid[idx[:, 0], idx[:, 1], idx[:, 2]])
            assert g.flags["C_CONTIGUOUS"]


def _natural_images(count: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Smooth noise with sharp edges (like photos: flat areas, texture and step edges), uint8 RGB."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        img = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 3.0)
        img[hw[0] // 3: hw[0] // 2, hw[1] // 4: hw[1] // 2] = rng.integers(0, 256, 3, dtype=np.uint8)  # a block
        out.append(img)
    return out


def _pil_test_transform(img: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """The official test transform written with PIL (the oracle): Image.resize to (int(W r), int(H r)),
    Pillow's default resampling (bicubic), Image.crop of the bottom-centred box -> (H_in, W_in, 3) uint8."""
    from PIL import Image

    h, w = img.shape[:2]
    r = input_hw[1] / w
    new_w, new_h = int(w * r), int(h * r)
    x0 = int(max(0, new_w - input_hw[1]) / 2)
    y0 = new_h - input_hw[0]
    out = Image.fromarray(img).resize((new_w, new_h)).crop((x0, y0, x0 + input_hw[1], y0 + input_hw[0]))
    return np.asarray(out)


def _denormalise(imgs: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) network input -> (N, H, W, 3) RGB grey levels (float)."""
    bgr = imgs.double().numpy() * T.IMG_STD[None, :, None, None] + T.IMG_MEAN[None, :, None, None]
    return bgr[:, ::-1].transpose(0, 2, 3, 1)


@pytest.mark.parametrize("cfg", [CFG, OFFICIAL], ids=["tiny", "official"])
def test_eval_image_inputs_equal_the_official_pil_transform(cfg) -> None:
    images = _natural_images(2, SRC_HW, seed=0)
    imgs, rots, trans = T.eval_image_inputs(images, cfg)
    in_h, in_w = cfg.data.input_size
    assert imgs.shape == (2, 3, in_h, in_w) and imgs.dtype == torch.float32
    assert rots.shape == (2, 3, 3) and trans.shape == (2, 3)
    got = _denormalise(imgs)
    for i, img in enumerate(images):
        diff = np.abs(got[i] - _pil_test_transform(img, (in_h, in_w)).astype(np.float64))
        assert np.percentile(diff, 99) <= 2.0 and diff.mean() < 0.5, (np.percentile(diff, 99), diff.mean())
    # the matrices map a source pixel onto the pixel the transform put it at (resize, bottom crop)
    rot, tran = rots[0].numpy(), trans[0].numpy()
    assert rot[0, 0] == pytest.approx(in_w / SRC_HW[1]) and tran[1] == pytest.approx(-(int(SRC_HW[0] * (in_w / SRC_HW[1])) - in_h))
    # the normalisation is mmcv's (BGR order, RGB mean/std), bit for bit, on unresized pixels
    same = T.eval_image_inputs([images[0][:in_h, :in_w]], cfg)[0][0].numpy()
    np.testing.assert_array_equal(same, T.normalize_image(images[0][:in_h, :in_w]))


def test_eval_image_inputs_per_source_size_and_refusals() -> None:
    images = _natural_images(2, SRC_HW, seed=1)
    # a camera with another source size gets its own resize; (3, H, W) uint8 tensors are accepted
    mixed = [images[0], images[1][:450, :800]]
    imgs, rots, _ = T.eval_image_inputs(mixed, CFG.data)
    assert imgs.shape == (2, 3, 128, 352) and rots[1, 0, 0].item() == pytest.approx(352 / 800)
    for i, im in enumerate(mixed):  # each in its own place, as transformed alone
        torch.testing.assert_close(imgs[i], T.eval_image_inputs([im], CFG)[0][0], atol=0.0, rtol=0.0)
    as_tensors = [torch.from_numpy(im).permute(2, 0, 1) for im in mixed]
    torch.testing.assert_close(T.eval_image_inputs(as_tensors, CFG)[0], imgs, atol=0.0, rtol=0.0)
    # a source smaller than the input is padded with black below the crop's top, as PIL's crop does
    small = T.eval_image_inputs([images[0][:100, :352]], CFG)[0][0]
    black = torch.from_numpy(T.normalize_image(np.zeros((1, 1, 3), np.uint8)))[:, 0, 0]
    torch.testing.assert_close(small[:, :28, 5], black[:, None].expand(3, 28))
    with pytest.raises(ValueError, match="uint8"):
        T.eval_image_inputs([images[0].astype(np.float32)], CFG)
    with pytest.raises(ValueError, match="uint8"):
        T.eval_image_inputs([torch.zeros(3, 10, 10)], CFG)


def test_eval_points_thin_like_the_official_pipeline() -> None:
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-45, 45, (20000, 2)), rng.uniform(-2, 6, 20000), rng.uniform(0, 255, 20000),
                           rng.integers(0, 32, 20000)]).astype(np.float32)
    pts[::50, 0] = np.nan
    pts[1::70, 3] = np.inf  # non-finite intensity / ring: dropped here, the model does not filter again
    pts[2::90, 4] = np.nan
    out = T.eval_points(pts, OFFICIAL, np.random.default_rng(7))
    again = T.eval_points(pts, OFFICIAL, np.random.default_rng(7))
    np.testing.assert_array_equal(out, again)  # same seed, same points
    lo, hi = np.asarray(OFFICIAL.grid.lower), np.asarray(OFFICIAL.grid.upper)
    inside = np.isfinite(pts).all(1) & np.all((pts[:, :3] > lo + 1e-3) & (pts[:, :3] < hi - 1e-3), axis=1)
    high_rings = inside & (pts[:, 4] > 16)
    assert set(map(tuple, pts[high_rings])) <= set(map(tuple, out))  # every ring above 16 is kept
    low_kept = (out[:, 4] <= 16).sum() / (inside & (pts[:, 4] <= 16)).sum()
    assert 0.17 < low_kept < 0.23  # the rest with probability 0.2
    assert np.isfinite(out).all() and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    # without thinning (tiny preset) the output is exactly the finite rows inside the box, in order
    assert CFG.data.lidar_keep_prob == 1.0
    np.testing.assert_array_equal(T.eval_points(pts, CFG, np.random.default_rng(0)), pts[inside])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_box_decides_like_float64_at_its_edges(dtype) -> None:
    # the float32 fast path must keep exactly the points the float64 comparison keeps, edges included
    lo = np.asarray(OFFICIAL.grid.lower, np.float64) + T.RANGE_MARGIN
    hi = np.asarray(OFFICIAL.grid.upper, np.float64) - T.RANGE_MARGIN
    rng = np.random.default_rng(3)
    pts = rng.uniform(-41, 41, (3000, 5)).astype(dtype)
    for i in range(1200):  # the bounds, and the neighbouring representable values on both sides
        axis, bound = i % 3, (lo if i % 2 else hi)[i % 3]
        v = dtype(bound)
        pts[i, axis] = v if i % 3 == 0 else np.nextafter(v, dtype(np.inf if i % 4 < 2 else -np.inf))
    pts[1200:1210, 2] = np.nan
    expected = np.all((pts[:, :3].astype(np.float64) >= lo) & (pts[:, :3].astype(np.float64) <= hi), axis=1)
    np.testing.assert_array_equal(T.in_grid_mask(pts, OFFICIAL.grid), expected)
    assert 0 < expected[:1200].sum() < 1200  # the edge cases fall on both sides


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 300), st.just(5)),
              elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
       st.floats(-math.pi, math.pi))
def test_sparse_depth_survives_arbitrary_clouds(points: np.ndarray, yaw: float) -> None:
    """Live LiDAR clouds are untrusted (the predictor feeds them here): NaN, inf and huge values
    never crash, warn or leak; every depth is finite and within [d_min, d_max)."""
    aug = T.eval_image_aug(SRC_HW, CFG.data.input_size)
    rot, tran = T.image_aug_matrices(aug)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        depth = T.sparse_depth_map(points, camera_to_ego(yaw), K_NUSC, rot, tran, aug.out_hw, (1.0, 45.0))
    assert depth.shape == aug.out_hw and depth.dtype == np.float32
    hit = depth[depth != 0]
    assert np.all(np.isfinite(hit)) and np.all((hit >= 1.0) & (hit < 45.0))

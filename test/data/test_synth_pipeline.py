"""End to end on the synthetic nuScenes-format world: fusionocc-prepare -> OccDataset -> a batch whose
images, depth, seg labels, points, matrices and Occ3D targets describe the same scene."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fusionocc_core.data import prepare
from fusionocc_core.data.dataset import OccDataset, collate
from fusionocc_synth import generate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = generate(tmp_path_factory.mktemp("synth") / "root", scenes=1, keyframes=2, seed=3)
    assert prepare.main(["--data-root", str(path), "--version", "v1.0-mini", "--out", str(path / "infos.pkl"),
                         "--quiet"]) == 0
    return path


def lift_depth_pixels(s: dict, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel with sparse depth, lifted like the view transformer (undo post-aug, x depth, K^-1,
    sensor2ego, bda) -> (xyz (M, 3), v (M,), u (M,))."""
    d = s["sparse_depth"][n].numpy()
    v, u = np.nonzero(d)
    depth = d[v, u].astype(np.float64)
    uvd = np.stack([u, v, np.ones_like(u)], axis=1).astype(np.float64)
    post_rot, post_tran = s["post_rots"][0, n].double().numpy(), s["post_trans"][0, n].double().numpy()
    p = (uvd - post_tran) @ np.linalg.inv(post_rot).T
    p = np.stack([p[:, 0] * depth, p[:, 1] * depth, depth], axis=1)
    s2e, k = s["sensor2ego"][0, n].double().numpy(), s["intrins"][0, n].double().numpy()
    xyz = p @ (s2e[:3, :3] @ np.linalg.inv(k)).T + s2e[:3, 3]
    return xyz @ s["bda"].double().numpy().T, v, u


@pytest.mark.parametrize("train", [False, True])
def test_depth_seg_and_targets_agree_through_the_augmentation(root: Path, train: bool) -> None:
    """Lifted sparse-depth pixels land in occupied Occ3D voxels, and where such a pixel has a seg
    label, the voxel's class is that label -- for the test transform and random train augmentations."""
    ds = OccDataset(root / "infos.pkl", root, "tiny", train=train)
    torch.manual_seed(5)
    for _ in range(2 if train else 1):
        s = ds[1]
        sem = s["voxel_semantics"].numpy()
        occupied, agree, pixels = [], [], 0
        for n in range(6):
            xyz, v, u = lift_depth_pixels(s, n)
            idx = np.floor((xyz - [-40.0, -40.0, -1.0]) / 0.4).astype(int)
            ok = np.all((idx >= 0) & (idx < [200, 200, 16]), axis=1)
            label = sem[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
            seg = s["seg_labels"][n].numpy()[v[ok], u[ok]]
            pixels += int(ok.sum())
            occupied.append(np.mean(label != 17))
            agree.append(np.mean(seg[seg != 17] == label[seg != 17]))
        assert pixels > 2000
        assert np.mean(occupied) > 0.8, occupied
        assert np.mean(agree) > 0.75, agree


def test_points_sit_in_occupied_voxels(root: Path) -> None:
    """Scene start: all 8 sweeps are the current one, so the points must fill the gts' occupied voxels."""
    for train in (False, True):
        ds = OccDataset(root / "infos.pkl", root, "tiny", train=train)
        s = ds[0]
        pts = s["points"][:, :3].numpy()
        idx = np.floor((pts - [-40.0, -40.0, -1.0]) / 0.4).astype(int)
        label = s["voxel_semantics"].numpy()[idx[:, 0], idx[:, 1], idx[:, 2]]
        assert len(pts) > 10000 and np.mean(label != 17) > 0.85


def test_batches_for_both_presets(root: Path) -> None:
    for preset, hw in (("tiny", (128, 352)), ("official", (512, 1408))):
        ds = OccDataset(root / "infos.pkl", root, preset, train=False)
        b = collate([ds[1]])
        assert b["imgs"].shape == (1, 2, 6, 3) + hw
        assert b["seg_labels"].shape == (1, 6) + hw and (b["seg_labels"] != 17).any()
        assert (b["sparse_depth"] > 0).sum() > 1000

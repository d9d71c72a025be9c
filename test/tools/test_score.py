"""fusionocc-score and fusionocc_core.metrics against independent, straightforward computations."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fusionocc_core import metrics
from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, GRID_SHAPE, NUM_CLASSES
from fusionocc_core.tools import score

VENV_BIN = Path(sys.executable).parent


def random_volume(rng: np.random.Generator, absent: tuple[int, ...] = ()) -> np.ndarray:
    """Labels like Occ3D's: mostly free, the rest spread over the classes (some classes absent)."""
    labels = rng.integers(0, NUM_CLASSES, size=GRID_SHAPE).astype(np.uint8)
    labels[rng.random(GRID_SHAPE) < 0.6] = FREE_LABEL
    for c in absent:
        labels[labels == c] = FREE_LABEL
    return labels


def perturb(rng: np.random.Generator, labels: np.ndarray, fraction: float) -> np.ndarray:
    out = labels.copy()
    flip = rng.random(GRID_SHAPE) < fraction
    out[flip] = rng.integers(0, NUM_CLASSES, size=int(flip.sum()))
    return out


def write_dataset(root: Path, rng: np.random.Generator, n: int, absent: tuple[int, ...] = (5,),
                  noise: float = 0.3) -> tuple[Path, Path, list[dict]]:
    """gts/<scene>/<token>/labels.npz and preds/<token>.npz for n samples over two scenes."""
    gt_dir, pred_dir = root / "gts", root / "preds"
    pred_dir.mkdir(parents=True)
    samples = []
    for i in range(n):
        token = f"tok{i:03d}"
        gt = random_volume(rng, absent)
        pred = perturb(rng, gt, noise)
        for c in absent:  # absent from both: IoU NaN, left out of the mean
            pred[pred == c] = FREE_LABEL
        cam = (rng.random(GRID_SHAPE) < 0.3).astype(np.uint8)
        lid = (rng.random(GRID_SHAPE) < 0.5).astype(np.uint8)
        d = gt_dir / f"scene-{i % 2}" / token
        d.mkdir(parents=True)
        np.savez_compressed(d / "labels.npz", semantics=gt, mask_camera=cam, mask_lidar=lid)
        np.savez_compressed(pred_dir / f"{token}.npz", semantics=pred)
        samples.append(dict(token=token, gt=gt, pred=pred, camera=cam, lidar=lid))
    return gt_dir, pred_dir, samples


def reference_scores(samples: list[dict], mask: str) -> tuple[np.ndarray, float]:
    """Per-class IoU (percent, classes 0..17) and mIoU by sklearn + explicit per-class counting."""
    gts, preds = [], []
    for s in samples:
        keep = np.ones(GRID_SHAPE, bool) if mask == "none" else s[mask].astype(bool)
        gts.append(s["gt"][keep])
        preds.append(s["pred"][keep])
    g, p = np.concatenate(gts).astype(int), np.concatenate(preds).astype(int)
    cm = sk_confusion_matrix(g, p, labels=list(range(NUM_CLASSES)))
    ious = []
    for c in range(NUM_CLASSES):
        tp = int(np.sum((g == c) & (p == c)))
        fp = int(np.sum((g != c) & (p == c)))
        fn = int(np.sum((g == c) & (p != c)))
        assert tp == cm[c, c]
        ious.append(100.0 * tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    ious = np.array(ious)
    return ious, float(np.nanmean(ious[:FREE_LABEL]))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    return write_dataset(root, np.random.default_rng(0), n=4)


@pytest.mark.parametrize("mask", ["camera", "lidar", "none"])
def test_agrees_with_independent_confusion_matrix(dataset, mask, tmp_path):
    gt_dir, pred_dir, samples = dataset
    want_iou, want_miou = reference_scores(samples, mask)
    out = tmp_path / "score.json"
    rc = score.main(["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--mask", mask, "--json", str(out),
                     "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["mask"] == mask and doc["num_samples"] == len(samples)
    assert abs(doc["miou"] - want_miou) < 1e-6
    assert list(doc["per_class"]) == list(CLASS_NAMES[:FREE_LABEL])
    for c, name in enumerate(CLASS_NAMES[:FREE_LABEL]):
        if np.isnan(want_iou[c]):
            assert doc["per_class"][name] is None  # class 5 never occurs: NaN -> null, not in the mean
        else:
            assert abs(doc["per_class"][name] - want_iou[c]) < 1e-6
    assert doc["per_class"]["construction_vehicle"] is None
    # the mean really is over 16 finite classes here, and differs across mask modes
    assert 0 < doc["miou"] < 100


def test_mask_modes_give_different_numbers(dataset):
    gt_dir, pred_dir, _ = dataset
    values = {m: score.score_dirs(pred_dir, gt_dir, mask=m, progress=False).miou for m in metrics.MASK_MODES}
    assert len({round(v, 9) for v in values.values()}) == 3


def test_perfect_prediction_scores_100(tmp_path):
    rng = np.random.default_rng(1)
    gt_dir, pred_dir, samples = write_dataset(tmp_path, rng, n=2, absent=(), noise=0.0)
    for mask in metrics.MASK_MODES:
        result = score.score_dirs(pred_dir, gt_dir, mask=mask, progress=False)
        assert result.miou == pytest.approx(100.0, abs=1e-9)
        assert all(v == pytest.approx(100.0) for v in result.per_class.values())


def test_free_counts_in_matrix_but_not_in_mean():
    gt = np.full(GRID_SHAPE, FREE_LABEL, np.uint8)
    gt[:10] = 4  # car
    pred = gt.copy()
    pred[:5] = FREE_LABEL  # half the car predicted free: FN for car
    pred[150:] = 4  # free predicted car: FP for car
    cm = metrics.confusion_matrix(gt, pred)
    n_car = 10 * 200 * 16
    assert cm[4, 4] == n_car // 2 and cm[4, FREE_LABEL] == n_car // 2 and cm[FREE_LABEL, 4] == 50 * 200 * 16
    iou = metrics.iou_per_class(cm)
    assert iou[4] == pytest.approx(100 * (n_car / 2) / (n_car + 50 * 200 * 16))
    assert metrics.mean_iou(cm) == pytest.approx(iou[4])  # only car is finite among 0..16


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_confusion_matrix_fuzz(data):
    n = data.draw(st.integers(0, 50))
    labels = st.lists(st.integers(0, NUM_CLASSES - 1), min_size=n, max_size=n)
    gt = np.array(data.draw(labels), dtype=np.uint8)
    pred = np.array(data.draw(labels), dtype=np.uint8)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    cm = metrics.confusion_matrix(gt, pred, keep)
    want = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for g, p, k in zip(gt, pred, keep):
        want[g, p] += int(k)
    np.testing.assert_array_equal(cm, want)


# ----------------------------------------------------------------------------------------------
# bad inputs: one-line errors, exit code 1


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = score.main([*argv, "--quiet"])
    err = capsys.readouterr().err
    return rc, err


@pytest.fixture()
def small(tmp_path):
    gt_dir, pred_dir, samples = write_dataset(tmp_path, np.random.default_rng(2), n=2)
    return gt_dir, pred_dir, samples


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fusionocc-score: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_prediction_missing_is_error_unless_allowed(small, capsys, tmp_path):
    gt_dir, pred_dir, _ = small
    (pred_dir / "tok001.npz").unlink()
    rc, err = run_cli(capsys, "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(rc, err, "without a prediction", "tok001")
    out = tmp_path / "s.json"
    assert score.main(["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--allow-missing", "--json",
                       str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["num_samples"] == 1


def test_prediction_without_gt_is_error(small, capsys):
    gt_dir, pred_dir, samples = small
    np.savez_compressed(pred_dir / "stranger.npz", semantics=samples[0]["pred"])
    rc, err = run_cli(capsys, "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(rc, err, "without ground truth", "stranger")


def test_disjoint_token_sets_fail_even_when_allowed(small, capsys, tmp_path):
    gt_dir, _, samples = small
    other = tmp_path / "other"
    other.mkdir()
    np.savez_compressed(other / "nobody.npz", semantics=samples[0]["pred"])
    rc, err = run_cli(capsys, "--pred-dir", str(other), "--gt-dir", str(gt_dir), "--allow-missing")
    assert_one_line_error(rc, err, "no sample token")


@pytest.mark.parametrize("case,needle", [
    ("corrupt", "corrupt npz"),
    ("truncated", "corrupt npz"),
    ("shape", "shape"),
    ("dtype", "dtype"),
    ("label18", "label 18"),
    ("nokey", "missing key 'semantics'"),
])
def test_bad_prediction_file(small, capsys, case, needle):
    gt_dir, pred_dir, samples = small
    bad = pred_dir / "tok000.npz"
    good = samples[0]["pred"]
    if case == "corrupt":
        bad.write_bytes(b"this is not a zip file at all")
    elif case == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    elif case == "shape":
        np.savez_compressed(bad, semantics=good[:, :, :8])
    elif case == "dtype":
        np.savez_compressed(bad, semantics=good.astype(np.int64))
    elif case == "label18":
        arr = good.copy()
        arr[3, 4, 5] = 18
        np.savez_compressed(bad, semantics=arr)
    elif case == "nokey":
        np.savez_compressed(bad, labels=good)
    rc, err = run_cli(capsys, "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(rc, err, needle, "tok000.npz")


def test_bad_ground_truth(small, capsys):
    gt_dir, pred_dir, samples = small
    path = next(gt_dir.glob("*/tok001/labels.npz"))
    np.savez_compressed(path, semantics=samples[1]["gt"])  # no masks
    assert score.main(["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--mask", "none", "--quiet"]) == 0
    rc, err = run_cli(capsys, "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--mask", "camera")
    assert_one_line_error(rc, err, "mask_camera", "tok001")
    arr = samples[1]["gt"].copy()
    arr[0, 0, 0] = 200
    np.savez_compressed(path, semantics=arr, mask_camera=samples[1]["camera"], mask_lidar=samples[1]["lidar"])
    rc, err = run_cli(capsys, "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(rc, err, "label 200", "labels.npz")


def test_missing_directory_and_no_partial_json(small, capsys, tmp_path):
    gt_dir, pred_dir, _ = small
    out = tmp_path / "out.json"
    rc, err = run_cli(capsys, "--pred-dir", str(tmp_path / "nope"), "--gt-dir", str(gt_dir), "--json", str(out))
    assert_one_line_error(rc, err, "does not exist")
    assert not out.exists()
    assert list(tmp_path.glob(".out.json.*")) == []


def test_console_script_runs(small, tmp_path):
    gt_dir, pred_dir, _ = small
    out = tmp_path / "cli.json"
    proc = subprocess.run([str(VENV_BIN / "fusionocc-score"), "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir),
                           "--mask", "lidar", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout and "vegetation" in proc.stdout
    assert json.loads(out.read_text())["mask"] == "lidar"


# ----------------------------------------------------------------------------------------------
# RayIoU


def scene_volume() -> np.ndarray:
    """A street: road at z index 1, a wall of buildings, a few cars and pedestrians."""
    vol = np.full(GRID_SHAPE, FREE_LABEL, np.uint8)
    vol[:, :, 1] = 11  # driveable_surface
    vol[:, 150:, 1] = 13  # sidewalk
    vol[:, 160:, 2:12] = 15  # manmade
    vol[110:120, 80:85, 2:5] = 4  # car
    vol[60:70, 120:125, 2:5] = 4
    vol[130:132, 100:102, 2:7] = 7  # pedestrian
    vol[30:40, 30:40, 2:14] = 16  # vegetation
    return vol


def test_rayiou_perfect_is_100_and_perturbed_is_lower(tmp_path):
    gt = scene_volume()
    acc = metrics.RayIoUAccumulator()
    acc.update(gt, gt)
    assert all(v == pytest.approx(100.0) for v in acc.result().values())

    moved = np.full_like(gt, FREE_LABEL)
    moved[:, :, 1] = gt[:, :, 1]
    moved[:, :, 2:] = np.roll(gt[:, :, 2:], 8, axis=0)  # objects 3.2 m off: depth errors > 1 m
    acc = metrics.RayIoUAccumulator()
    acc.update(gt, moved)
    res = acc.result()
    assert res["rayiou"] < 95
    assert res["rayiou@1"] <= res["rayiou@2"] <= res["rayiou@4"]
    assert res["rayiou@1"] < res["rayiou@4"]

    relabel = gt.copy()
    relabel[relabel == 4] = 10  # cars called trucks: depth right, class wrong
    acc = metrics.RayIoUAccumulator()
    acc.update(gt, relabel)
    iou = acc.per_class_iou()
    assert np.all(iou[:, 4] == 0) and np.all(iou[:, 10] == 0)
    assert np.all(iou[:, 11] == pytest.approx(100.0))


def test_rayiou_through_cli(tmp_path):
    gt = scene_volume()
    d = tmp_path / "gts" / "scene-0" / "tokA"
    d.mkdir(parents=True)
    ones = np.ones(GRID_SHAPE, np.uint8)
    np.savez_compressed(d / "labels.npz", semantics=gt, mask_camera=ones, mask_lidar=ones)
    (tmp_path / "preds").mkdir()
    np.savez_compressed(tmp_path / "preds" / "tokA.npz", semantics=gt)
    out = tmp_path / "r.json"
    assert score.main(["--pred-dir", str(tmp_path / "preds"), "--gt-dir", str(tmp_path / "gts"), "--rayiou",
                       "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["rayiou"] == pytest.approx(100.0) and doc["rayiou@1"] == pytest.approx(100.0)
    assert doc["miou"] == pytest.approx(100.0)

    # multi-origin rays from an info pickle (SparseOcc style): ego moved 10 m along x between frames
    infos = [dict(token=f"tok{c}", scene_token="s0", timestamp=i, lidar2ego_translation=[0.9, 0.0, 1.8],
                  lidar2ego_rotation=[1, 0, 0, 0], ego2global_translation=[100.0 + 10 * i, 50.0, 0.0],
                  ego2global_rotation=[1, 0, 0, 0]) for i, c in enumerate("ABC")]
    with open(tmp_path / "infos.pkl", "wb") as f:
        pickle.dump({"infos": infos, "metadata": {}}, f)
    origins = score.sparseocc_ray_origins(tmp_path / "infos.pkl")
    np.testing.assert_allclose(origins["tokA"], [[0.9, 0, 1.8], [10.9, 0, 1.8], [20.9, 0, 1.8]])
    assert score.main(["--pred-dir", str(tmp_path / "preds"), "--gt-dir", str(tmp_path / "gts"), "--rayiou",
                       "--infos", str(tmp_path / "infos.pkl"), "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["rayiou"] == pytest.approx(100.0)


def test_ray_traversal_matches_brute_force_marching():
    """First-hit label and exit depth agree with dense sampling along the ray (independent method)."""
    vol = scene_volume()
    rng = np.random.default_rng(3)
    dirs = metrics.lidar_ray_directions()
    dirs = dirs[rng.choice(len(dirs), 60, replace=False)]
    origin = np.array(metrics.NUSCENES_LIDAR_ORIGIN)
    labels, depth = metrics.cast_rays(vol, metrics.trace_rays(origin, dirs))
    lower = np.array([-40.0, -40.0, -1.0])
    t = np.arange(0.0, 130.0, 0.002)  # metres, sampling step 2 mm
    for k, d in enumerate(dirs):
        pts = origin + t[:, None] * d  # (S, 3)
        idx = np.floor((pts - lower) / 0.4).astype(int)
        inside = np.all((idx >= 0) & (idx < np.array(GRID_SHAPE)), axis=1)
        last = np.argmin(inside) if not inside.all() else len(t)
        idx = idx[:last]
        lab = vol[idx[:, 0], idx[:, 1], idx[:, 2]]
        occ = np.nonzero(lab != FREE_LABEL)[0]
        if len(occ):
            want_label = lab[occ[0]]
            same = np.all(idx[occ[0]:] == idx[occ[0]], axis=1)
            leave = occ[0] + (np.argmin(same) if not same.all() else len(same))
            want_depth = t[leave - 1]
        else:
            want_label, want_depth = FREE_LABEL, t[last - 1]
        assert labels[k] == want_label
        assert abs(depth[k] - want_depth) < 0.005

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

import sparseocc_oracle
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


LIDAR_ORIGIN = np.array([metrics.NUSCENES_LIDAR_ORIGIN])


def test_rayiou_perfect_is_100_and_perturbed_is_lower(tmp_path):
    gt = scene_volume()
    acc = metrics.RayIoUAccumulator()
    acc.update(gt, gt, LIDAR_ORIGIN)
    assert all(v == pytest.approx(100.0) for v in acc.result().values())

    moved = np.full_like(gt, FREE_LABEL)
    moved[:, :, 1] = gt[:, :, 1]
    moved[:, :, 2:] = np.roll(gt[:, :, 2:], 8, axis=0)  # objects 3.2 m off: depth errors > 1 m
    acc = metrics.RayIoUAccumulator()
    acc.update(gt, moved, LIDAR_ORIGIN)
    res = acc.result()
    assert res["rayiou"] < 95
    assert res["rayiou@1"] <= res["rayiou@2"] <= res["rayiou@4"]
    assert res["rayiou@1"] < res["rayiou@4"]

    relabel = gt.copy()
    relabel[relabel == 4] = 10  # cars called trucks: depth right, class wrong
    acc = metrics.RayIoUAccumulator()
    acc.update(gt, relabel, LIDAR_ORIGIN)
    iou = acc.per_class_iou()
    assert np.all(iou[:, 4] == 0) and np.all(iou[:, 10] == 0)
    assert np.all(iou[:, 11] == pytest.approx(100.0))


def write_gt_pred(root: Path, scene: str, token: str, gt: np.ndarray, pred: np.ndarray, masks: bool = True) -> None:
    d = root / "gts" / scene / token
    d.mkdir(parents=True, exist_ok=True)
    zeros = np.zeros(GRID_SHAPE, np.uint8)  # empty masks: RayIoU ignores them
    np.savez_compressed(d / "labels.npz", semantics=gt, **({"mask_camera": zeros, "mask_lidar": zeros} if masks else {}))
    (root / "preds").mkdir(exist_ok=True)
    np.savez_compressed(root / "preds" / f"{token}.npz", semantics=pred)


def test_rayiou_needs_infos_or_an_explicit_ego_origin(tmp_path, capsys):
    gt = scene_volume()
    write_gt_pred(tmp_path, "scene-0", "tokA", gt, gt)
    base = ["--pred-dir", str(tmp_path / "preds"), "--gt-dir", str(tmp_path / "gts"), "--mask", "none", "--rayiou",
            "--quiet"]
    assert score.main(base) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--rayiou needs --infos" in err and "not the protocol" in err
    out = tmp_path / "r.json"
    assert score.main(base + ["--origin", "ego", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["rayiou"] == pytest.approx(100.0) and doc["rayiou@1"] == pytest.approx(100.0)
    assert doc["miou"] == pytest.approx(100.0)
    infos = tmp_path / "infos.pkl"
    with open(infos, "wb") as f:
        pickle.dump({"infos": slope_scene_infos("scene-0", 3, ["tokA"])}, f)
    for extra, message in ((["--origin", "ego", "--infos", str(infos)], "give one of them"),
                           (["--infos", str(infos), "--ray-origin", "0", "0", "2"], "--ray-origin needs --origin ego")):
        assert score.main(base + extra) == 1
        assert message in capsys.readouterr().err
    with pytest.raises(score.ScoreError, match="--rayiou needs --infos"):
        score.score_dirs(tmp_path / "preds", tmp_path / "gts", mask="none", rayiou=True)


# -- the SparseOcc test bed: slopes, turning, empty masks ------------------------------------


def road_height(s: np.ndarray) -> np.ndarray:
    """A road that runs flat for 30 m, climbs at 15 % for 45 m, then runs flat again: from the sag
    the other frames' LiDARs appear above the grid, from the crest below it."""
    return 0.15 * np.clip(np.asarray(s, np.float64) - 30.0, 0.0, 45.0)


def slope_scene_infos(scene: str, frames: int, tokens: list[str] | None = None, yaw_rate: float = 0.0,
                      step_m: float = 4.5, slope: bool = True) -> list[dict]:
    """Key-frame infos of an ego driving `step_m` per 0.5 s along the road (pitched with it) and turning
    at `yaw_rate` rad per frame; the nuScenes LiDAR mount (yawed -90 deg, slightly tilted)."""
    from scipy.spatial.transform import Rotation

    infos, x, y, yaw = [], 100.0, 200.0, 0.3
    for k in range(frames):
        s = k * step_m
        z = float(road_height(s)) if slope else 0.0
        grade = (float(road_height(s + 0.5) - road_height(s - 0.5))) if slope else 0.0
        qx, qy, qz, qw = Rotation.from_euler("ZY", [yaw, -np.arctan(grade)]).as_quat()
        infos.append({"token": tokens[k] if tokens and k < len(tokens) else f"{scene}-{k}", "scene_token": scene,
                      "scene_name": scene, "timestamp": 1_000_000 + 500_000 * k,
                      "lidar2ego_translation": [0.943713, 0.0, 1.84023],
                      "lidar2ego_rotation": [0.7077955119163518, -0.006492242056004365, 0.010646214713995808,
                                             -0.7063073142877817],
                      "ego2global_translation": [x, y, 30.0 + z], "ego2global_rotation": [qw, qx, qy, qz]})
        x, y, yaw = x + step_m * np.cos(yaw), y + step_m * np.sin(yaw), yaw + yaw_rate
    return infos


def test_rayiou_origins_equal_sparseocc_on_a_climbing_scene(tmp_path):
    """Every origin with |x|, |y| < 39 m, whatever its height (several lie above or below the grid),
    then SparseOcc's pick of 8: equal to EgoPoseDataset's, re-done with pyquaternion and loops."""
    infos = slope_scene_infos("scene-slope", 22)
    with open(tmp_path / "infos.pkl", "wb") as f:
        pickle.dump({"infos": infos, "metadata": {}}, f)
    got = score.sparseocc_ray_origins(tmp_path / "infos.pkl")
    want = sparseocc_oracle.origins(infos)
    above = below = 0
    for info, expected in zip(infos, want):
        origins = got[info["token"]]
        assert origins.shape == expected.shape and len(origins) == 8
        np.testing.assert_allclose(origins, expected, rtol=0, atol=1e-9)
        above += int(np.sum(origins[:, 2] >= 5.4))
        below += int(np.sum(origins[:, 2] <= -1.0))
    assert above >= 3 and below >= 3  # a height filter would have chosen other origins


def street_on_slope(rng: np.random.Generator, info: dict, scene_infos: list[dict], slope: bool) -> np.ndarray:
    """Occ3D-like labels in one frame's ego frame: the road (following the slope, seen from the pitched
    ego), sidewalks, walls, cars, poles and trees."""
    vol = np.full(GRID_SHAPE, FREE_LABEL, np.uint8)
    k = scene_infos.index(info)
    s0 = 4.5 * k
    x = (np.arange(200) + 0.5) * 0.4 - 40.0
    grade0 = float(road_height(s0 + 0.5) - road_height(s0 - 0.5)) if slope else 0.0
    ground = (road_height(s0 + x) - road_height(s0) - x * grade0) if slope else np.zeros(200)
    gz = np.clip(np.floor((ground + 1.0 - 0.2) / 0.4).astype(int), 0, 15)  # (200,) ground layer per x
    for i in range(200):
        vol[i, :, gz[i]] = 11
        vol[i, :40, gz[i]] = 13
        vol[i, 160:, gz[i]] = 14
        vol[i, 185:, gz[i] + 1:min(gz[i] + 12, 16)] = 15  # a wall on the left
    for _ in range(25):  # cars, trucks, pedestrians, poles, trees
        cls = rng.choice([4, 4, 4, 10, 7, 0, 16, 1])
        cx, cy = rng.integers(5, 195), rng.integers(45, 180)
        lx, ly, h = {4: (10, 5, 4), 10: (20, 7, 8), 7: (2, 2, 5), 0: (1, 1, 12), 16: (8, 8, 14), 1: (12, 1, 3)}[int(cls)]
        base = gz[cx] + 1
        vol[cx:cx + lx, cy:cy + ly, base:min(base + h, 16)] = cls
    return vol


def predicted(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A plausible prediction: objects shifted 0-3 voxels, some relabelled, a few missed, noise."""
    pred = gt.copy()
    things = np.isin(gt, (0, 1, 4, 7, 10, 16))
    pred[things] = FREE_LABEL
    shifted = np.roll(np.where(things, gt, FREE_LABEL), (int(rng.integers(-3, 4)), int(rng.integers(-2, 3))), axis=(0, 1))
    pred[shifted != FREE_LABEL] = shifted[shifted != FREE_LABEL]
    pred[(pred == 10) & (rng.random(GRID_SHAPE) < 0.5)] = 4  # trucks half called cars
    flip = rng.random(GRID_SHAPE) < 0.002
    pred[flip] = rng.integers(0, NUM_CLASSES, int(flip.sum()))
    pred[:, :60, :][gt[:, :60, :] == 13] = 12  # sidewalk called other_flat on one side
    return pred.astype(np.uint8)


@pytest.mark.slow
def test_rayiou_equals_sparseocc_ray_metrics_on_a_test_bed(tmp_path):
    """fusionocc-score --rayiou --infos equals an independent transcription of SparseOcc's
    ray_metrics.py (sparseocc_oracle) within 0.005 pp on scenes that climb a slope (origins above
    and below the grid), turn, and have empty masks and an empty ground truth."""
    rng = np.random.default_rng(12)
    slope = slope_scene_infos("scene-slope", 18)
    turn = slope_scene_infos("scene-turn", 8, yaw_rate=0.35, slope=False)
    scored = [(slope, slope[6], True), (slope, slope[17], True), (turn, turn[4], False), (turn, turn[6], False)]
    preds, gts, origin_list = [], [], []
    oracle_origins = {**dict(zip([i["token"] for i in slope], sparseocc_oracle.origins(slope))),
                      **dict(zip([i["token"] for i in turn], sparseocc_oracle.origins(turn)))}
    for n, (scene, info, is_slope) in enumerate(scored):
        gt = street_on_slope(rng, info, scene, is_slope)
        if n == 3:
            gt[:] = FREE_LABEL  # an empty ground truth: no ray counts
        pred = predicted(rng, gt) if n != 3 else predicted(rng, street_on_slope(rng, info, scene, False))
        write_gt_pred(tmp_path, info["scene_name"], info["token"], gt, pred, masks=n != 2)
        preds.append(pred)
        gts.append(gt)
        origin_list.append(oracle_origins[info["token"]])
    assert any((o[:, 2] > 5.4).any() for o in origin_list) and any((o[:, 2] < -1.0).any() for o in origin_list)
    with open(tmp_path / "infos.pkl", "wb") as f:
        pickle.dump({"infos": slope + turn}, f)
    out = tmp_path / "score.json"
    assert score.main(["--pred-dir", str(tmp_path / "preds"), "--gt-dir", str(tmp_path / "gts"), "--mask", "none",
                       "--rayiou", "--infos", str(tmp_path / "infos.pkl"), "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    want = sparseocc_oracle.rayiou(preds, gts, origin_list)
    for key in ("rayiou", "rayiou@1", "rayiou@2", "rayiou@4"):
        assert abs(doc[key] - 100.0 * want[key]) < 0.005, (key, doc[key], 100.0 * want[key])
    assert 20.0 < doc["rayiou"] < 90.0  # a real comparison, neither trivial nor empty


def test_ray_casting_equals_the_official_kernel_ray_by_ray():
    """metrics.cast_rays against a line-by-line, one-ray-at-a-time transcription of dvr.cu's
    render_forward (float32 inputs, truncation toward zero, tie-breaking, step limit): the same voxel
    and the same float32 depth for rays along the axes (where float32 rounding zeroes a direction
    component) and at random, from origins inside, above and below the grid."""
    rng = np.random.default_rng(5)
    vol = scene_volume()
    vol[rng.random(GRID_SHAPE) < 0.003] = 3
    rays = sparseocc_oracle.lidar_rays()
    np.testing.assert_array_equal(metrics.lidar_ray_directions(), rays)
    azimuth = np.arange(len(rays)) % 360
    axis_rays = np.flatnonzero(np.isin(azimuth, (0, 90, 180, 270)))
    pick = np.concatenate([axis_rays, rng.choice(len(rays), 150, replace=False)])
    origins = [metrics.NUSCENES_LIDAR_ORIGIN, (12.37, -3.91, 2.66), (-20.02, 30.4, 6.3), (30.1, 7.7, -1.25),
               (-8.8, -38.7, -1.9), (0.0, 0.0, 0.0)]
    for origin in origins:
        (labels,), (depths,) = metrics.cast_rays((vol,), origin, rays[pick])
        o32, e32 = sparseocc_oracle.render_inputs(np.asarray(origin, np.float64), rays[pick])
        for k in range(len(pick)):
            dist, xyz = sparseocc_oracle.render_ray(vol != FREE_LABEL, o32, e32[k])
            assert labels[k] == vol[xyz], (origin, pick[k])
            assert depths[k] == np.float32(dist) * np.float32(0.4), (origin, pick[k], depths[k], dist)


def test_ray_traversal_matches_brute_force_marching():
    """First-hit label and exit depth agree with dense sampling along the ray (independent method)."""
    vol = scene_volume()
    rng = np.random.default_rng(3)
    dirs = metrics.lidar_ray_directions()
    dirs = dirs[rng.choice(len(dirs), 60, replace=False)]
    origin = np.array(metrics.NUSCENES_LIDAR_ORIGIN)
    (labels,), (depth,) = metrics.cast_rays((vol,), origin, dirs)
    lower = np.array([-40.0, -40.0, -1.0])
    t = np.arange(0.0, 130.0, 0.002)  # metres, sampling step 2 mm
    for k, d in enumerate(dirs.astype(np.float64)):
        pts = origin + t[:, None] * d / np.linalg.norm(d)  # (S, 3)
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

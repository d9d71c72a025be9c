"""Predictor: FrameSet -> uint8 labels/confidence, feature cache per stamp, checkpoints, bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusionocc_core.checkpoint import CheckpointMismatchError, save_checkpoint
from fusionocc_core.config import load_config
from fusionocc_core.frame import CameraFrame, FrameSet
from fusionocc_core.model import build_model
from fusionocc_core.model.example_inputs import rig_extrinsics, rig_intrinsics, scene_points
from fusionocc_core.ops.sparse_conv import sparse_conv_algorithm
from fusionocc_core.predictor import Predictor, resolve_device

SRC_HW = (225, 400)  # small source images (the test transform resizes them to 128x352)


def camera_frame(seed: int, stamp_ns: int, x_offset: float = 0.0) -> CameraFrame:
    rng = np.random.default_rng(seed)
    K = rig_intrinsics() * np.array([0.25, 0.25, 1.0], np.float32)[:, None]  # 1600x900 pinhole scaled to 400x225
    s2e = rig_extrinsics()
    s2e[:, 0, 3] += x_offset
    images = [rng.integers(0, 256, (*SRC_HW, 3), dtype=np.uint8) for _ in range(6)]
    return CameraFrame(images, K, s2e, stamp_ns)


def frame_set(seed: int, stamp_ns: int, previous: list[CameraFrame]) -> FrameSet:
    pts, _ = scene_points(np.random.default_rng(seed), 3000)
    return FrameSet(stamp_ns, camera_frame(seed, stamp_ns), previous, pts, pts[:2000])


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor("tiny")


def test_prediction_types_shapes_and_timings(predictor):
    fs = frame_set(0, 1_000, [])
    pred = predictor.predict(fs)
    assert pred.labels.shape == (200, 200, 16) and pred.labels.dtype == np.uint8
    assert pred.confidence.shape == (200, 200, 16) and pred.confidence.dtype == np.uint8
    assert pred.labels.max() <= 17
    # the max softmax probability is at least 1/18 and at most 1
    assert pred.confidence.min() >= int(255 / 18) - 1
    assert pred.stamp_ns == 1_000
    stages = {"preprocess", "backbone", "fusion", "lift", "lidar_encoder", "encoder_3d", "head", "postprocess", "total"}
    assert stages <= set(pred.timings)
    assert all(v >= 0 for v in pred.timings.values())
    assert pred.timings["total"] >= pred.timings["encoder_3d"] > 0


def test_stage_timings_off_gives_the_same_prediction_and_only_the_totals() -> None:
    # the node's CUDA setting: no synchronising stage timers; the answer must not depend on it
    torch.manual_seed(0)
    timed, untimed = Predictor("tiny", seed=3), Predictor("tiny", seed=3, stage_timings=False)
    untimed.model.load_state_dict(timed.model.state_dict())
    assert timed.stage_timings and not untimed.stage_timings  # CPU default: on
    previous = camera_frame(21, 500, x_offset=-1.0)
    for fs in (frame_set(2, 1_000, [previous]), frame_set(3, 1_500, [camera_frame(2, 1_000)])):
        a, b = timed.predict(fs), untimed.predict(fs)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.confidence, b.confidence)
        assert set(b.timings) == {"preprocess", "postprocess", "total"} and "lidar_encoder" in a.timings


def test_predict_equals_the_model_forward_with_argmax_and_softmax(predictor):
    fs = frame_set(1, 2_000, [camera_frame(11, 1_500, x_offset=-2.5)])
    pred = predictor.predict(fs)
    batch, _ = predictor.make_batch(fs)
    with torch.inference_mode():
        probs = predictor.model(batch)["occ_logits"][0].softmax(-1)
    assert np.array_equal(pred.labels, probs.argmax(-1).numpy().astype(np.uint8))
    assert np.abs(pred.confidence.astype(int) - np.round(probs.amax(-1).numpy() * 255)).max() <= 1


def test_lift_plans_are_keyed_from_the_host_matrices_and_follow_the_calibration():
    # predict() keys the lift's plans on the host copies (no device sync on CUDA); the keys must be the
    # ones the lift makes itself from the same matrices, and a moved camera must get a new plan
    torch.manual_seed(0)
    p = Predictor("tiny")
    cache = p.model.img_view_transformer.plan_cache
    previous = camera_frame(11, 1_500, x_offset=-2.5)
    fs = frame_set(1, 2_000, [previous])
    p.predict(fs)
    assert (cache.misses, cache.hits) == (2, 0)  # the two time steps have different geometry
    batch, _ = p.make_batch(fs)
    assert set(p.model.lift_keys(batch)) == set(cache._plans)
    with torch.inference_mode():
        p.model(batch)  # keys made inside the lift: the same plans
    assert (cache.misses, cache.hits) == (2, 2)
    pts, _ = scene_points(np.random.default_rng(3), 3000)
    moved = FrameSet(3_000, camera_frame(3, 3_000, x_offset=1.0), [previous], pts, pts[:2000])
    got = p.predict(moved)
    assert (cache.misses, cache.hits) == (3, 3)  # the moved key frame is new, its previous frame is not
    torch.manual_seed(0)
    want = Predictor("tiny").predict(moved)
    assert np.array_equal(got.labels, want.labels) and np.array_equal(got.confidence, want.confidence)


def test_the_sparse_conv_form_is_the_predictors_own_and_gives_the_same_answer():
    # the node's model.sparse_conv: chosen per Predictor, applied inside predict() (the node's worker
    # thread), whatever form the calling thread has chosen
    fs = frame_set(4, 4_000, [])
    torch.manual_seed(0)
    pairs = Predictor("tiny", sparse_conv="pairs")
    torch.manual_seed(0)
    table = Predictor("tiny", sparse_conv="table")
    with sparse_conv_algorithm("pairs"):
        a = pairs.predict(fs)
        b = table.predict(fs)
    assert (a.labels == b.labels).mean() > 0.999  # two float summation orders
    assert np.abs(a.confidence.astype(int) - b.confidence).max() <= 1
    with pytest.raises(ValueError, match="sparse_conv must be one of auto, pairs, table, triton, got 'spconv'"):
        Predictor("tiny", sparse_conv="spconv")
    with pytest.raises(ValueError, match="'triton' runs on CUDA devices only"):
        Predictor("tiny", sparse_conv="triton")


def test_each_image_goes_through_the_backbone_once():
    torch.manual_seed(0)
    p = Predictor("tiny")
    frames = [camera_frame(20 + i, 10_000 + i) for i in range(3)]
    results = []
    for i, cams in enumerate(frames):
        prev = [frames[i - 1]] if i else []
        pts, _ = scene_points(np.random.default_rng(i), 2000)
        results.append(p.predict(FrameSet(cams.stamp_ns, cams, prev, pts, pts)))
    assert (p.backbone_runs, p.cache_hits) == (3, 2)  # frame i-1 is reused as the previous frame of i
    assert results[2].timings["backbone"] > 0
    # a fresh predictor without the cache computes both frames and gets the identical answer
    torch.manual_seed(0)
    fresh = Predictor("tiny")
    pts, _ = scene_points(np.random.default_rng(2), 2000)
    again = fresh.predict(FrameSet(frames[2].stamp_ns, frames[2], [frames[1]], pts, pts))
    assert fresh.backbone_runs == 2
    assert np.array_equal(again.labels, results[2].labels)
    assert np.array_equal(again.confidence, results[2].confidence)


def test_stale_history_evicted_by_the_new_frame_still_uses_its_cached_features():
    # the cache holds stamps 5 and 7; frame 9 names 5 as its previous frame: 5's features are taken
    # before encoding 9 evicts the oldest stamp, so the answer equals a predictor without a cache
    torch.manual_seed(0)
    p = Predictor("tiny")
    f5, f7, f9 = (camera_frame(30 + s, s) for s in (5, 7, 9))
    pts, _ = scene_points(np.random.default_rng(9), 2000)
    p.predict(FrameSet(5, f5, [], pts, pts))
    p.predict(FrameSet(7, f7, [f5], pts, pts))
    got = p.predict(FrameSet(9, f9, [f5], pts, pts))
    assert (p.backbone_runs, p.cache_hits) == (3, 2)
    torch.manual_seed(0)
    fresh = Predictor("tiny")
    want = fresh.predict(FrameSet(9, f9, [f5], pts, pts))
    assert np.array_equal(got.labels, want.labels) and np.array_equal(got.confidence, want.confidence)


def test_start_up_repeats_the_current_frame_and_unstamped_frames_are_not_cached():
    torch.manual_seed(0)
    p = Predictor("tiny")
    cams = camera_frame(5, 0)  # stamp 0 = unknown: never cached
    pts, _ = scene_points(np.random.default_rng(5), 2000)
    alone = p.predict(FrameSet(1, cams, [], pts, pts))
    assert p.backbone_runs == 1  # the repeated current frame is encoded once
    explicit = p.predict(FrameSet(1, cams, [copy.copy(cams)], pts, pts))
    assert p.backbone_runs == 3 and p.cache_hits == 0
    assert np.array_equal(alone.labels, explicit.labels)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    cfg = load_config("tiny")
    torch.manual_seed(1)
    model = build_model(cfg)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, cfg)
    p = Predictor(cfg, checkpoint=path)
    for k, v in model.state_dict().items():
        assert torch.equal(p.model.state_dict()[k], v), k
    other = copy.deepcopy(cfg)
    other.model.feature_channels = 16
    bad = tmp_path / "wider.pt"
    save_checkpoint(bad, build_model(other), other)
    with pytest.raises(CheckpointMismatchError, match=r"does not fit the model \(32 mis-shaped: img_view_transformer"):
        Predictor(cfg, checkpoint=bad)
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pt"):
        Predictor(cfg, checkpoint=tmp_path / "missing.pt")


def test_device_and_precision_errors():
    missing = f"cuda:{torch.cuda.device_count() + 3}"
    with pytest.raises(ValueError, match="CUDA is not available|does not exist"):
        resolve_device(missing)
    with pytest.raises(ValueError, match="not a valid torch device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        Predictor("tiny", precision="int8")
    with pytest.raises(ValueError, match="use 'fp32'"):
        Predictor("tiny", device="cpu", precision="bf16")


def test_bad_frame_sets_give_clear_errors(predictor):
    fs = frame_set(2, 3_000, [])
    broken = copy.deepcopy(fs)
    broken.cameras.images = broken.cameras.images[:5]
    with pytest.raises(ValueError, match=r"frame_set.cameras.images: expected 6 camera images, got 5"):
        predictor.predict(broken)
    broken = copy.deepcopy(fs)
    broken.cameras.images[3] = broken.cameras.images[3][..., :1]
    with pytest.raises(ValueError, match=r"frame_set.cameras.images: camera image must be \(H, W, 3\) uint8"):
        predictor.predict(broken)
    broken = copy.deepcopy(fs)
    broken.previous = [copy.deepcopy(fs.cameras)]
    broken.previous[0].sensor2ego[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"frame_set.previous\[0\].sensor2ego: expected finite"):
        predictor.predict(broken)
    broken = copy.deepcopy(fs)
    broken.points = broken.points[:, :4]
    with pytest.raises(ValueError, match=r"frame_set.points: expected \(P, 5\)"):
        predictor.predict(broken)


finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.floats(-60, 60, width=32))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=hnp.arrays(np.float32, st.tuples(st.integers(0, 40), st.just(5)), elements=finite_or_not))
def test_untrusted_points_never_break_batch_building(predictor, points):
    """Whatever a PointCloud2 decodes to (NaN, Inf, huge, empty), batch building gives the model what its
    input contract says (finite rows inside the grid box): the input path is the one filter."""
    fs = frame_set(3, 4_000, [])
    fs.points, fs.key_points = points, points
    batch, _ = predictor.make_batch(fs)
    sd = batch["sparse_depth"]
    assert torch.isfinite(sd).all() and ((sd == 0) | ((sd >= 1.0) & (sd < 45.0))).all()
    (clean,) = batch["points"]
    assert clean.dtype == torch.float32 and torch.isfinite(clean).all()
    assert ((clean[:, :3] >= torch.tensor([-40.0, -40.0, -1.0])) & (clean[:, :3] < torch.tensor([40.0, 40.0, 5.4]))).all()
    # the test-time range box of the dataset (the grid shrunk by 1 mm) decides, on every finite point
    finite = np.isfinite(points).all(1)
    lo, hi = np.array([-40.0, -40.0, -1.0]) + 1e-3, np.array([40.0, 40.0, 5.4]) - 1e-3
    inside = finite & (points[:, :3] >= lo).all(1) & (points[:, :3] <= hi).all(1)
    assert clean.shape[0] == int(inside.sum())


def test_warmup_runs_real_shapes_and_leaves_no_state(predictor):
    predictor.predict(frame_set(5, 9_000, []))
    seconds = predictor.warmup(iterations=2, image_hw=SRC_HW, num_points=2000)
    assert seconds > 0
    assert not predictor._features and len(predictor.model.img_view_transformer.plan_cache._plans) == 0
    # the next real frame is encoded (nothing stale from the warm-up is taken from the cache)
    runs = predictor.backbone_runs
    predictor.predict(frame_set(6, 9_500, []))
    assert predictor.backbone_runs == runs + 1


def test_gemm_weights_stored_in_the_autocast_dtype_give_the_same_output():
    # what the Predictor does on CUDA for bf16/fp16, checked under CPU autocast: identical logits
    from fusionocc_core.predictor import _store_gemm_weights_in

    torch.manual_seed(0)
    model = build_model(load_config("tiny")).eval()
    batch = Predictor("tiny", seed=0).make_batch(frame_set(3, 4_000, []))[0]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(batch)["occ_logits"].float()
        _store_gemm_weights_in(model, torch.bfloat16)
        got = model(batch)["occ_logits"].float()
    assert any(p.dtype == torch.bfloat16 for p in model.parameters())
    assert any(p.dtype == torch.float32 for p in model.parameters())  # norms stay fp32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_folded_batchnorm_gives_the_unfolded_logits_and_keeps_the_state_dict() -> None:
    # the Predictor folds every 3D conv's BN (inference); the network must not notice
    from fusionocc_core.model import build_model
    from fusionocc_core.model.bev_encoder import ConvModule3d

    torch.manual_seed(0)
    pred = Predictor("tiny", seed=1)
    plain = build_model(pred.cfg).eval()
    for m in plain.modules():  # non-trivial running statistics, the same in both
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    pred.model.load_state_dict(plain.state_dict())
    assert pred.model.fold_batchnorm() > 0 and all(
        m.folded_weight is not None for m in pred.model.modules() if isinstance(m, ConvModule3d))
    assert set(pred.model.state_dict()) == set(plain.state_dict())  # nothing folded is saved
    batch, _ = pred.make_batch(frame_set(5, 1_000, [camera_frame(6, 500)]))
    with torch.no_grad():  # (not inference_mode: the training step below reuses the cached lift plan)
        folded, unfolded = pred.model(batch)["occ_logits"], plain(batch)["occ_logits"]
    torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-4)
    pred.model.train()  # training ignores the fold: BN statistics move again
    before = pred.model.pre_process_net.layers[0][0].conv1.bn.running_mean.clone()
    pred.model(batch)
    assert not torch.equal(before, pred.model.pre_process_net.layers[0][0].conv1.bn.running_mean)


def test_a_time_jump_back_forgets_the_cached_features_so_the_new_timeline_hits_the_cache():
    """A looping bag or a restarted sim clock: the cache keeps the newest stamps, so without the
    pipeline's reset the new (older) stamps were evicted at once and every frame ran the backbone
    twice; after time_jumped the new timeline's previous frame comes from the cache again."""
    from pathlib import Path

    from fusionocc_ros.params import load_params_file, pipeline_settings
    from fusionocc_ros.pipeline import OccupancyPipeline

    torch.manual_seed(0)
    p = Predictor("tiny")
    params = load_params_file(Path(__file__).resolve().parents[2] / "config" / "occ_node.yaml")
    pipe = OccupancyPipeline(p.cfg, p, pipeline_settings(params), on_problem=lambda reason, detail: None)
    pts, _ = scene_points(np.random.default_rng(3), 2000)
    old_a, old_b = camera_frame(40, 10_000), camera_frame(41, 10_500)
    p.predict(FrameSet(10_000, old_a, [], pts, pts))
    p.predict(FrameSet(10_500, old_b, [old_a], pts, pts))
    pipe.time_jumped("the clock jumped back")
    new_a, new_b = camera_frame(42, 1_000), camera_frame(43, 1_500)
    p.predict(FrameSet(1_000, new_a, [], pts, pts))
    hits, runs = p.cache_hits, p.backbone_runs
    p.predict(FrameSet(1_500, new_b, [new_a], pts, pts))
    assert (p.cache_hits - hits, p.backbone_runs - runs) == (1, 1)

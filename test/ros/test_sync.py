"""LidarAnchoredSync: nearest-in-window choice, bounded waiting, drop reasons, determinism."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionocc_core.classes import CAMERA_NAMES
from fusionocc_ros.sync import LidarAnchoredSync, SyncedSet

MS = 1_000_000
REPO = Path(__file__).resolve().parents[2]
# nuScenes key-frame camera offsets from the (end-of-sweep) LiDAR stamp, CAMERA_NAMES order
# (FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_LEFT, BACK, BACK_RIGHT): the cameras come first
OFFSETS_MS = (-43, -35, -28, -0.5, -10, -20)
# nuScenes-mini scene-0061's first sample, in µs
SCENE_0061_LIDAR_US = 1532402927647951
SCENE_0061_CAMERAS_US = {
    "CAM_FRONT_LEFT": 1532402927604844, "CAM_FRONT": 1532402927612460, "CAM_FRONT_RIGHT": 1532402927620339,
    "CAM_BACK_RIGHT": 1532402927627893, "CAM_BACK": 1532402927637525, "CAM_BACK_LEFT": 1532402927647423,
}
CAMERA_PERIOD_US = 83_333  # 12 Hz


def rig_stream(n_sweeps: int, t0: int = 1_000 * MS, period_ms: int = 500, jitter_ms: float = 2.0, seed: int = 0):
    """(topic, stamp) events of key-frame sweeps with their six camera frames, in stamp order
    (the cameras of a sweep before its LiDAR)."""
    rng = random.Random(seed)
    events = []
    for k in range(n_sweeps):
        t = t0 + k * period_ms * MS
        events.append(("lidar", t))
        for cam, off in zip(CAMERA_NAMES, OFFSETS_MS):
            events.append((cam, t + int((off + rng.uniform(-jitter_ms, jitter_ms)) * MS)))
    events.sort(key=lambda e: e[1])
    return events


def feed(sync: LidarAnchoredSync, events, flush: bool = True) -> list[SyncedSet]:
    out = []
    for topic, stamp in events:
        payload = (topic, stamp)
        if topic == "lidar":
            out += sync.add_lidar(stamp, payload)
        else:
            out += sync.add_camera(topic, stamp, payload)
    if flush:
        out += sync.flush()
    return out


def test_rig_stream_pairs_every_sweep_with_its_own_camera_frames():
    events = rig_stream(20)
    sync = LidarAnchoredSync(CAMERA_NAMES, window_before_s=0.06, window_after_s=0.01)
    sets = feed(sync, events, flush=False)
    # every sweep is decided without flushing: the first three by the next sweep's camera frames
    # (stamped after them), the others as soon as their LiDAR arrives (each camera's frame
    # interval is known by then, so no later frame can fall in their window)
    assert len(sets) == 20
    for s in sets:
        assert s.lidar == ("lidar", s.lidar_stamp_ns)
        for cam, stamp, payload, off in zip(CAMERA_NAMES, s.camera_stamps_ns, s.cameras, OFFSETS_MS):
            assert payload == (cam, stamp)
            assert abs(stamp - s.lidar_stamp_ns - off * MS) <= 2 * MS
        assert s.max_offset_ns <= 45 * MS
    assert sync.stats()["drops"] == dict.fromkeys(sync.drops, 0)
    assert sync.emitted == 20


def test_nearest_frame_wins_and_ties_go_to_the_later_frame():
    sync = LidarAnchoredSync(["a"], window_before_s=0.05, window_after_s=0.05)
    sync.add_camera("a", 90 * MS, "early")
    sync.add_camera("a", 97 * MS, "near-before")
    assert sync.add_lidar(100 * MS, "L") == []  # a later frame could still be nearer
    (s,) = sync.add_camera("a", 102 * MS, "near-after")
    assert s.cameras == ("near-after",)
    sync.add_camera("a", 195 * MS, "tie-before")
    sync.add_lidar(200 * MS, "L2")
    (s,) = sync.add_camera("a", 205 * MS, "tie-after")
    assert s.cameras == ("tie-after",) and s.lidar == "L2"


def test_window_bounds_are_inclusive_and_frames_outside_are_missing():
    sync = LidarAnchoredSync(["a"], window_before_s=0.01, window_after_s=0.03)
    sync.add_lidar(1000 * MS, "L")
    (s,) = sync.add_camera("a", 1030 * MS, "edge")
    assert s.cameras == ("edge",)
    sync.add_lidar(2000 * MS, "L2")
    assert sync.add_camera("a", 2031 * MS, "outside") == []  # decided: no frame in the window
    assert sync.drops["missing_camera"] == 1 and sync.missing_by_camera["a"] == 1


def test_a_camera_that_stops_is_waited_for_a_bounded_time_then_counted():
    drops = []
    sync = LidarAnchoredSync(CAMERA_NAMES, max_wait_s=0.1, on_drop=lambda *e: drops.append(e))
    events = [e for e in rig_stream(10) if not (e[0] == "CAM_BACK" and e[1] > 2_900 * MS)]
    sets = feed(sync, events, flush=False)
    # sweeps at 1.0 .. 2.5 s complete; 3.0 .. 5.0 s lack CAM_BACK and are decided by the next
    # sweep's stamp (the stream clock), not held forever; the one at 5.5 s is still waiting
    assert [s.lidar_stamp_ns // MS for s in sets] == [1000, 1500, 2000, 2500]
    assert sync.drops["missing_camera"] == 5 and sync.pending == 1
    assert sync.missing_by_camera["CAM_BACK"] == 5 and sync.missing_by_camera["CAM_FRONT"] == 0
    assert all(reason == "missing_camera" and "CAM_BACK" in detail for reason, _, detail in drops)
    # the camera comes back: sets flow again
    more = feed(sync, [(t, s + 5_000 * MS) for t, s in rig_stream(2, t0=1_000 * MS)], flush=False)
    assert [s.lidar_stamp_ns // MS for s in more] == [6000, 6500]
    assert sync.drops["missing_camera"] == 6  # + the sweep at 5.5 s, decided by the 6.0 s sweep's cameras


def test_a_later_sweep_decides_a_waiting_one_and_flush_decides_everything():
    sync = LidarAnchoredSync(["a", "b"], window_after_s=0.06, max_wait_s=0.1)
    sync.add_lidar(1000 * MS, "L")
    sync.add_camera("a", 1010 * MS, "a1")
    assert sync.add_lidar(1160 * MS, "L1") == []  # the LiDAR is the clock: 1.16 s deadline not passed
    assert sync.pending == 2 and sync.drops["missing_camera"] == 0
    assert sync.add_lidar(1161 * MS, "L1b") == [] and sync.drops["missing_camera"] == 1  # passed: b never came
    sync.add_lidar(2000 * MS, "L2")
    sync.add_camera("a", 2010 * MS, "a2")
    sync.add_camera("b", 1990 * MS, "b2")
    (s,) = sync.flush()  # (the 2.0 s sweep decided those of 1.160 and 1.161 s: no frame in their windows)
    assert s.cameras == ("a2", "b2") and sync.pending == 0 and sync.drops["missing_camera"] == 3


def test_lidar_stamps_going_backwards_are_dropped_and_a_big_jump_resets():
    sync = LidarAnchoredSync(CAMERA_NAMES)
    first = feed(sync, rig_stream(4), flush=False)
    assert len(first) == 4
    assert sync.add_lidar(3_000 * MS, "waiting") == []
    assert sync.add_lidar(2_500 * MS, "old") == []  # 0.5 s back: out of order
    assert sync.add_lidar(3_000 * MS, "dup") == []  # same stamp as the newest sweep
    assert sync.drops["lidar_out_of_order"] == 2 and sync.pending == 1
    # the bag loops: everything starts again at 1.0 s; the sweep waiting at 3.0 s is given up
    again = feed(sync, rig_stream(4), flush=False)
    assert again == first
    assert sync.drops["time_jump"] == 1


def test_cameras_that_jump_back_before_the_lidar_restart_cleanly():
    sync = LidarAnchoredSync(CAMERA_NAMES)
    first = feed(sync, rig_stream(4), flush=False)
    loop = rig_stream(4)
    first_lidar = next(e for e in loop if e[0] == "lidar")
    # the first sweep's six cameras (and any jitter put after it) come before its LiDAR
    cams_first = [e for e in loop[:7] if e[0] != "lidar"] + [first_lidar] + loop[7:]
    assert cams_first[6] == first_lidar and len(cams_first) == len(loop)
    again = feed(sync, cams_first, flush=False)
    assert again == first
    assert sync.discarded["camera_time_jump"] == len(CAMERA_NAMES)


def test_camera_stamps_going_backwards_are_discarded_not_fatal():
    sync = LidarAnchoredSync(["a"])
    sync.add_camera("a", 1000 * MS, "x")
    assert sync.add_camera("a", 990 * MS, "back") == []
    assert sync.add_camera("a", 1000 * MS, "same") == []
    assert sync.discarded["camera_out_of_order"] == 2
    sync.add_lidar(1004 * MS, "L")
    (s,) = sync.add_camera("a", 1005 * MS, "y")
    assert s.cameras == ("y",)


def test_pending_sweeps_are_bounded():
    sync = LidarAnchoredSync(["a"], max_pending=2, max_wait_s=100.0)
    for k in range(5):
        sync.add_lidar((1000 + 50 * k) * MS, k)
    assert sync.pending == 2 and sync.drops["buffer_overflow"] == 3
    sync.add_camera("a", 1205 * MS, "a")  # serves the sweep at 1.2 s only
    assert sync.pending == 0 and sync.drops["missing_camera"] == 1 and sync.emitted == 1


def test_camera_buffers_are_bounded():
    sync = LidarAnchoredSync(["a", "b"], camera_buffer_size=3)
    for k in range(10):  # camera a runs ahead of a LiDAR that has not started
        sync.add_camera("a", (1000 + 10 * k) * MS, k)
    assert sync.discarded["camera_buffer_overflow"] == 7


def test_frames_for_already_decided_sweeps_are_counted_late():
    sync = LidarAnchoredSync(["a"], window_before_s=0.02)
    sync.add_lidar(1000 * MS, "L")
    sync.add_lidar(1500 * MS, "L2")  # decides the first sweep: missing
    assert sync.add_camera("a", 950 * MS, "late") == []
    assert sync.discarded["camera_late"] == 1


def test_unknown_camera_and_bad_parameters_are_rejected():
    sync = LidarAnchoredSync(["a"])
    with pytest.raises(KeyError, match="unknown camera 'z'"):
        sync.add_camera("z", 1, None)
    with pytest.raises(ValueError, match="window_before_s"):
        LidarAnchoredSync(["a"], window_before_s=-0.1)
    with pytest.raises(ValueError, match="unique"):
        LidarAnchoredSync(["a", "a"])
    with pytest.raises(ValueError, match="max_pending"):
        LidarAnchoredSync(["a"], max_pending=0)


def test_same_input_gives_the_same_sets():
    events = rig_stream(12, jitter_ms=20.0, seed=3)  # big jitter: some cameras fall outside
    runs = []
    for _ in range(2):
        sync = LidarAnchoredSync(CAMERA_NAMES, window_before_s=0.05, window_after_s=0.01)
        runs.append((feed(sync, events), sync.stats()))
    assert runs[0] == runs[1]
    assert runs[0][1]["drops"]["missing_camera"] > 0 and runs[0][1]["emitted"] > 0


def brute_force(lidar, cams, before, after):
    """Reference: per sweep, per camera, the frame nearest the sweep within the window."""
    out = []
    for t in lidar:
        picks = []
        for stamps in cams.values():
            cands = [s for s in stamps if t - before <= s <= t + after]
            if not cands:
                picks = None
                break
            picks.append(min(cands, key=lambda s: (abs(s - t), -s)))
        if picks is not None:
            out.append((t, tuple(picks)))
    return out


stamp_lists = st.lists(st.integers(0, 2_000), unique=True, max_size=25).map(sorted)
# a camera: a fixed frame interval (ms), a first stamp and a frame count (its frames are never
# closer than its recent intervals: what the synchronizer may assume to decide early)
periodic_streams = st.builds(lambda period, start, n: [start + k * period for k in range(n)],
                             st.integers(20, 300), st.integers(0, 300), st.integers(0, 25))


@settings(max_examples=150, deadline=None)
@given(lidar=stamp_lists, a=periodic_streams, b=periodic_streams, order_seed=st.integers(0, 2**32 - 1))
def test_any_arrival_interleaving_matches_the_brute_force_choice(lidar, a, b, order_seed):
    """Per-topic order is all that matters when waiting is unbounded: arrival interleaving
    between topics (e.g. LiDAR delayed behind the cameras, or ahead of them) never changes the
    result, deciding early included."""
    to_ns = lambda ms: ms * MS  # noqa: E731
    queues = {"lidar": [to_ns(t) for t in lidar], "a": [to_ns(t) for t in a], "b": [to_ns(t) for t in b]}
    rng = random.Random(order_seed)
    events = []
    while any(queues.values()):
        topic = rng.choice([k for k, v in queues.items() if v])
        events.append((topic, queues[topic].pop(0)))
    sync = LidarAnchoredSync(["a", "b"], window_before_s=0.03, window_after_s=0.07, max_wait_s=1e6,
                             camera_buffer_size=100, max_pending=100)
    got = [(s.lidar_stamp_ns, s.camera_stamps_ns) for s in feed(sync, events)]
    want = brute_force([to_ns(t) for t in lidar], {"a": [to_ns(t) for t in a], "b": [to_ns(t) for t in b]}, 30 * MS, 70 * MS)
    assert got == want
    assert sync.emitted + sync.drops["missing_camera"] == len(lidar)


events_strategy = st.lists(
    st.tuples(st.sampled_from(["lidar", "a", "b"]), st.integers(-5_000, 5_000)), max_size=80
)


@settings(max_examples=150, deadline=None)
@given(events=events_strategy, max_pending=st.integers(1, 4), buffer=st.integers(1, 5))
def test_hostile_stamp_sequences_never_crash_and_every_sweep_is_accounted_for(events, max_pending, buffer):
    """Arbitrary stamps (backwards, duplicates, jumps): each sweep ends up emitted, dropped
    with a reason, or still pending -- never lost, never an exception."""
    sync = LidarAnchoredSync(["a", "b"], max_pending=max_pending, camera_buffer_size=buffer,
                             reset_jump_s=1.0)
    seen = []
    for topic, ms in events:
        t = ms * MS
        if topic == "lidar":
            seen += sync.add_lidar(t, ms)
        else:
            seen += sync.add_camera(topic, t, ms)
    assert sync.emitted == len(seen)
    n_lidar = sum(1 for topic, _ in events if topic == "lidar")
    assert sync.emitted + sum(sync.drops.values()) + sync.pending == n_lidar
    seen += sync.flush()
    assert sync.pending == 0 and sync.emitted + sum(sync.drops.values()) == n_lidar
    for s in seen:  # every emitted camera frame lies in the default window [-60, +10] ms
        assert all(-60 * MS <= c - s.lidar_stamp_ns <= 10 * MS for c in s.camera_stamps_ns)


def default_sync_settings() -> dict:
    """The sync window and waiting users get: config/occ_node.yaml's values."""
    params = yaml.safe_load((REPO / "config" / "occ_node.yaml").read_text())["/**"]["ros__parameters"]["sync"]
    return {"window_before_s": params["window_before_s"], "window_after_s": params["window_after_s"],
            "max_wait_s": params["max_wait_s"], "camera_buffer_size": params["camera_buffer_size"]}


def scene_0061_stream(jitter_us: int = 1_500, seed: int = 0) -> list[tuple[str, int]]:
    """scene-0061's first key frame exactly, three camera cycles before it and two after it
    (12 Hz, jittered) and the 20 Hz LiDAR around it; (topic, stamp ns) in stamp order."""
    rng = random.Random(seed)
    events = [("lidar", (SCENE_0061_LIDAR_US + k * 50_000) * 1_000) for k in range(-4, 5)]
    for cam, key_us in SCENE_0061_CAMERAS_US.items():
        for cycle in range(-3, 3):
            jitter = 0 if cycle == 0 else rng.randint(-jitter_us, jitter_us)
            events.append((cam, (key_us + cycle * CAMERA_PERIOD_US + jitter) * 1_000))
    return sorted(events, key=lambda e: e[1])


@pytest.mark.parametrize("seed", range(5))
def test_default_window_pairs_nuscenes_key_frame_images_never_the_next_cycle(seed):
    """nuScenes stamps the LiDAR at the end of its sweep: the key-frame images lie 0.5-43 ms
    before it and the next cycle 40-83 ms after it. With the shipped defaults every camera
    pairs with its key-frame image, and the set is decided by the LiDAR's own arrival."""
    events = scene_0061_stream(seed=seed)
    key_ns = SCENE_0061_LIDAR_US * 1_000
    sync = LidarAnchoredSync(CAMERA_NAMES, **default_sync_settings())
    decided_by = {}
    for topic, stamp in events:
        got = sync.add_lidar(stamp, topic) if topic == "lidar" else sync.add_camera(topic, stamp, topic)
        for s in got:
            decided_by[s.lidar_stamp_ns] = (topic, stamp, s)
    topic, stamp, key_set = decided_by[key_ns]
    assert (topic, stamp) == ("lidar", key_ns)  # every camera was buffered: no waiting for the next cycle
    want = tuple(SCENE_0061_CAMERAS_US[cam] * 1_000 for cam in CAMERA_NAMES)
    assert key_set.camera_stamps_ns == want
    assert all(c <= key_ns for c in key_set.camera_stamps_ns)
    # control: the old window [-20, +100] ms takes the next cycle for the four earliest cameras
    old = LidarAnchoredSync(CAMERA_NAMES, window_before_s=0.02, window_after_s=0.1)
    (old_key,) = [s for s in feed(old, events) if s.lidar_stamp_ns == key_ns]
    next_cycle = [cam for cam, got, key in zip(CAMERA_NAMES, old_key.camera_stamps_ns, want) if got > key + 30 * MS]
    assert sorted(next_cycle) == ["CAM_BACK_RIGHT", "CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"]


def test_default_window_pairs_nuscenes_key_frames_whatever_the_arrival_order():
    """Live, the LiDAR may arrive before its (earlier-stamped) images: same pairs, later decision."""
    events = scene_0061_stream(seed=7)
    key_ns = SCENE_0061_LIDAR_US * 1_000
    lidar_first = sorted(events, key=lambda e: (e[1] - (70 * MS if e[0] == "lidar" else 0)))
    sets = {}
    for order in (events, lidar_first):
        sync = LidarAnchoredSync(CAMERA_NAMES, **default_sync_settings())
        sets[len(sets)] = {s.lidar_stamp_ns: s.camera_stamps_ns for s in feed(sync, order)}
    assert sets[0] == sets[1]
    assert sets[0][key_ns] == tuple(SCENE_0061_CAMERAS_US[cam] * 1_000 for cam in CAMERA_NAMES)


def test_a_camera_with_unknown_frame_interval_is_waited_for_until_a_later_frame():
    """Before a camera's interval is known, a frame before the LiDAR does not decide the sweep:
    a nearer frame may still follow; the next frame (stamped after the sweep) decides it."""
    sync = LidarAnchoredSync(["a"])
    sync.add_camera("a", 922 * MS, "a0")  # before the window [940, 1010] ms
    assert sync.add_lidar(1000 * MS, "L") == [] and sync.pending == 1
    (s,) = sync.add_camera("a", 1005 * MS, "a1")  # nearer, in the window: taken
    assert s.cameras == ("a1",)
    for k in range(2, 5):  # a 12 Hz camera: its interval becomes known
        sync.add_camera("a", (1005 + 83 * (k - 1)) * MS, f"a{k}")
    (s,) = sync.add_lidar(1260 * MS, "L2")  # decided on arrival: the next frame is due at 1.254 s + 83 ms
    assert s.cameras == ("a4",)


def test_a_frame_up_to_an_eighth_of_an_interval_early_is_still_waited_for():
    """Trigger jitter: a 10 Hz camera's next frame may come a little early and be the nearest."""
    sync = LidarAnchoredSync(["a"], window_before_s=0.06, window_after_s=0.05)
    for k, stamp in enumerate((5, 105, 205, 305)):
        sync.add_camera("a", stamp * MS, f"a{k}")
    assert sync.add_lidar(350 * MS, "L") == []  # 305 is 45 ms away; a frame at 393..395 ms would be nearer
    (s,) = sync.add_camera("a", 394 * MS, "early")  # 89 ms after the last one
    assert s.cameras == ("early",)

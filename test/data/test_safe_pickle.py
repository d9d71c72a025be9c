"""The allow-list info unpickler: it loads every structure fusionocc-prepare writes and the official
mmdet3d/BEVDet layout (protocols 0-5, numpy arrays of every dtype the infos use), and refuses any
pickle that names another global, without running it."""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusionocc_core.data import safe_pickle
from fusionocc_core.data.io import DataError, read_infos
from fusionocc_core.data.prepare import create_infos, write_infos

# ------------------------------------------------------------------------------------- helpers


def same(a, b) -> bool:
    """Deep equality that compares numpy arrays/scalars by dtype, shape and bytes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and (a.tobytes() == b.tobytes() if a.dtype != object
                                            else all(same(x, y) for x, y in zip(a.ravel(), b.ravel()))))
    if isinstance(a, np.generic) or isinstance(b, np.generic):
        return type(a) is type(b) and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return type(a) is type(b) and a == b


def globals_of(data: bytes) -> set[str]:
    """module.name of every global a pickle references (GLOBAL and STACK_GLOBAL opcodes)."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
    return found


# ------------------------------------------------------------------------------------- what must load

INFO_DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.int16, np.uint32]
arrays = st.one_of(
    hnp.arrays(st.sampled_from(INFO_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
    hnp.arrays(hnp.unicode_string_dtypes(max_len=6), hnp.array_shapes(max_dims=1, max_side=4)),  # gt_names
    st.builds(lambda a: a.T, hnp.arrays(np.float64, (2, 3))),  # non-contiguous (protocol 5 fallback)
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=12),
    st.binary(max_size=16), st.builds(np.float64, st.floats()), st.builds(np.float32, st.floats(width=32)),
    st.builds(np.int64, st.integers(-2**63, 2**63 - 1)), st.builds(np.bool_, st.booleans()),
)
info_values = st.recursive(
    st.one_of(scalars, arrays),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.frozensets(st.integers(), max_size=3), st.sets(st.text(max_size=4), max_size=3),
        st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    ),
    max_leaves=20,
)


def official_info(rng: np.random.Generator, token: str) -> dict:
    """One info of the official fusionocc-nuscenes_infos_*.pkl (mmdet3d create_nuscenes_infos +
    BEVDet add_ann_adj_info; reference/fusionocc-architecture.md 3.1)."""
    cams = {}
    for cam in ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"):
        cams[cam] = {"data_path": f"./data/nuscenes/samples/{cam}/x.jpg", "type": cam, "sample_data_token": token + cam,
                     "sensor2ego_translation": [1.7, 0.0, 1.5], "sensor2ego_rotation": [0.5, -0.5, 0.5, -0.5],
                     "ego2global_translation": [411.3, 1180.9, 0.0], "ego2global_rotation": [0.57, -0.0, 0.01, -0.82],
                     "timestamp": 1531883530412470, "sensor2lidar_rotation": rng.normal(size=(3, 3)),
                     "sensor2lidar_translation": rng.normal(size=3), "cam_intrinsic": rng.normal(size=(3, 3))}
    n = int(rng.integers(0, 4))
    return {"lidar_path": "./data/nuscenes/samples/LIDAR_TOP/x.pcd.bin", "token": token, "sweeps": [], "cams": cams,
            "lidar2ego_translation": [0.94, 0.0, 1.84], "lidar2ego_rotation": [0.7, -0.01, 0.01, -0.7],
            "ego2global_translation": [411.3, 1180.9, 0.0], "ego2global_rotation": [0.57, -0.0, 0.01, -0.82],
            "timestamp": 1531883530449377, "gt_boxes": rng.normal(size=(n, 7)),
            "gt_names": np.array(["car", "pedestrian", "barrier", "truck"][:n]), "gt_velocity": rng.normal(size=(n, 2)),
            "num_lidar_pts": rng.integers(0, 99, n), "num_radar_pts": rng.integers(0, 9, n),
            "valid_flag": rng.integers(0, 2, n).astype(bool),
            "ann_infos": ([np.concatenate([rng.normal(size=7), rng.normal(size=2)]) for _ in range(n)],
                          [int(v) for v in rng.integers(0, 10, n)]),
            "scene_token": "s" + token, "occ_path": f"./data/nuscenes/gts/scene-0001/{token}"}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_official_layout_loads_in_every_protocol(protocol: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(protocol)
    data = {"infos": [official_info(rng, f"tok{i:03d}") for i in range(3)], "metadata": {"version": "v1.0-trainval"}}
    raw = pickle.dumps(data, protocol=protocol)  # mmcv.dump uses protocol 2
    assert same(safe_pickle.loads(raw), data)
    (tmp_path / "infos.pkl").write_bytes(raw)
    assert same(read_infos(tmp_path / "infos.pkl"), data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=info_values, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_any_info_like_structure_round_trips(value, protocol: int) -> None:
    raw = pickle.dumps(value, protocol=protocol)
    # the oracle: exactly what the standard (code-running) unpickler rebuilds from our own bytes
    assert same(safe_pickle.loads(raw), pickle.loads(raw)), sorted(globals_of(raw))


def test_what_fusionocc_prepare_writes_loads(tmp_path: Path) -> None:
    from nusc_fixture import make_root

    root = tmp_path / "root"
    make_root(root, scenes=1, keyframes=2)  # with lidarseg: the infos carry packed imgseg maps too
    data = create_infos(root, "v1.0-mini", progress=False)
    assert data["infos"][0]["imgseg"] is not None
    write_infos(data, tmp_path / "infos.pkl")
    raw = (tmp_path / "infos.pkl").read_bytes()
    assert globals_of(raw), "the real file references numpy globals: the test would be vacuous otherwise"
    assert same(safe_pickle.loads(raw), data)
    assert same(read_infos(tmp_path / "infos.pkl"), data)


# ------------------------------------------------------------------------------------- what must be refused

CANARY = "CANARY_FILE"


def planted(module: str, name: str, args: tuple) -> bytes:
    """A protocol-2 pickle whose payload calls module.name(*args) inside a valid-looking info dict."""
    call = pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.dumps(args, protocol=2)[2:-1] + pickle.REDUCE
    body = pickle.dumps({"infos": [{"token": "t"}], "metadata": {}}, protocol=2)
    # {'evil': <call>, ...}: insert the key/value right after the outer EMPTY_DICT + BINPUT
    head = body.index(pickle.EMPTY_DICT) + 1
    head += 2 if body[head:head + 1] == pickle.BINPUT else 0
    return body[:head] + pickle.dumps("evil", protocol=2)[2:-1] + call + pickle.SETITEM + body[head:]


DANGEROUS = [
    ("os", "system", ("touch {canary}",)), ("posix", "system", ("touch {canary}",)),
    ("subprocess", "check_call", (["touch", "{canary}"],)), ("builtins", "exec", ("open('{canary}', 'w')",)),
    ("builtins", "eval", ("open('{canary}', 'w')",)), ("__builtin__", "open", ("{canary}", "w")),
    ("builtins", "open", ("{canary}", "w")), ("builtins", "getattr", (0, "real")), ("builtins", "__import__", ("os",)),
    ("importlib", "import_module", ("os",)), ("numpy", "load", ("{canary}",)), ("numpy", "save", ("{canary}", 0)),
    ("numpy.lib.npyio", "load", ("{canary}",)), ("numpy.testing._private.utils", "runstring", ("open('{canary}','w')", {})),
    ("pathlib", "Path", ("{canary}",)), ("shutil", "rmtree", ("{canary}",)), ("copyreg", "_reconstructor", (object, object, None)),
    ("torch", "load", ("{canary}",)), ("_codecs", "decode", (b"x", "zlib")), ("pickle", "loads", (b"",)),
]


@pytest.mark.parametrize("module,name,args", DANGEROUS, ids=[f"{m}.{n}" for m, n, _ in DANGEROUS])
def test_planted_calls_are_refused_without_running(module: str, name: str, args: tuple, tmp_path: Path) -> None:
    canary = tmp_path / CANARY
    args = tuple(a.format(canary=canary) if isinstance(a, str) else
                 [x.format(canary=canary) for x in a] if isinstance(a, list) else a for a in args)
    raw = planted(module, name, args)
    assert f"{module}.{name}" in globals_of(raw)
    with pytest.raises(safe_pickle.UnsafePickleError, match=f"refused global {module}.{name}"):
        safe_pickle.loads(raw)
    (tmp_path / "evil.pkl").write_bytes(raw)
    with pytest.raises(DataError) as err:
        read_infos(tmp_path / "evil.pkl")
    assert str(err.value).startswith(f"{tmp_path / 'evil.pkl'}: not loaded, refused global {module}.{name}")
    assert "\n" not in str(err.value)
    assert not canary.exists()
    # the same bytes DO run with the standard unpickler (for the file-system calls): the test is real
    if (module, name) in (("os", "system"), ("builtins", "open")):
        try:
            pickle.loads(raw)
        except Exception:
            pass
        assert canary.exists()


identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}(\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,2}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(module=identifiers, name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True),
       protocol=st.sampled_from(["GLOBAL", "STACK_GLOBAL"]))
def test_every_global_outside_the_allow_list_is_refused(module: str, name: str, protocol: str) -> None:
    if (module, name) in safe_pickle.allowed_globals():
        return
    if protocol == "GLOBAL":
        raw = pickle.PROTO + b"\x02" + pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.STOP
    else:
        raw = pickle.PROTO + b"\x04" + _unicode(module) + _unicode(name) + pickle.STACK_GLOBAL + pickle.STOP
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused global"):
        safe_pickle.loads(raw)


def _unicode(text: str) -> bytes:
    data = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def test_allow_list_is_only_data_constructors() -> None:
    names = {f"{m}.{n}" for m, n in safe_pickle.allowed_globals()}
    assert {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype", "builtins.set"} <= names
    for forbidden in ("builtins.eval", "builtins.exec", "builtins.getattr", "builtins.open", "os.system",
                      "builtins.__import__", "numpy.load", "copyreg._reconstructor", "builtins.object", "builtins.type"):
        assert forbidden not in names
    assert all(m.split(".")[0] in ("builtins", "__builtin__", "collections", "_codecs", "codecs", "numpy")
               for m, _ in safe_pickle.allowed_globals())


def test_codecs_encode_only_latin1_text() -> None:
    ok = pickle.dumps(b"\x00\xffbytes", protocol=2)  # protocol 2 bytes = _codecs.encode(str, 'latin1')
    assert "_codecs.encode" in globals_of(ok) and safe_pickle.loads(ok) == b"\x00\xffbytes"
    bad = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"_codecs\nencode\n" + pickle.BINUNICODE + (3).to_bytes(4, "little")
           + b"abc" + pickle.BINUNICODE + (4).to_bytes(4, "little") + b"zlib" + pickle.TUPLE2 + pickle.REDUCE + pickle.STOP)
    with pytest.raises(safe_pickle.UnsafePickleError, match="latin-1"):
        safe_pickle.loads(bad)


@pytest.mark.parametrize("raw,needle", [
    (b"", "EOFError"), (b"not a pickle at all\n", "not a readable info pickle"),
    (pickle.dumps({"infos": [{"token": "t"}]})[:-5], "not a readable info pickle"),
    (pickle.dumps([1, 2]), "info 0 is not a dict"), (pickle.dumps({"infos": []}), "holds no samples"),
    (pickle.dumps({"infos": [{"token": 5}]}), "string 'token'"), (pickle.dumps("x"), "not an info file"),
    (pickle.PROTO + b"\x02" + pickle.PERSID + b"1\n" + pickle.STOP, "persistent id"),
])
def test_damaged_info_files_are_one_line_data_errors(raw: bytes, needle: str, tmp_path: Path) -> None:
    (tmp_path / "i.pkl").write_bytes(raw)
    with pytest.raises(DataError) as err:
        read_infos(tmp_path / "i.pkl")
    assert needle in str(err.value) and "\n" not in str(err.value) and str(tmp_path / "i.pkl") in str(err.value)


def test_load_reads_from_a_stream() -> None:
    value = {"a": np.arange(4, dtype=np.uint8)}
    assert same(safe_pickle.load(io.BytesIO(pickle.dumps(value))), value)

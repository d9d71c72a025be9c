"""Checkpoints: official-format import/export round trips bit-exactly; mismatches are refused with a
listing; our own format embeds the config and survives an I/O error while saving."""
from __future__ import annotations

import fractions
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusionocc_core import build_model, load_config
from fusionocc_core.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    export_official_checkpoint,
    load_checkpoint,
    load_model_weights,
    load_official_checkpoint,
    merge_concat_to_unfold,
    merge_unfold_to_concat,
    save_checkpoint,
)
from fusionocc_core.model.swin import PatchMerging


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter and floating/integer buffer set to seed-dependent values (BN stats included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.1 if name.endswith("running_var") else torch.randn(t.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model


def _assert_identical(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[nn.Module, nn.Module]:
    cfg = load_config("tiny")
    return _randomised(build_model(cfg), 1), _randomised(build_model(cfg), 2)


@pytest.mark.parametrize(
    "options",
    [{}, {"sparse_layout": "spconv", "module_prefix": True}, {"ema": True}],
    ids=["mmcv-plain", "spconv-layout-module-prefix", "ema-container"],
)
def test_official_format_round_trip_is_bit_exact(tmp_path: Path, tiny_pair, options: dict) -> None:
    src, dst = tiny_pair
    path = tmp_path / "official.pth"
    export_official_checkpoint(src, path, **options)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == ({"epoch", "state_dict", "updates"} if options.get("ema") else {"state_dict", "meta"})
    kernel = raw["state_dict"][("module." if options.get("module_prefix") else "") + "lidar_encoder.conv_input.0.weight"]
    c_in, c_out = 5, src.cfg.model.lidar_channels[0]
    assert tuple(kernel.shape) == ((c_out, 1, 1, 1, c_in) if options.get("sparse_layout") == "spconv" else (1, 1, 1, c_in, c_out))
    info = load_official_checkpoint(dst, path)
    assert info["num_tensors"] == len(src.state_dict())
    _assert_identical(src, dst)
    _randomised(dst, 3)  # keep the shared fixture independent of test order


def test_patch_merging_permutation_equals_the_concat_merge() -> None:
    # unfold order (mmseg, the official checkpoint) vs timm's concat [x0, x1, x2, x3]: same output
    C, g = 3, torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, C, generator=g)  # (B, H, W, C)
    unfold = x.view(2, 2, 2, 3, 2, C).permute(0, 1, 3, 5, 2, 4).reshape(2, 6, 4 * C)  # (c, ki, kj)
    concat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1).reshape(2, 6, 4 * C)
    w, gamma, beta = torch.randn(2 * C, 4 * C, generator=g), torch.randn(4 * C, generator=g), torch.randn(4 * C, generator=g)
    ref = F.linear(F.layer_norm(unfold, (4 * C,), gamma, beta), w)
    got = F.linear(F.layer_norm(concat, (4 * C,), merge_unfold_to_concat(gamma), merge_unfold_to_concat(beta)), merge_unfold_to_concat(w))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(merge_concat_to_unfold(merge_unfold_to_concat(w)), w)
    assert not torch.equal(merge_unfold_to_concat(w), w)


def test_a_concat_order_swin_gets_permuted_on_export_and_load(tmp_path: Path) -> None:
    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        m = nn.Module()
        m.merge = PatchMerging(4)
        m.merge.channel_order = "concat"  # a timm-style merge: the loader must permute
        return m

    src, dst = net(0), net(1)
    export_official_checkpoint(src, tmp_path / "swin.pth")
    stored = torch.load(tmp_path / "swin.pth", weights_only=True)["state_dict"]["merge.reduction.weight"]
    torch.testing.assert_close(stored, merge_concat_to_unfold(src.merge.reduction.weight.detach()))
    load_official_checkpoint(dst, tmp_path / "swin.pth")
    _assert_identical(src, dst)
    plain = net(2)
    del plain.merge.channel_order  # our Swin (unfold order, like the official file): loaded as stored
    load_official_checkpoint(plain, tmp_path / "swin.pth")
    assert torch.equal(plain.merge.reduction.weight, stored)


def test_a_mismatched_checkpoint_is_refused_with_every_problem_listed(tmp_path: Path, tiny_pair) -> None:
    src, dst = tiny_pair
    state = {k: v.clone() for k, v in src.state_dict().items()}
    del state["predicter.2.bias"]
    state["img_neck.extra.weight"] = torch.zeros(3)
    state["final_conv.conv.weight"] = torch.zeros(1, 2, 3)
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "bad.pth")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_official_checkpoint(dst, tmp_path / "bad.pth")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "bad.pth") in msg
    assert "1 missing: predicter.2.bias" in msg and "1 unexpected: img_neck.extra.weight" in msg
    assert "1 mis-shaped: final_conv.conv.weight (1, 2, 3) vs model" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items()), "a refused load changed the model"


def test_unreadable_files_give_one_line_errors(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="no such file"):
        load_official_checkpoint(model, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_official_checkpoint(model, tmp_path / "junk.pth")
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no tensor state dict"):
        load_official_checkpoint(model, tmp_path / "empty.pth")


def test_numpy_metadata_loads_safely_but_arbitrary_objects_need_trust(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    torch.save({"state_dict": model.state_dict(), "meta": {"seed": np.int64(7), "epoch": 24}}, tmp_path / "np.pth")
    assert load_official_checkpoint(model, tmp_path / "np.pth")["meta"]["seed"] == 7
    torch.save({"state_dict": model.state_dict(), "meta": {"odd": fractions.Fraction(1, 3)}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_official_checkpoint(model, tmp_path / "odd.pth")
    assert load_official_checkpoint(model, tmp_path / "odd.pth", trusted=True)["kind"] == "state_dict"


def test_own_checkpoint_embeds_the_config_and_prefers_ema_weights(tmp_path: Path, tiny_pair) -> None:
    src, dst = tiny_pair
    cfg = load_config("tiny")
    ema = _randomised(build_model(cfg), 4)
    path = tmp_path / "ours.pt"
    save_checkpoint(path, src, cfg, iteration=12, ema_state_dict=ema.state_dict())
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == cfg and ckpt["iteration"] == 12 and ckpt["format"] == "fusionocc_ros"
    assert load_model_weights(dst, path, prefer_ema=False) == "fusionocc_ros:state_dict"
    _assert_identical(src, dst)
    assert load_model_weights(dst, path) == "fusionocc_ros:ema_state_dict"
    _assert_identical(ema, dst)
    export_official_checkpoint(src, tmp_path / "official.pth")
    assert load_model_weights(dst, tmp_path / "official.pth") == "official:state_dict"
    _assert_identical(src, dst)
    with pytest.raises(CheckpointError, match="not a fusionocc_ros checkpoint"):
        load_checkpoint(tmp_path / "official.pth")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, src, cfg, config={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["official.pth", "ours.pt"]  # no temporary files left
    _randomised(dst, 3)


def test_an_io_error_while_saving_keeps_the_previous_file(tmp_path: Path) -> None:
    # a real write failure: the child process may not grow any file beyond 64 kB (EFBIG)
    path = tmp_path / "model.pt"
    cfg = load_config("tiny")
    save_checkpoint(path, nn.Linear(4, 4), cfg, note="previous")
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import torch
        from fusionocc_core.checkpoint import save_checkpoint
        from fusionocc_core.config import load_config
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        model = torch.nn.Linear(256, 256)  # ~260 kB of weights
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            save_checkpoint({str(path)!r}, model, load_config("tiny"))
        except OSError as exc:
            print("OSError:", exc)
            sys.exit(3)
        sys.exit(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"could not write checkpoint {path}" in proc.stdout
    assert path.read_bytes() == before
    assert load_checkpoint(path)["note"] == "previous"
    assert os.listdir(tmp_path) == ["model.pt"], "a temporary file was left behind"


@pytest.mark.slow
def test_official_preset_synthetic_checkpoint_loads_back_bit_exactly(tmp_path: Path) -> None:
    cfg = load_config("official")
    src = _randomised(build_model(cfg), 5)
    export_official_checkpoint(src, tmp_path / "fusion_occ.pth", module_prefix=True)
    del src
    dst = build_model(cfg)
    info = load_official_checkpoint(dst, tmp_path / "fusion_occ.pth")
    assert info["num_tensors"] == len(dst.state_dict())
    src = _randomised(build_model(cfg), 5)  # the same values again
    _assert_identical(src, dst)

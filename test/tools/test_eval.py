"""fusionocc-eval on a generated dataset: one Occ3D submission file per sample holding the model's
argmax, scored exactly as fusionocc-score scores the same files; one-line errors on bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fusionocc_core.checkpoint import save_checkpoint
from fusionocc_core.classes import GRID_SHAPE
from fusionocc_core.config import PRESET_DIR, load_config
from fusionocc_core.data.dataset import OccDataset, collate
from fusionocc_core.data.prepare import create_infos, write_infos
from fusionocc_core.model import build_model
from fusionocc_synth import generate
from fusionocc_core.tools import score
from fusionocc_core.tools.evaluate import evaluate_dataset

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    root = generate(base / "root", scenes=2, keyframes=2, seed=11, render_scale=0.1)
    infos = create_infos(root, "v1.0-mini", progress=False)
    val_scene = infos["metadata"]["scenes"][-1]
    write_infos(create_infos(root, "v1.0-mini", scenes=[val_scene], progress=False), base / "val.pkl")
    d = yaml.safe_load((PRESET_DIR / "tiny.yaml").read_text())
    d["data"]["num_lidar_sweeps"] = 2
    (base / "cfg.yaml").write_text(yaml.safe_dump(d))
    cfg = load_config(base / "cfg.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_checkpoint(base / "model.pth", model, cfg)
    return {"base": base, "root": root, "val": base / "val.pkl", "cfg": base / "cfg.yaml", "model": model,
            "config": cfg}


def eval_cmd(s: dict, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "fusionocc-eval"), "--config", str(s["cfg"]), "--checkpoint", str(s["base"] / "model.pth"),
            "--data-root", str(s["root"]), "--infos", str(s["val"]), "--out", str(out), "--device", "cpu",
            "--no-progress", *extra]


def test_eval_writes_argmax_files_and_scores_them_like_fusionocc_score(setup):
    out, js = setup["base"] / "preds", setup["base"] / "eval.json"
    proc = subprocess.run(eval_cmd(setup, out, "--mask", "none", "--rayiou", "--json", str(js)), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 2 predictions" in proc.stdout and "mIoU" in proc.stdout
    ds = OccDataset(setup["val"], setup["root"], setup["config"], train=False)
    tokens = sorted(i["token"] for i in ds.infos)
    assert sorted(p.stem for p in out.iterdir()) == tokens  # nothing else (no temp files)
    # the file holds the model's argmax under the test transform
    with torch.no_grad():
        logits = setup["model"](collate([ds[0]]))["occ_logits"][0]
    with np.load(out / f"{ds.infos[0]['token']}.npz") as f:
        assert f.files == ["semantics"]
        sem = f["semantics"]
    assert sem.dtype == np.uint8 and sem.shape == GRID_SHAPE
    np.testing.assert_array_equal(sem, logits.argmax(-1).numpy().astype(np.uint8))
    # the reported score is fusionocc-score's on the written files
    doc = json.loads(js.read_text())
    ref = score.score_dirs(out, setup["root"] / "gts", mask="none", allow_missing=True, rayiou=True,
                           infos=setup["val"], progress=False)
    assert doc["num_samples"] == ref.num_samples == 2 and doc["mask"] == "none"
    assert doc["miou"] == pytest.approx(ref.miou, abs=1e-9)
    assert doc["rayiou"] == pytest.approx(ref.rayiou["rayiou"], abs=1e-9) and 0 <= doc["rayiou"] <= 100
    # and the in-memory path used by training validation agrees with both
    mem = evaluate_dataset(setup["model"], ds, torch.device("cpu"), mask="none", progress=False)
    assert mem.miou == pytest.approx(ref.miou, abs=1e-9)
    np.testing.assert_array_equal(mem.confusion, ref.confusion)


def test_eval_bad_inputs(setup, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    cases = [
        (eval_cmd(setup, tmp_path / "o1")[:4] + [str(bad)] + eval_cmd(setup, tmp_path / "o1")[5:], "bad.pth"),
        ([a if a != str(setup["val"]) else str(tmp_path / "none.pkl") for a in eval_cmd(setup, tmp_path / "o2")],
         "none.pkl"),
    ]
    for cmd, needle in cases:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith("fusionocc-eval: error: ") and needle in lines[0]
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()

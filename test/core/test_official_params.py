"""build_model("official") has exactly the released checkpoint's learnable tensors (names, shapes, order)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusionocc_core.model import build_model

# a copy of shared/reference/official-fusionocc-parameters.tsv (from the official training log)
TSV = Path(__file__).resolve().parent / "official-fusionocc-parameters.tsv"


def _reference() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        rows.append((name, tuple(int(v) for v in shape.split(","))))
    return rows


@pytest.fixture(scope="module")
def official():
    with torch.device("meta"):  # shapes only: no 109 M random initialisation
        return build_model("official")


def test_named_parameters_equal_the_official_table(official):
    ref = _reference()
    ours = [(name, tuple(p.shape)) for name, p in official.named_parameters()]
    assert len(ref) == 549
    missing = sorted(set(ref) - set(ours))
    unexpected = sorted(set(ours) - set(ref))
    assert not missing and not unexpected, f"missing {missing[:5]} unexpected {unexpected[:5]}"
    assert ours == ref  # same registration order too
    assert sum(p.numel() for p in official.parameters()) == 109_090_524


def test_state_dict_buffers_follow_the_official_layout(official):
    sd = official.state_dict()
    # mmseg keeps the Swin relative position index as a persistent buffer; BN buffers everywhere
    assert sd["img_backbone.stages.2.blocks.17.attn.w_msa.relative_position_index"].shape == (144, 144)
    assert "img_neck.conv.1.running_mean" in sd and "img_neck.conv.1.num_batches_tracked" in sd
    # derived tensors (frustum, grid bounds) are not part of the checkpoint
    assert not any("frustum" in k or "grid_lower" in k for k in sd)


def test_top_level_modules_in_official_order(official):
    assert [name for name, _ in official.named_children()] == [
        "img_backbone", "img_neck", "img_view_transformer", "img_bev_encoder_backbone", "img_bev_encoder_neck",
        "pre_process_net", "lidar_encoder", "final_conv", "predicter",
    ]

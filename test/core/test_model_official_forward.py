"""The `official` preset at full resolution (512x1408, 2 frames, 6 cameras) runs on CPU with the
documented shapes at every stage (reference/fusionocc-architecture.md §1.2).

It takes the Predictor's per-frame path: the six key-frame images through the backbone once, and the
previous frame's neck features from the feature cache (here the key frame's own, as at start-up when
there is no history yet); everything after the backbone runs for both frames. One Swin-B pass over
six images is most of the test's CPU time; the second frame's pass is what the cache saves."""
from __future__ import annotations

import resource

import pytest
import torch

from fusionocc_core.config import load_config
from fusionocc_core.model import build_model
from fusionocc_core.model.example_inputs import example_batch


@pytest.mark.slow
def test_official_full_resolution_forward_on_cpu():
    cfg = load_config("official")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = example_batch(cfg, num_points=30000, with_targets=False)
    shapes: dict[str, list] = {}

    def record(name):
        def hook(_module, _inputs, output):
            outs = output if isinstance(output, (list, tuple)) else [output]
            shapes.setdefault(name, []).append([tuple(o.shape) for o in outs])
        return hook

    for name in ("img_backbone", "img_neck", "pre_process_net", "lidar_encoder", "img_bev_encoder_backbone",
                 "img_bev_encoder_neck", "final_conv"):
        getattr(model, name).register_forward_hook(record(name))
    with torch.inference_mode():
        key_feats = model.encode_images(batch["imgs"][:, 0])  # (1, 6, 256, 32, 88)
        out = model.forward_features(batch, [key_feats, key_feats])

    # one backbone/neck pass (the key frame), one pre-process pass per image frame
    assert shapes["img_backbone"] == [[(6, 512, 32, 88), (6, 1024, 16, 44)]]
    assert shapes["img_neck"] == [[(6, 256, 32, 88)]]
    assert tuple(key_feats.shape) == (1, 6, 256, 32, 88)
    assert shapes["pre_process_net"] == [[(1, 32, 16, 200, 200)]] * 2
    assert shapes["lidar_encoder"] == [[(1, 32, 16, 200, 200)]]
    assert shapes["img_bev_encoder_backbone"] == [[(1, 64, 16, 200, 200), (1, 128, 8, 100, 100), (1, 256, 4, 50, 50)]]
    assert shapes["img_bev_encoder_neck"] == [[(1, 64, 16, 200, 200)]]
    assert shapes["final_conv"] == [[(1, 64, 16, 200, 200)]]
    assert tuple(out["occ_logits"].shape) == (1, 200, 200, 16, 18)
    assert tuple(out["depth_probs"].shape) == (6, 88, 32, 88)
    assert tuple(out["seg_logits"].shape) == (6, 18, 32, 88)
    assert torch.isfinite(out["occ_logits"]).all()
    labels = out["occ_logits"][0].argmax(-1).to(torch.uint8)
    assert labels.shape == (200, 200, 16) and int(labels.max()) < 18
    # the 3D encoder's first conv saw [previous image 32, key image 32, LiDAR 32] = 96 channels
    assert model.img_bev_encoder_backbone.layers[0][0].conv1.conv.in_channels == 96
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    assert peak_gb < 12, f"peak resident memory {peak_gb:.1f} GB"

"""The pipeline's per-frame work besides the model: only the outputs asked for are encoded (two at
a time, each byte for byte what its encoder gives), and start-up objects are kept out of full
garbage collections."""
from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import numpy as np

from fusionocc_core.config import load_config
from fusionocc_ros.encoders import MarkerArrayEncoder, PointCloudEncoder, VoxelGridEncoder
from fusionocc_ros.params import load_params_file, pipeline_settings
from fusionocc_ros.pipeline import OccupancyPipeline, freeze_startup_objects

STAMP = 1_533_201_470_448_696_123


def test_pipeline_encodes_only_the_outputs_asked_with_each_encoders_bytes() -> None:
    # the node asks only for the outputs someone subscribes to; markers and cloud are built at the
    # same time on two threads, from one search of the drawn voxels, and must not notice
    params = load_params_file(Path(__file__).resolve().parents[2] / "config" / "occ_node.yaml")
    settings = replace(pipeline_settings(params), class_filter=("car", "manmade"), publish_confidence=True)
    pipe = OccupancyPipeline(load_config("tiny"), predictor=None, settings=settings)  # type: ignore[arg-type]
    labels = np.random.default_rng(5).integers(0, 18, (200, 200, 16)).astype(np.uint8)  # ~600k drawn
    confidence = np.random.default_rng(6).integers(0, 256, labels.shape, dtype=np.uint8)
    expected = {
        "markers": MarkerArrayEncoder(classes=["car", "manmade"]).encode(labels, STAMP),
        "voxels": VoxelGridEncoder().encode(labels, STAMP, confidence),
        "cloud": PointCloudEncoder(classes=["car", "manmade"]).encode(labels, STAMP),
    }
    for wanted in (["cloud", "voxels", "markers"], ["markers", "cloud"], ["voxels"], ["cloud"], []):
        got = pipe.encode(labels, confidence, STAMP, wanted)
        assert list(got) == wanted
        assert all(got[name] == expected[name] for name in wanted), wanted


def test_startup_objects_frozen_leave_full_collections_only_new_objects() -> None:
    # the node freezes what start-up created (model, modules) so a full collection mid-frame is short
    before = len(gc.get_objects())
    try:
        frozen = freeze_startup_objects()
        assert frozen >= before // 2 and gc.get_freeze_count() >= before // 2
        assert len(gc.get_objects()) < before // 10  # what a full collection still walks
    finally:
        gc.unfreeze()

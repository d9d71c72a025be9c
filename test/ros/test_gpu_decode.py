"""The assembler's batched image decoding (the nvJPEG path on CUDA) and its CPU fallback.

nvJPEG itself needs torchvision and a GPU (test/cuda compares it with OpenCV); here a batch decoder
that returns (3, H, W) uint8 tensors built with OpenCV stands in for it, so the plumbing (cache,
fallback, sizes, the Predictor taking tensors) is checked on every machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sensor_msgs.msg import CompressedImage

from fusionocc_core.config import load_config
from fusionocc_core.model.example_inputs import rig_extrinsics, rig_intrinsics, scene_points
from fusionocc_core.predictor import Predictor
from fusionocc_ros.assembler import AssemblyError, FrameAssembler, LidarSweep
from fusionocc_ros.conversions import ConversionError, checked_compressed_image, compressed_image_to_rgb, ns_to_sec_nsec
from fusionocc_ros.gpu_decode import cuda_jpeg_decoder
from fusionocc_ros.sync import SyncedSet
from fusionocc_ros.tf_buffer import TfBuffer

CFG = load_config("tiny")
HW = (180, 320)
CAM_STAMP = 1_000_000_000


def jpeg_msg(img: np.ndarray, stamp_ns: int, frame: str) -> CompressedImage:
    import cv2

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nsec(stamp_ns)
    msg.header.frame_id = frame
    msg.format = "jpeg"
    msg.data = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return msg


class OpenCvBatch:
    """A batch decoder with nvJPEG's contract, built on OpenCV: (3, H, W) uint8 tensors or None."""

    def __init__(self, decline: bool = False):
        self.calls, self.decline = 0, decline

    def __call__(self, payloads):
        self.calls += 1
        if self.decline:
            return None
        try:
            return [torch.from_numpy(compressed_image_to_rgb(p)).permute(2, 0, 1) for p in payloads]
        except ConversionError:
            return None


def assembler(decoder) -> FrameAssembler:
    tf = TfBuffer()
    s2e = rig_extrinsics()
    for i, cam in enumerate(CFG.data.cameras):
        tf.set_transform("base_link", f"{cam.lower()}_optical", 0, s2e[i], static=True)
    asm = FrameAssembler(CFG, tf, ego_frame="base_link", fixed_frame=None, decode_jpegs=decoder)
    K = rig_intrinsics() * np.array([HW[1] / 1600, HW[0] / 900, 1.0], np.float32)[:, None]
    for cam, k in zip(CFG.data.cameras, K):
        asm.set_intrinsics(cam, k, HW)
    return asm


def synced_set(seed: int, corrupt: int | None = None) -> SyncedSet:
    rng = np.random.default_rng(seed)
    msgs = [jpeg_msg(rng.integers(0, 256, (*HW, 3), dtype=np.uint8), CAM_STAMP + i, f"{cam.lower()}_optical")
            for i, cam in enumerate(CFG.data.cameras)]
    if corrupt is not None:
        msgs[corrupt].data = msgs[corrupt].data[: len(msgs[corrupt].data) // 2]  # truncated JPEG
    pts, _ = scene_points(np.random.default_rng(seed), 5_000)
    lidar = LidarSweep(CAM_STAMP + 40_000_000, "base_link", pts)
    return SyncedSet(lidar.stamp_ns, lidar, tuple(CAM_STAMP + i for i in range(6)), tuple(msgs))


def test_batch_decoded_set_predicts_like_the_cpu_pool() -> None:
    batch = OpenCvBatch()
    on_batch, on_pool = assembler(batch).build(synced_set(0)), assembler(None).build(synced_set(0))
    assert batch.calls == 1  # one call for the whole set
    assert all(torch.is_tensor(im) and tuple(im.shape) == (3, *HW) for im in on_batch.cameras.images)
    assert all(isinstance(im, np.ndarray) for im in on_pool.cameras.images)
    for a, b in zip(on_batch.cameras.images, on_pool.cameras.images):
        assert np.array_equal(a.permute(1, 2, 0).numpy(), b)  # same decoder here: same pixels
    torch.manual_seed(0)
    pred = Predictor(CFG, seed=0)
    assert np.array_equal(pred.predict(on_batch).labels, pred.predict(on_pool).labels)


def test_a_declined_or_corrupt_set_falls_back_to_the_cpu_checks() -> None:
    declining = OpenCvBatch(decline=True)
    frame_set = assembler(declining).build(synced_set(1))
    assert declining.calls == 1 and all(isinstance(im, np.ndarray) for im in frame_set.cameras.images)
    with pytest.raises(AssemblyError, match="truncated JPEG"):  # the CPU path names the problem
        assembler(OpenCvBatch()).build(synced_set(2, corrupt=3))


def test_batch_decoded_image_of_the_wrong_size_is_refused() -> None:
    asm = assembler(OpenCvBatch())
    asm.set_intrinsics(CFG.data.cameras[0], rig_intrinsics()[0], (900, 1600))  # CameraInfo says 1600x900
    with pytest.raises(AssemblyError, match="differs from CameraInfo size"):
        asm.build(synced_set(3))


def test_checked_compressed_image_reports_kind_and_size() -> None:
    msg = jpeg_msg(np.zeros((*HW, 3), np.uint8), CAM_STAMP, "cam")
    data, hw, kind = checked_compressed_image(msg)
    assert kind == "jpeg" and hw == HW and data.dtype == np.uint8 and data.size == len(msg.data)


def test_no_gpu_decoder_without_cuda() -> None:
    assert cuda_jpeg_decoder("cpu") is None

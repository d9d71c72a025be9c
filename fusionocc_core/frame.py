"""The inputs contract between the data layer, the model, the predictor and the ROS node.

Two forms of the same information:

* `FrameSet` - one raw, un-augmented multi-camera + LiDAR frame as a sensor stack (or the
  ROS node's frame assembler) delivers it. `Predictor.predict(frame_set)` takes this.
* A *batch* - the dict of torch tensors that `FusionOcc.forward(batch)` and the losses take,
  produced by the dataset (train/test transform) or by the predictor's preprocessing. Keys:

  imgs           float32 (B, T, N, 3, H, W)  normalised network input; T index 0 = key frame,
                                              1.. = previous key-frames; N = 6 cameras in
                                              CAMERA_NAMES order
  intrins        float32 (B, T, N, 3, 3)     camera matrix K of the source image
  sensor2ego     float32 (B, T, N, 4, 4)     camera (optical) -> key ego frame (ego at the
                                              current LiDAR stamp), for every frame t
  post_rots      float32 (B, T, N, 3, 3)     image augmentation (resize/crop/flip/rotate)
  post_trans     float32 (B, T, N, 3)        as a 2D affine in homogeneous form
  bda            float32 (B, 3, 3)           BEV augmentation applied to ego coordinates
  points         list of B float32 (P_b, 5)  x y z intensity ring in the key ego frame, the
                                              current + previous sweeps merged, bda applied
  sparse_depth   float32 (B, N, H, W)        metres from the current sweep only, 0 = none
  -- training targets (absent at inference) --
  voxel_semantics int64 (B, 200, 200, 16)    Occ3D labels, [x][y][z], bda applied
  mask_camera    bool  (B, 200, 200, 16)
  mask_lidar     bool  (B, 200, 200, 16)
  seg_labels     int64 (B, N, H, W)          2D labels from lidarseg, 17 = no label
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CameraFrame:
    """Six camera images taken around one stamp, with calibration in the *current* ego frame."""

    images: list[np.ndarray]  # 6 x (H, W, 3) uint8 RGB, source resolution, CAMERA_NAMES order
    intrinsics: np.ndarray  # (6, 3, 3) float
    sensor2ego: np.ndarray  # (6, 4, 4) float: camera optical frame -> current key ego frame
    stamp_ns: int = 0  # stamp of the frame (mean camera stamp); keys the predictor's feature cache


@dataclass
class FrameSet:
    """One synchronized input for the predictor (raw, not augmented, not normalised)."""

    stamp_ns: int  # LiDAR stamp of the current sweep: the output's stamp
    cameras: CameraFrame
    # previous key-frames (~0.5 s apart, newest first), sensor2ego expressed in the *current*
    # ego frame; empty at start-up (the predictor then repeats the current frame, as the
    # dataset does at a scene start)
    previous: list[CameraFrame] = field(default_factory=list)
    # (P, 5) float32 x y z intensity ring in the current ego frame: current + previous sweeps
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    # (Q, 5) float32: the current sweep alone in the current ego frame (for sparse depth)
    key_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))

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
  sensor2ego     float32 (B, T, N, 4, 4)     camera (optical) at its own stamp -> key ego
                                              frame, for every frame t (see "Frames" below)
  post_rots      float32 (B, T, N, 3, 3)     image augmentation (resize/crop/flip/rotate)
  post_trans     float32 (B, T, N, 3)        as a 2D affine in homogeneous form
  bda            float32 (B, 3, 3)           BEV augmentation applied to ego coordinates
  points         list of B float32 (P_b, 5)  x y z intensity ring in the LiDAR ego frame, the
                                              current + previous sweeps merged, bda applied
  sparse_depth   float32 (B, N, H, W)        metres from the current sweep only, 0 = none (each
                                              point projected with its camera's time-compensated
                                              pose: LiDAR ego -> key ego -> camera)
  -- training targets (absent at inference) --
  voxel_semantics int64 (B, 200, 200, 16)    Occ3D labels, [x][y][z], bda applied
  mask_camera    bool  (B, 200, 200, 16)
  mask_lidar     bool  (B, 200, 200, 16)
  seg_labels     int64 (B, N, H, W)          2D labels from lidarseg, 17 = no label

Frames (as BEVDet4D's `prepare_inputs`, which FusionOcc inherits):
* key ego frame = the ego frame at the stamp of the key frame's FIRST camera
  (cfg.data.cameras[0] = CAM_FRONT_LEFT). Every camera of every frame t is expressed in it:
  sensor2ego[t, n] = inv(ego2global(t_cam[0, 0])) @ ego2global(t_cam[t, n]) @ cam2ego[n], each
  camera with the ego pose at its own stamp. The lifted image volume lives in this frame.
* LiDAR ego frame = the ego frame at the LiDAR stamp of the current sweep. The points, the LiDAR
  volume, the ground truth and the outputs live in it. In nuScenes the two stamps are ~40 ms
  apart; the official model concatenates the two volumes without correcting for it, and so do we.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CameraFrame:
    """Six camera images taken around one stamp, with calibration in the current key ego frame."""

    images: list[np.ndarray]  # 6 x (H, W, 3) uint8 RGB, source resolution, CAMERA_NAMES order
    intrinsics: np.ndarray  # (6, 3, 3) float
    # (6, 4, 4) float: camera optical frame at its stamp -> key ego frame (ego at the stamp of the
    # current key frame's first camera, CAM_FRONT_LEFT), also for previous frames
    sensor2ego: np.ndarray
    stamp_ns: int = 0  # stamp of the frame (mean camera stamp); keys the predictor's feature cache


@dataclass
class FrameSet:
    """One synchronized input for the predictor (raw, not augmented, not normalised)."""

    stamp_ns: int  # LiDAR stamp of the current sweep: the output's stamp
    cameras: CameraFrame
    # previous key-frames (~0.5 s apart, newest first), sensor2ego expressed in the *current*
    # key ego frame; empty at start-up (the predictor then repeats the current frame, as the
    # dataset does at a scene start)
    previous: list[CameraFrame] = field(default_factory=list)
    # (P, 5) float32 x y z intensity ring in the LiDAR ego frame: current + previous sweeps
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    # (Q, 5) float32: the current sweep alone in the LiDAR ego frame (for sparse depth)
    key_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    # (4, 4) key ego frame -> LiDAR ego frame (ego at the first camera's stamp -> ego at stamp_ns);
    # None = the two coincide (a static ego, or a producer without odometry)
    keyego2lidarego: np.ndarray | None = None

    def sensor2lidarego(self, sensor2ego: np.ndarray) -> np.ndarray:
        """Cameras (N, 4, 4) given in the key ego frame -> (N, 4, 4) float64 in the LiDAR ego frame,
        to project the LiDAR-ego `key_points` into them (sparse depth); ValueError if the frame
        set's keyego2lidarego is not a finite rigid (4, 4) transform."""
        s2e = np.asarray(sensor2ego, np.float64)
        if self.keyego2lidarego is None:
            return s2e
        m = np.asarray(self.keyego2lidarego, np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all() or not np.allclose(m[3], (0, 0, 0, 1)) \
                or not np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-4):
            raise ValueError(f"frame_set.keyego2lidarego: expected a finite rigid (4, 4) transform, got {m.shape}")
        return m @ s2e

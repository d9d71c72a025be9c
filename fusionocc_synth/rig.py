"""The nuScenes sensor rig: LIDAR_TOP and six cameras with nuScenes calibration, rates and offsets.

Calibration values are those of the nuScenes `n015` vehicle (CAM_FRONT K = 1266.42 ...), so the
synthetic data exercise the same frames (LiDAR x pointing right, optical cameras) as real data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionocc_core.classes import CAMERA_NAMES, LIDAR_NAME
from fusionocc_core.data.poses import transform_matrix

IMAGE_WIDTH, IMAGE_HEIGHT = 1600, 900
KEYFRAME_PERIOD_US = 500_000  # 2 Hz samples
LIDAR_PERIOD_US = 50_000  # 20 Hz LIDAR_TOP
CAMERA_FRAMES_PER_KEYFRAME = 6  # 12 Hz cameras: 6 frames per 0.5 s
# Camera stamp minus the LiDAR stamp of the sweep that triggers it, in µs. nuScenes stamps a LiDAR
# scan at the END of its rotation and triggers each camera as the sweep crosses it, so the cameras
# lie BEFORE the LiDAR stamp: these are the key-frame offsets of nuScenes-mini scene-0061's first
# sample (LIDAR_TOP 1532402927647951; CAM_FRONT_LEFT 1532402927604844 = -43.1 ms ... CAM_BACK_LEFT
# 1532402927647423 = -0.5 ms). The node's sync window [-60, +10] ms is sized for them.
CAMERA_TRIGGER_OFFSET_US: dict[str, int] = {
    "CAM_FRONT_LEFT": -43_100,
    "CAM_FRONT": -35_500,
    "CAM_FRONT_RIGHT": -27_600,
    "CAM_BACK_RIGHT": -20_100,
    "CAM_BACK": -10_400,
    "CAM_BACK_LEFT": -500,
}


@dataclass(frozen=True)
class SensorCalibration:
    """One `calibrated_sensor` record: sensor -> ego translation, rotation (w x y z), intrinsics."""

    channel: str
    modality: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    intrinsic: tuple[tuple[float, ...], ...] = ()

    @property
    def sensor2ego(self) -> np.ndarray:
        """(4, 4) sensor -> ego transform."""
        return transform_matrix(self.translation, self.rotation)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) camera matrix."""
        return np.asarray(self.intrinsic, np.float64)


def _cam(name: str, t: tuple, q: tuple, f: float, cx: float, cy: float) -> SensorCalibration:
    return SensorCalibration(name, "camera", t, q, ((f, 0.0, cx), (0.0, f, cy), (0.0, 0.0, 1.0)))


LIDAR_CALIBRATION = SensorCalibration(
    LIDAR_NAME, "lidar", (0.943713, 0.0, 1.84023),
    (0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817))

_CAMERAS = (
    _cam("CAM_FRONT_LEFT", (1.52387798135, 0.494631336551, 1.50932822144),
         (0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068),
         1272.5979470598488, 826.6154927353808, 479.75165386361925),
    _cam("CAM_FRONT", (1.70079118954, 0.0159456324149, 1.51095763913),
         (0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755),
         1266.417203046554, 816.2670197447984, 491.50706579294757),
    _cam("CAM_FRONT_RIGHT", (1.5508477543, -0.493404796419, 1.49574800619),
         (0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485),
         1260.8474446004698, 807.968244525554, 495.3344268742088),
    _cam("CAM_BACK_LEFT", (1.03569100218, 0.484795032713, 1.59097014818),
         (0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753),
         1256.7414812095406, 792.1125740759628, 492.7757465151356),
    _cam("CAM_BACK", (0.0283260309358, 0.00345136761476, 1.57910346144),
         (0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578),
         809.2209905677063, 829.2196003259838, 481.77842384512485),
    _cam("CAM_BACK_RIGHT", (1.0148780988, -0.480568219723, 1.56239545128),
         (0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798),
         1259.5137405846733, 807.2529053838625, 501.19579884916527),
)
CAMERA_CALIBRATIONS: dict[str, SensorCalibration] = {c.channel: c for c in _CAMERAS}
assert tuple(CAMERA_CALIBRATIONS) == CAMERA_NAMES

# HDL-32E: 32 rings from +10.67 deg down to -30.67 deg; ~1085 firings per revolution.
LIDAR_ELEVATIONS_DEG: np.ndarray = np.linspace(-30.67, 10.67, 32)  # ring 0 = lowest beam
LIDAR_AZIMUTH_STEPS = 1085
LIDAR_MAX_RANGE = 80.0

"""fusionocc_synth: a synthetic street world written in the exact nuScenes + Occ3D on-disk
format (tables, JPEGs, LIDAR_TOP .pcd.bin, lidarseg, maps, gts/), for tests, demos and CI.

`generate(out_dir, scenes, keyframes, seed, sweeps, version)` is the API; `fusionocc-synth` the CLI.
"""
from __future__ import annotations

from fusionocc_synth.generate import SceneSpec, generate
from fusionocc_synth.world import World, build_world

__all__ = ["generate", "build_world", "World", "SceneSpec", "scene_world"]


def scene_world(seed: int, scene_index: int, keyframes: int) -> World:
    """The world of scene `scene_index` of a dataset generated with (seed, keyframes)."""
    return build_world(seed, scene_index, (keyframes - 1) * 0.5 + 0.1)

"""Pictures of occupancy: a bird's-eye view coloured with the class palette, and a comparison figure.

The BEV shows, per (x, y) column, the class of the highest non-free voxel (free columns white),
with +x up and +y left as seen from above the ego vehicle, like rviz2 with a top-down view.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fusionocc_core.classes import CLASS_NAMES, FREE_LABEL, PALETTE


def top_labels(labels: np.ndarray, free_label: int = FREE_LABEL) -> np.ndarray:
    """(X, Y, Z) labels -> (X, Y) label of the highest non-free voxel per column (free if none)."""
    occupied = labels != free_label  # (X, Y, Z)
    z_top = labels.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # (X, Y) highest occupied z
    top = np.take_along_axis(labels, z_top[..., None], axis=2)[..., 0]
    return np.where(occupied.any(axis=2), top, free_label).astype(np.uint8)


def bev_image(labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(X, Y, Z) labels -> (X, Y, 3) uint8 RGB; +x points up, +y left. Masked-out columns grey."""
    rgb = PALETTE[top_labels(labels)]  # (X, Y, 3)
    if mask is not None:
        rgb = np.where(mask.any(axis=2)[..., None], rgb, np.uint8(200))
    return np.ascontiguousarray(rgb[::-1, ::-1])  # row 0 = +x far end, column 0 = +y


def save_comparison(panels: Sequence[tuple[str, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Save BEV pictures of several (title, labels) side by side with a class legend, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 2.2, 5.6))
    axes = np.atleast_1d(axes)
    present: set[int] = set()
    for ax, (name, labels) in zip(axes, panels):
        ax.imshow(bev_image(labels), extent=(40, -40, -40, 40), interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("y [m]")
        ax.set_ylabel("x [m]")
        present |= set(np.unique(labels).tolist())
    handles = [Patch(color=PALETTE[i] / 255.0, label=CLASS_NAMES[i]) for i in sorted(present) if i != FREE_LABEL]
    fig.legend(handles=handles, loc="center right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path

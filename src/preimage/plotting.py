"""The drawing every stage shares: the image grid of every analysis figure, its titles, the fixed
test images each figure shows, and the atomic PNG writer.

Used by the figures (:mod:`preimage.figures`) and by the stages that draw their own figure
(:mod:`preimage.analyses`, :mod:`preimage.baselines`, :mod:`preimage.locality`,
:mod:`preimage.invert`), so none of them depends on another stage to draw. matplotlib runs headless
(Agg).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from preimage import atomic_files  # noqa: E402


def show_indices(count: int, n_show: int) -> np.ndarray:
    """The fixed test images shown in every figure: evenly spaced over the test set."""
    return np.unique(np.linspace(0, count - 1, min(n_show, count)).round().astype(int))


def analysis_title(representation_name: str, label: str, what: str) -> str:
    """``"<representation>: <what> — <label>"`` (the label, e.g. the network's weights, only when
    it says more than the name)."""
    return f"{representation_name}: {what}" + (f" — {label}" if label and label != representation_name else "")


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _hwc(image: np.ndarray) -> np.ndarray:
    return np.asarray(image).transpose(1, 2, 0)


def image_grid(rows: Sequence[Tuple[str, np.ndarray]], path: str | os.PathLike, title: Optional[str] = None) -> None:
    """A grid with one labelled row per entry of ``rows`` = [(label, uint8 (k, 3, S, S)), …]."""
    n_rows = len(rows)
    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols + 1.2, 1.3 * n_rows + (0.4 if title else 0)),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(_hwc(images[c]), interpolation="nearest")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    save_figure(fig, path)

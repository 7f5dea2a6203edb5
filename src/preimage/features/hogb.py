"""HOGb: UoCTTI HOG with bilinear orientation assignment (Mahendran & Vedaldi's "HOGb").

Mahendran & Vedaldi (CVPR 2015, §3 and their shallow experiments) invert two HOG variants: HOG as
``vl_hog`` computes it, where each gradient votes for its nearest orientation bin, and "HOGb",
where the vote is split between the two nearest bins in proportion to the angular distance.
HOGb is smooth in the gradient angle, so the derivative of the features reaches the image through
the orientation as well, not only through the gradient magnitudes; they find it inverts to a
lower feature-space error than HOG.

This module is :mod:`preimage.features.hog` (the same grey image, gradients, cell grid, bilinear
spatial votes, UoCTTI block normalisation and 31 channels) with one change, the orientation
binning:

* the directed angle of the gradient in bin units, ``t = atan2(gy, gx) · 9/π`` (bin ``k`` centred
  at ``kπ/9``, 18 directed bins over the circle, y axis pointing down), votes
  ``(1 − frac t)·|g|`` to bin ``floor t`` and ``frac t · |g|`` to the next bin (mod 18);
* this is what VLFeat computes with ``vl_hog_set_use_bilinear_orientation_assignments(true)``
  (the nearest bin gets ``1 − θ/(π/9)``, the second nearest ``θ/(π/9)``, with θ the angle to the
  nearest bin centre); ``tests/test_hogb.py`` compares with it through ctypes, checks that the
  two assignments agree for gradients at the bin centres and checks the derivative numerically.

What is M&V's and what is ours: the bilinear orientation assignment and its use for inversion
are M&V's (their ``hog_net(…, 'bilinearOrientations', true)``). Their network drops the four
texture channels of UoCTTI HOG and normalises blocks with its own epsilon; we keep VLFeat's
31-channel UoCTTI output, so that HOGb differs from our HOG in the orientation binning only.

Differentiability: everywhere except where the gradient vanishes (there the derivative is taken
as zero; see :func:`preimage.features.hog.gradient_magnitude`) and at the 0.2 truncation kinks.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

from preimage.deferred import torch
from preimage.features.base import Representation, register
from preimage.features.hog import (
    _N_CODES, GRAY_WEIGHTS, HOG_DIM, NUM_ORIENTATIONS, _spatial_plan, hog_from_histograms, hog_grid, image_gradients,
)

__all__ = ["HOGB", "hogb", "orientation_votes"]

_DIRECTED = 2 * NUM_ORIENTATIONS  # 18


def orientation_votes(gx: torch.Tensor, gy: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear orientation assignment: ``(low, high, w_high)``, the two directed bins (int64 in
    ``0..17``) a gradient votes for and the fraction of its magnitude that goes to ``high``
    (``1 − w_high`` goes to ``low``). Differentiable in ``w_high``; at a zero gradient the angle
    is taken as 0 with a zero derivative."""
    zero = (gx == 0) & (gy == 0)
    angle = torch.atan2(torch.where(zero, torch.zeros_like(gy), gy), torch.where(zero, torch.ones_like(gx), gx))
    t = angle * (NUM_ORIENTATIONS / math.pi)  # (-9, 9]
    with torch.no_grad():
        low_f = torch.floor(t)
    w_high = t - low_f
    low = low_f.long() % _DIRECTED
    return low, (low + 1) % _DIRECTED, w_high


def _histograms(images: torch.Tensor, cell: int, hh: int, hw: int) -> torch.Tensor:
    """Directed orientation histograms ``(N, 18, hh, hw)`` with bilinear orientation votes."""
    n = images.shape[0]
    height, width = images.shape[-2:]
    gray, gx, gy, mag = image_gradients(images)
    low, high, w_high = orientation_votes(gx, gy)

    # hog.py's scatter plan: code c lands in plane c - 9; directed bin b uses code b + 9
    plane = (hh + 2) * (hw + 2)
    base, weights, offsets = _spatial_plan(n, height, width, cell, gray.device, gray.dtype)
    size = n * _N_CODES * plane
    flat = torch.zeros(size + offsets[-1], device=gray.device, dtype=gray.dtype)
    for bins, share in ((low, mag * (1 - w_high)), (high, mag * w_high)):
        with torch.no_grad():
            index = torch.add(base, (bins + NUM_ORIENTATIONS).to(base.dtype), alpha=plane).long().view(-1)
        for corner, offset in enumerate(offsets):
            flat = flat.index_add(0, index + offset, (share * weights[corner]).view(-1))
    h = flat[:size].view(n, _N_CODES, hh + 2, hw + 2)
    return h[:, :_DIRECTED, 1:-1, 1:-1]


def hogb(images: torch.Tensor, cell_size: int = 8) -> torch.Tensor:
    """UoCTTI HOG with bilinear orientation assignment, as VLFeat ``vl_hog`` with
    ``vl_hog_set_use_bilinear_orientation_assignments(true)``; see the module docstring.

    ``images``: float ``(N, 3, H, W)`` RGB in ``[0, 1]`` (or ``(N, 1, H, W)`` grey). Returns
    ``(N, 31, (H + cell//2)//cell, (W + cell//2)//cell)``; differentiable w.r.t. ``images``.
    """
    return hog_from_histograms(images, cell_size, _histograms, "hogb")


@register("hogb")
class HOGB(Representation):
    """UoCTTI HOG (31 channels) with bilinear orientation assignment; parameter ``cell_size``
    (default 8, as HOG)."""

    name = "hogb"
    family = "hogb"
    differentiable = True

    @classmethod
    def decoder_kind(cls, feature_shape) -> str:
        """As HOG: supplementary Table 3."""
        return "two_stream"

    def __init__(self, cell_size: int = 8, **params) -> None:
        if params:
            raise TypeError(f"unknown HOGb parameters: {sorted(params)}")
        super().__init__(cell_size=int(cell_size))
        self.cell_size = int(cell_size)

    def output_shape(self, height: int, width: int) -> Tuple[int, ...]:
        return (HOG_DIM, *hog_grid(height, width, self.cell_size))

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        return hogb(images, self.cell_size)

    def identity(self) -> Dict[str, str]:
        ident = super().identity()
        ident.update(implementation="preimage.features.hogb (VLFeat 0.9.21 vl_hog UoCTTI, bilinear orientations)",
                     gray_weights=",".join(str(w) for w in GRAY_WEIGHTS))
        return ident

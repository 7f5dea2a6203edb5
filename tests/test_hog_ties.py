"""HOG orientation binning at bin edges: VLFeat's float32 tie-break (``preimage.features.hog``).

VLFeat's ``vl_hog`` picks a pixel's orientation bin by scoring the raw gradient against the nine
bin directions, ``score_k = gx * cos(k pi/9) + gy * sin(k pi/9)`` in float32, and keeps the first
(lowest ``k``) of the largest ``|score_k|``. For gradients on or within a few float32 ulps of a bin
edge this rounding decides the bin; scoring the unit vector ``g / |g|`` instead rounds
differently and moved about one pixel in 50 photographs, changing the features of the cells
around it by up to ~7e-2. The gradients below are generated on the 18 bin edges (a few ulps
either way), so they exercise exactly those pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preimage.features.hog import NUM_ORIENTATIONS, _orientation_codes, hog
from preimage.reference import vlfeat_hog

needs_vlfeat = pytest.mark.skipif(
    not vlfeat_hog.available(), reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat1)"
)

_ANGLES = np.arange(NUM_ORIENTATIONS) * math.pi / NUM_ORIENTATIONS
_COS = np.cos(_ANGLES).astype(np.float32)
_SIN = np.sin(_ANGLES).astype(np.float32)


def reference_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """VLFeat's rule written out: float32 scores of the raw gradient, bins visited in order
    ``k = 0..8``, the best replaced only by a strictly larger ``|score|``; ``+9`` if negative."""
    gx, gy = np.asarray(gx, np.float32), np.asarray(gy, np.float32)
    best = np.full(gx.shape, -1.0, np.float32)
    bins = np.zeros(gx.shape, np.int64)
    for k in range(NUM_ORIENTATIONS):
        score = gx * _COS[k] + gy * _SIN[k]  # two float32 products, one float32 sum
        better = np.abs(score) > best
        best = np.where(better, np.abs(score), best)
        bins = np.where(better, k + NUM_ORIENTATIONS * (score < 0), bins)
    return bins


def unit_vector_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The same rule applied to ``g / |g|``: a different rounding, not VLFeat's."""
    gx, gy = np.asarray(gx, np.float32), np.asarray(gy, np.float32)
    norm = np.maximum(np.sqrt(gx * gx + gy * gy), np.float32(1e-10))
    return reference_bins(gx / norm, gy / norm)


def exact_ties(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Where the two largest ``|score_k|`` are equal in float32."""
    scores = np.abs(gx[:, None] * _COS + gy[:, None] * _SIN)
    top = np.sort(scores, axis=1)
    return top[:, -1] == top[:, -2]


def edge_gradients(radii=(0.03, 0.05, 0.1, 0.2, 0.3, 0.45), ulps: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Float32 gradients on all 18 directed bin edges ``(2j+1) pi/18`` of the given lengths, and
    their neighbours up to ``ulps`` float32 steps away in ``gx`` and in ``gy``."""
    edges = (np.arange(2 * NUM_ORIENTATIONS) + 0.5) * math.pi / NUM_ORIENTATIONS
    radii = np.asarray(radii)[:, None]
    gx0 = (radii * np.cos(edges)).astype(np.float32).ravel()
    gy0 = (radii * np.sin(edges)).astype(np.float32).ravel()
    steps = np.arange(-ulps, ulps + 1, dtype=np.int32)
    gx = (gx0.view(np.int32)[:, None, None] + steps[None, :, None]).view(np.float32)
    gy = (gy0.view(np.int32)[:, None, None] + steps[None, None, :]).view(np.float32)
    gx, gy = np.broadcast_arrays(gx, gy)
    return gx.ravel().copy(), gy.ravel().copy()


def _codes(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    code = _orientation_codes(torch.from_numpy(gx).view(1, 1, -1), torch.from_numpy(gy).view(1, 1, -1))
    return code.view(-1).long().numpy() % (2 * NUM_ORIENTATIONS)


def test_edge_gradients_exercise_the_rounding():
    """The generated set holds exact ties and gradients where scoring ``g/|g|`` picks another bin."""
    gx, gy = edge_gradients()
    assert exact_ties(gx, gy).sum() > 100
    assert (reference_bins(gx, gy) != unit_vector_bins(gx, gy)).sum() > 100


def test_bins_at_edges_follow_vlfeats_rule():
    gx, gy = edge_gradients()
    assert np.array_equal(_codes(gx, gy), reference_bins(gx, gy))


def test_exact_ties_go_to_the_first_bin():
    gx, gy = edge_gradients()
    tie = exact_ties(gx, gy)
    gx, gy = gx[tie], gy[tie]
    scores = np.abs(gx[:, None] * _COS + gy[:, None] * _SIN)
    top = scores.max(axis=1, keepdims=True)
    first = np.argmax(scores == top, axis=1)  # the lowest k reaching the maximum
    assert ((scores == top).sum(axis=1) == 2).all()  # two bins tie
    assert np.array_equal(_codes(gx, gy) % NUM_ORIENTATIONS, first)


def test_vertical_gradient_ties_to_bin_4():
    """``gx == 0`` scores ``gy * sin(4 pi/9)`` and ``gy * sin(5 pi/9)``: equal floats, so bin 4
    (pointing down, ``gy > 0``) or its opposite 13 (``gy < 0``)."""
    gy = np.array([1e-6, 0.01, 1 / 255, 0.3, 1.0, -1e-6, -0.01, -1 / 255, -0.3, -1.0], np.float32)
    gx = np.zeros_like(gy)
    assert np.array_equal(_codes(gx, gy), np.where(gy > 0, 4, 13))
    assert np.array_equal(reference_bins(gx, gy), np.where(gy > 0, 4, 13))


def tie_image(gx: np.ndarray, gy: np.ndarray, spacing: int = 4) -> torch.Tensor:
    """A grey ``(1, 1, S, S)`` image, zero except around pixels on a grid of ``spacing`` whose
    central differences are exactly ``(gx[i], gy[i])``: the right/left neighbour holds
    ``max(gx, 0)`` / ``max(-gx, 0)`` (and likewise below/above), so the float32 difference is exact."""
    count = len(gx)
    per_row = math.ceil(math.sqrt(count))
    size = per_row * spacing + 2
    image = np.zeros((size, size), np.float32)
    for i in range(count):
        y, x = 2 + (i // per_row) * spacing, 2 + (i % per_row) * spacing
        image[y, x + 1], image[y, x - 1] = max(gx[i], 0), max(-gx[i], 0)
        image[y + 1, x], image[y - 1, x] = max(gy[i], 0), max(-gy[i], 0)
    return torch.from_numpy(image).view(1, 1, size, size)


def test_tie_image_has_the_gradients():
    gx, gy = edge_gradients(radii=(0.2,), ulps=1)
    image = tie_image(gx, gy)[0, 0]
    per_row = math.ceil(math.sqrt(len(gx)))
    for i in range(len(gx)):
        y, x = 2 + (i // per_row) * 4, 2 + (i % per_row) * 4
        assert image[y, x + 1] - image[y, x - 1] == gx[i]
        assert image[y + 1, x] - image[y - 1, x] == gy[i]


@needs_vlfeat
@pytest.mark.parametrize("kind", ["rounding", "exact_ties"])
def test_matches_vlfeat_on_edge_gradients(kind):
    """Images made of edge gradients: VLFeat's features within float rounding (< 2e-6)."""
    gx, gy = edge_gradients()
    chosen = reference_bins(gx, gy) != unit_vector_bins(gx, gy) if kind == "rounding" else exact_ties(gx, gy)
    gx, gy = gx[chosen], gy[chosen]
    image = tie_image(gx, gy)
    ours = hog(image)[0].numpy()
    ref = vlfeat_hog.vl_hog(image[0, 0].numpy(), 8)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 2e-6
    assert ref.max() > 0.1

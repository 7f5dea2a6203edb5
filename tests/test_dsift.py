"""Dense SIFT (preimage.features.dsift) against VLFeat's vl_dsift, and its derivative.

Agreement with ``libvl``: our descriptors use VLFeat's fast atan2 and its square-root floor, so
they agree with ``vl_dsift`` to float rounding (measured max |difference| about 5e-6 on 64-128 px
photographs; values lie in [0, 1]). The brief's criterion is a correlation of at least 0.99;
the tests assert that and a max |difference| below 1e-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preimage.features import create, lookup
from preimage.features.dsift import DSIFT_DIM, dsift, dsift_grid, fast_atan2
from preimage.features.hog import rgb_to_gray
from preimage.reference import vlfeat_dsift

needs_vlfeat = pytest.mark.skipif(not vlfeat_dsift.available(),
                                  reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat1)")


def _photo(name: str, size: tuple[int, int]) -> torch.Tensor:
    import skimage.data
    from skimage.transform import resize

    image = resize(getattr(skimage.data, name)(), size, anti_aliasing=True)
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _as_vlfeat_rows(features: torch.Tensor) -> np.ndarray:
    """(1, 128, rows, cols) → (rows*cols, 128), frames row by row as vl_dsift orders them."""
    return features[0].permute(1, 2, 0).reshape(-1, DSIFT_DIM).numpy()


@needs_vlfeat
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("size,bin_size,step", [((64, 64), 4, 4), ((100, 80), 5, 5), ((96, 96), 3, 2),
                                                 ((70, 90), 5, 3)])
def test_matches_vlfeat_dsift(name, size, bin_size, step):
    image = _photo(name, size)
    ours = _as_vlfeat_rows(dsift(image, bin_size, step))
    frames, ref = vlfeat_dsift.vl_dsift(rgb_to_gray(image)[0].numpy(), step, bin_size)
    assert ours.shape == ref.shape
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.99
    assert np.abs(ours - ref).max() < 1e-4
    # the frame centres: the upper-left bin centre on the step grid, plus 1.5 bins
    rows, cols = dsift_grid(*size, bin_size, step)
    assert frames[0].tolist() == [1.5 * bin_size, 1.5 * bin_size]
    assert frames[-1].tolist() == [(cols - 1) * step + 1.5 * bin_size, (rows - 1) * step + 1.5 * bin_size]


@pytest.mark.parametrize("height,width,bin_size,step",
                         [(64, 64, 5, 5), (64, 64, 4, 4), (13, 20, 4, 1), (256, 256, 5, 5)])
def test_grid_and_output_shape(height, width, bin_size, step):
    rows, cols = (height - 1 - 3 * bin_size) // step + 1, (width - 1 - 3 * bin_size) // step + 1
    rep = create("dsift", bin_size=bin_size, step=step)
    assert rep.output_shape(height, width) == (128, rows, cols)
    if height * width <= 64 * 64:
        out = rep(torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0)))
        assert out.shape == (2, 128, rows, cols) and torch.isfinite(out).all()


def test_too_small_images_and_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="too small"):
        dsift(torch.rand(1, 3, 15, 40), bin_size=5)  # a descriptor needs 16 px
    with pytest.raises(ValueError):
        create("dsift", bin_size=0)
    with pytest.raises(TypeError):
        create("dsift", cell_size=4)


def test_descriptors_are_sift_normalised():
    out = dsift(_photo("astronaut", (64, 64)), 4, 4)[0].flatten(1)  # (128, cells)
    norms = out.norm(dim=0)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)  # textured: every descriptor unit norm
    assert (out >= 0).all() and out.max() < 0.35  # clamped at 0.2 before the second normalisation
    flat = dsift(torch.full((1, 3, 32, 32), 0.4), 4, 4)
    assert torch.equal(flat, torch.zeros_like(flat))  # no gradient, no descriptor


def test_fast_atan2_is_close_and_continuous():
    gen = torch.Generator().manual_seed(1)
    y, x = torch.randn(50_000, generator=gen), torch.randn(50_000, generator=gen)
    assert (fast_atan2(y, x) - torch.atan2(y, x)).abs().max() < 0.01
    # continuous across the branch at x = 0 and at the axes
    t = torch.tensor([0.0, 1e-6, -1e-6])
    assert fast_atan2(torch.ones(3), t).sub(math.pi / 2).abs().max() < 1e-4
    assert fast_atan2(t, torch.ones(3)).abs().max() < 1e-4


def test_rotating_the_image_by_90_degrees_shifts_orientations_by_two_bins():
    """A 90° turn (anticlockwise on screen) maps a gradient at angle θ (y down) to θ − 90°: two of
    the 8 bins; on a square image with a symmetric grid the descriptor of the turned image's
    cell is the original's with permuted spatial bins and orientations."""
    image = _photo("coffee", (37, 37))  # 3·bin_size + 1 = 37: one descriptor over the whole image
    a = dsift(image, 12, 1)[0, :, 0, 0].view(4, 4, 8)  # (by, bx, t)
    b = dsift(torch.rot90(image, 1, dims=(-2, -1)), 12, 1)[0, :, 0, 0].view(4, 4, 8)
    # pixel (y, x) of the turned image is pixel (x, W-1-y) of the original
    expected = torch.roll(a.permute(1, 0, 2).flip(0), shifts=-2, dims=-1)
    assert torch.allclose(b, expected, atol=2e-3)


def test_gradcheck_on_a_tiny_image():
    # a grey 12x11 image, 2x2 descriptors (bin size 3, step 2): every stage, both normalisations
    x = torch.rand(1, 1, 12, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda im: dsift(im, 3, 2), (x,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_registered_with_family_decoder_and_differentiability():
    cls = lookup("dsift")
    assert cls.family == "dsift" and cls.differentiable
    assert cls.decoder_kind((128, 12, 12)) == "sift"
    assert create("dsift").identity()["bin_size"] == "5"

"""HOG with bilinear orientation assignment (preimage.features.hogb): its derivation and VLFeat.

VLFeat computes the bilinear weights as ``acos`` of a float32 score, which loses precision near a
bin centre (measured max |ours − vlfeat| about 1e-4, values in [0, 0.42]); ours uses the angle
directly. The tolerance below is 5e-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preimage.features import create, lookup
from preimage.features.hog import HOG_DIM, hog, rgb_to_gray
from preimage.features.hogb import _histograms, hogb, orientation_votes
from preimage.reference import vlfeat_hog

needs_vlfeat = pytest.mark.skipif(not vlfeat_hog.available(),
                                  reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat1)")


def _photo(name: str, size: tuple[int, int]) -> torch.Tensor:
    import skimage.data
    from skimage.transform import resize

    image = resize(getattr(skimage.data, name)(), size, anti_aliasing=True)
    image = np.round(image * 255.0) / 255.0  # as images from the uint8 store
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _ramp(angle: float, size: int = 24) -> torch.Tensor:
    """A grey linear ramp whose gradient points at ``angle`` (y axis down): every interior
    gradient is the same vector."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    image = 0.5 + 0.01 * (math.cos(angle) * x + math.sin(angle) * y)
    return image.float().view(1, 1, size, size)


def test_orientation_votes_split_linearly_between_the_two_nearest_bins():
    step = math.pi / 9
    angles = torch.tensor([0.0, 0.25 * step, 0.5 * step, 3.75 * step, -0.5 * step, math.pi, -math.pi + 0.1 * step],
                          dtype=torch.float64)
    low, high, w_high = orientation_votes(torch.cos(angles), torch.sin(angles))
    assert low.tolist() == [0, 0, 0, 3, 17, 9, 9]
    assert high.tolist() == [1, 1, 1, 4, 0, 10, 10]
    assert w_high.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 0.5, 0.0, 0.1], abs=1e-9)
    zero = orientation_votes(torch.zeros(1), torch.zeros(1))
    assert zero[2].item() == 0.0


@pytest.mark.parametrize("k", range(18))
def test_bilinear_equals_hard_binning_at_the_bin_centres(k):
    """A gradient exactly at a bin centre gives all its vote to that bin in both assignments."""
    image = _ramp(k * math.pi / 9)
    torch.testing.assert_close(hogb(image, 4), hog(image, 4), atol=2e-5, rtol=0)


def test_between_two_centres_the_vote_is_split():
    """Half-way between bins 2 and 3 the (unnormalised) directed histograms of HOGb are the average
    of those of the two centres (the ramps' gradients have the same length)."""
    half, two, three = (_histograms(_ramp(a * math.pi / 9), 4, 6, 6) for a in (2.5, 2.0, 3.0))
    torch.testing.assert_close(half, 0.5 * (two + three), atol=1e-6, rtol=1e-5)
    assert (half[:, 2] > 0).all()
    torch.testing.assert_close(half[:, 2], half[:, 3], atol=1e-6, rtol=1e-5)
    assert half[:, [b for b in range(18) if b not in (2, 3)]].abs().max() == 0


@needs_vlfeat
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("size,cell", [((64, 64), 4), ((67, 83), 8), ((100, 60), 5)])
def test_matches_vlfeat_bilinear_orientations(name, size, cell):
    image = _photo(name, size)
    ours = hogb(image, cell)[0].numpy()
    ref = vlfeat_hog.vl_hog(rgb_to_gray(image)[0].numpy(), cell, bilinear=True)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 5e-4
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.9999
    hard = vlfeat_hog.vl_hog(rgb_to_gray(image)[0].numpy(), cell)
    assert np.abs(ours - hard).max() > 0.05  # a different representation from HOG


def test_gradient_reaches_the_image_through_the_orientation():
    """Rotating a ramp changes only the gradient angle; the derivative of HOGb's bin-2 votes along
    that change is that of the linear split, −|g|·(9/π) per pixel (HOG's hard binning gives none:
    piecewise constant in the angle)."""
    angle = torch.tensor(2.3 * math.pi / 9, dtype=torch.float64, requires_grad=True)
    y, x = torch.meshgrid(torch.arange(16, dtype=torch.float64), torch.arange(16, dtype=torch.float64), indexing="ij")
    image = (0.5 + 0.01 * (torch.cos(angle) * x + torch.sin(angle) * y)).view(1, 1, 16, 16)
    hist = _histograms(image, 4, 4, 4)[0].sum(dim=(1, 2))  # every interior pixel: 0.7 to bin 2, 0.3 to bin 3
    total = hist.sum()  # |g| times the spatial weights that land on the grid, the same for every angle
    assert (hist[2] / total).item() == pytest.approx(0.7, abs=1e-9) and (hist[3] / total).item() == pytest.approx(0.3)
    (derivative,) = torch.autograd.grad(hist[2], angle)
    assert derivative.item() == pytest.approx(-total.item() * 9 / math.pi, rel=1e-6)


def test_gradcheck_on_a_tiny_image():
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda im: hogb(im, 4), (x,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_registered_shape_and_parameters():
    cls = lookup("hogb")
    assert cls.family == "hogb" and cls.differentiable and cls.decoder_kind((31, 8, 8)) == "two_stream"
    rep = create("hogb", cell_size=4)
    out = rep(torch.rand(2, 3, 35, 41, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, HOG_DIM, 9, 10) == (2, *rep.output_shape(35, 41))
    with pytest.raises(TypeError):
        create("hogb", bin_size=4)

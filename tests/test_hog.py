"""Tests of the PyTorch UoCTTI HOG (``preimage.features.hog``) against VLFeat's ``vl_hog``.

Tolerance vs VLFeat: ``max |ours - vlfeat| < 2e-6`` (features lie in ``[0, 0.42]``). Both
compute in float32 on the same grey image; they differ only by float rounding and summation
order (VLFeat accumulates the votes pixel by pixel and normalises in double), which gives
errors of about ``1e-7``. The orientation bin of every pixel is VLFeat's (a single pixel in
the wrong bin would move a feature by ~1e-3 or more, far above the tolerance).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preimage.features import create
from preimage.features.hog import HOG, HOG_DIM, _orientation_codes, _vlfeat_bins, hog, hog_grid, rgb_to_gray
from preimage.reference import vlfeat_hog

VLFEAT_TOL = 2e-6


def _photo(name: str, size: tuple[int, int], quantise: bool) -> torch.Tensor:
    """A scikit-image sample photograph resized to ``size`` as a (1, 3, H, W) tensor in [0, 1]."""
    import skimage.data
    from skimage.transform import resize

    image = getattr(skimage.data, name)()
    image = resize(image, size, anti_aliasing=True, preserve_range=False)
    if quantise:  # as images coming from the uint8 store: many exactly vertical gradients
        image = np.round(image * 255.0) / 255.0
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _noise(size: tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3) + size, generator=gen)


def _vlfeat(image: torch.Tensor, cell_size: int = 8) -> np.ndarray:
    # VLFeat is fed exactly our float32 grey image, on the same [0, 1] scale.
    return vlfeat_hog.vl_hog(rgb_to_gray(image)[0].numpy(), cell_size)


needs_vlfeat = pytest.mark.skipif(
    not vlfeat_hog.available(), reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat1)"
)


@pytest.mark.parametrize(
    "height,width", [(64, 64), (67, 67), (100, 60), (60, 100), (256, 256), (35, 41), (12, 9)]
)
def test_output_shape(height, width):
    rep = HOG()
    out = rep(torch.rand(2, 3, height, width))
    hh, hw = (height + 4) // 8, (width + 4) // 8  # VLFeat's cell count
    assert out.shape == (2, HOG_DIM, hh, hw)
    assert rep.output_shape(height, width) == (HOG_DIM, hh, hw)
    assert hog_grid(height, width) == (hh, hw)
    assert torch.isfinite(out).all()


def test_paper_shape_256():
    assert HOG().output_shape(256, 256) == (31, 32, 32)


@needs_vlfeat
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("size", [(256, 256), (67, 67), (100, 60), (64, 64)])
@pytest.mark.parametrize("quantise", [False, True])
def test_matches_vlfeat_photos(name, size, quantise):
    image = _photo(name, size, quantise)
    ours = hog(image)[0].numpy()
    ref = _vlfeat(image)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < VLFEAT_TOL
    assert ref.max() > 0.1  # a real, textured image


@needs_vlfeat
@pytest.mark.parametrize("size,seed", [((75, 81), 0), ((64, 64), 1), ((131, 97), 2)])
def test_matches_vlfeat_noise(size, seed):
    image = _noise(size, seed)
    ref = _vlfeat(image)
    ours = hog(image)[0].numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < VLFEAT_TOL


@needs_vlfeat
@pytest.mark.parametrize("cell_size", [4, 5, 6, 16])
def test_matches_vlfeat_cell_sizes(cell_size):
    image = _photo("astronaut", (70, 83), quantise=True)
    ours = hog(image, cell_size=cell_size)[0].numpy()
    ref = _vlfeat(image, cell_size)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < VLFEAT_TOL


@needs_vlfeat
def test_matches_vlfeat_flat_and_grey_input():
    flat = torch.full((1, 3, 40, 40), 0.5)
    assert np.abs(hog(flat)[0].numpy() - _vlfeat(flat)).max() == 0.0
    gray = _photo("coffee", (48, 72), quantise=True)
    gray1 = rgb_to_gray(gray).unsqueeze(1)  # (N, 1, H, W) input is taken as grey
    assert torch.equal(hog(gray1), hog(gray))


def test_orientation_bins_are_vlfeats():
    """The fast atan2 binning equals VLFeat's score-based rule on every pixel, including
    exactly vertical/horizontal/diagonal and quantised gradients (ties, near-ties)."""
    gen = torch.Generator().manual_seed(3)
    values = torch.arange(-6, 7, dtype=torch.float32) / 255.0
    gx, gy = torch.meshgrid(values, values, indexing="ij")
    grads = [
        (gx.reshape(-1), gy.reshape(-1)),  # quantised, incl. gx == 0 and gy == 0
        (torch.randn(200_000, generator=gen), torch.randn(200_000, generator=gen)),
    ]
    # gradients at (and within float noise of) every bin edge
    edges = (torch.arange(18, dtype=torch.float64) + 0.5) * math.pi / 9
    jitter = torch.linspace(-1e-5, 1e-5, 201, dtype=torch.float64)
    angle = (edges.view(-1, 1) + jitter.view(1, -1)).reshape(-1)
    grads.append((torch.cos(angle).float() * 0.3, torch.sin(angle).float() * 0.3))
    for gx, gy in grads:
        gx, gy = gx.contiguous().view(1, 1, -1), gy.contiguous().view(1, 1, -1)
        mag = torch.sqrt(gx * gx + gy * gy)
        keep = mag.view(-1) > 0
        code = _orientation_codes(gx, gy).view(-1).long() % 18
        ref = _vlfeat_bins(gx.view(-1), gy.view(-1))
        assert torch.equal(code[keep], ref[keep])


@pytest.mark.parametrize("name", ["coffee", "chelsea", "astronaut"])
@pytest.mark.parametrize("scale", [10.0, 0.1])
def test_brightness_invariance(name, scale):
    """Paper §4: HOG is (nearly) invariant to a global brightness scaling.

    HOG is homogeneous of degree 0 in the image except for the epsilon 1e-4 added to the
    squared block norms B: scaling the image by s changes a block's normalisation factor by the
    relative amount ~ (1e-4 / B) * |1 - 1/s^2| / 2. For a textured photo in [0, 1] B is ~0.1 to
    100, so x10 is practically exact (mean change ~1e-6) while x0.1 shows the epsilon in faint
    blocks (1e-4 / (0.01 B)). Measured (128 px): x10 max 3e-3 (astronaut's black background,
    where the epsilon already matters at x1), mean <= 2.3e-6; x0.1 max <= 7e-2 (astronaut), mean
    <= 1e-4. Tolerances: x10 mean < 1e-5 and max < 1e-2; x0.1 mean < 2e-4, 99th percentile
    < 2e-3 and max < 0.1 (features lie in [0, 0.42]). Rare orientation-bin flips from float
    rounding of the scaled image are included (VLFeat flips the same way).
    """
    image = _photo(name, (128, 128), quantise=False)
    base = hog(image)
    diff = (hog(image * scale) - base).abs()
    if scale > 1:
        assert diff.mean() < 1e-5
        assert diff.max() < 1e-2
    else:
        assert diff.mean() < 2e-4
        assert diff.flatten().quantile(0.99) < 2e-3
        assert diff.max() < 0.1
    assert base.abs().mean() > 0.01  # not trivially zero


def test_gradients_reach_the_image():
    image = _photo("chelsea", (64, 64), quantise=True).requires_grad_(True)
    out = hog(image)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * weights).sum().backward()
    grad = image.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    assert (grad != 0).float().mean() > 0.5  # most pixels get a gradient

    # matches a finite difference along a random direction (float64 for a clean check)
    x = _photo("coffee", (32, 32), quantise=False).double().requires_grad_(True)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.randn(hog(x.detach()).shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (hog(x) * w).sum().backward()
    eps = 1e-7  # small enough that no pixel changes its orientation bin
    f = lambda t: (hog(t) * w).sum().item()  # noqa: E731
    numeric = (f(x.detach() + eps * direction) - f(x.detach() - eps * direction)) / (2 * eps)
    analytic = (x.grad * direction).sum().item()
    assert analytic == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_batch_equals_single():
    images = torch.cat(
        [_photo("astronaut", (96, 80), True), _photo("coffee", (96, 80), False), _noise((96, 80), 4)]
        + [_photo("chelsea", (96, 80), True)] * 2
    )
    batch = hog(images)
    single = torch.cat([hog(images[i : i + 1]) for i in range(images.shape[0])])
    assert torch.allclose(batch, single, rtol=0, atol=1e-6)


def test_large_batch_is_chunked_consistently():
    images = torch.rand(9, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    out = hog(images)
    assert torch.allclose(out[7:8], hog(images[7:8]), rtol=0, atol=1e-6)


def test_registered_under_hog():
    rep = create("hog")
    assert isinstance(rep, HOG)
    assert rep.differentiable
    assert rep.identity()["representation"] == "hog"
    assert rep.identity()["cell_size"] == "8"
    assert create("hog", cell_size=4).output_shape(64, 64) == (31, 16, 16)
    with pytest.raises(TypeError):
        create("hog", bins=9)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        hog(torch.rand(1, 3, 3, 3))
    with pytest.raises(ValueError):
        hog(torch.rand(3, 64, 64))
    with pytest.raises(TypeError):
        hog(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    images = torch.cat([_photo("astronaut", (128, 128), True), _noise((128, 128), 6)])
    cpu = hog(images)
    gpu = hog(images.cuda()).cpu()
    assert torch.allclose(cpu, gpu, rtol=0, atol=1e-5)

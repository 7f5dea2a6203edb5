"""LBP (VLFeat uniform LBP re-implemented in PyTorch): shapes, bins, and equality with libvl."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preimage.features import create
from preimage.features.lbp import CONSTANT_BIN, NEIGHBOURS, NUM_BINS, OTHER_BIN, LBP, lbp_codes, rgb_to_gray, uniform_mapping
from preimage.features.lbp import CPU_CHUNK, _Plan
from preimage.reference import vlfeat

# Our histograms equal VLFeat's up to float32 summation order: observed max |diff| ≈ 6e-8.
TOLERANCE = 1e-5

needs_vlfeat = pytest.mark.skipif(
    not vlfeat.available(), reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat1)"
)


def _photo(name: str, size: int = 256) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    img = getattr(skimage_data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = (resize(img[..., :3], (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize("size", [(256, 256), (64, 64), (250, 270), (37, 53), (16, 16), (17, 100)])
def test_output_shape(size):
    h, w = size
    lbp = LBP()
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    out = lbp(x)
    assert tuple(out.shape) == (2,) + lbp.output_shape(h, w) == (2, NUM_BINS, -(-h // 16), -(-w // 16))
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    norms = (out**2).sum(1)
    assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-5)


def test_floor_cells_shape():
    assert LBP(cells="floor").output_shape(250, 270) == (NUM_BINS, 15, 16)


def test_mapping_structure():
    table = uniform_mapping()
    assert table[0x00] == CONSTANT_BIN and table[0xFF] == CONSTANT_BIN
    counts = torch.bincount(table.long(), minlength=NUM_BINS)
    assert (counts[:56] == 1).all() and counts[56] == 2 and counts[57] == 256 - 58


def _pattern(bits: int, centre: float = 0.5) -> torch.Tensor:
    """A 3×3 gray patch whose centre's LBP string is ``bits``."""
    patch = torch.full((3, 3), centre)
    for k, (dx, dy) in enumerate(NEIGHBOURS):
        patch[1 + dy, 1 + dx] = centre + (0.25 if bits >> k & 1 else -0.25)
    return patch


def test_bits_and_bins_of_hand_made_patterns():
    # bit order: bit 0 = E, 1 = SE, 2 = S, ..., 7 = NE; strict "brighter than the centre"
    east = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.9], [0.5, 0.5, 0.5]])
    assert lbp_codes(east[None]).item() == 1
    south = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.9, 0.5]])
    assert lbp_codes(south[None]).item() == 4
    table = uniform_mapping()
    assert table[lbp_codes(torch.full((1, 3, 3), 0.3)).item()] == CONSTANT_BIN  # constant (ties → 0)
    assert table[lbp_codes(_pattern(0xFF)[None]).item()] == CONSTANT_BIN  # all brighter
    assert table[1] == 0  # single bright neighbour E: run of 1 starting at bit 0 → bin 0
    assert table[1 << 3] == 7 * 3  # single bright SW neighbour → bin 21
    assert table[0b0000_0110] == 7 * 1 + 1  # run of 2 ones from bit 1 → bin 8
    assert table[0b1000_0001] == 7 * 7 + 1  # run wrapping round (bits 7, 0) → bin 50
    assert table[0b0000_0101] == OTHER_BIN  # two runs: non-uniform
    assert table[lbp_codes(_pattern(0b0101_0101)[None]).item()] == OTHER_BIN


def test_single_pattern_histogram():
    """A 3×3 image has one interior pixel; with cell_size 2 its bilinear weights go to cell (0, 0)."""
    img = _pattern(1 << 2)[None, None].expand(1, 3, 3, 3)  # gray == each channel
    out = LBP(cell_size=2)(img)
    assert out.shape == (1, NUM_BINS, 2, 2)
    hist = out[0, :, 0, 0]
    assert hist.argmax().item() == 7 * 2 and torch.isclose(hist.max(), torch.tensor(1.0))


def test_registry():
    rep = create("lbp")
    assert isinstance(rep, LBP) and rep.output_shape(256, 256) == (58, 16, 16)
    assert create("lbp", cell_size=8).output_shape(256, 256) == (58, 32, 32)
    assert rep.identity()["representation"] == "lbp"


@needs_vlfeat
def test_mapping_equals_vlfeat():
    from preimage.reference.vlfeat_lbp import vlfeat_lbp_mapping

    assert np.array_equal(uniform_mapping().numpy(), vlfeat_lbp_mapping())


@needs_vlfeat
@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_equals_vlfeat_on_photos(name):
    from preimage.reference.vlfeat_lbp import vlfeat_lbp

    img = _photo(name)
    ours = LBP()(img)[0].numpy()
    ref = vlfeat_lbp(rgb_to_gray(img)[0].numpy(), 16)
    assert ref.shape == ours.shape == (58, 16, 16)
    err = np.abs(ours - ref).max()
    print(f"{name}: max |ours - VLFeat| = {err:.2e}")
    assert err <= TOLERANCE


@needs_vlfeat
@pytest.mark.parametrize("size,cell", [((256, 256), 16), ((250, 270), 16), ((37, 53), 16), ((64, 80), 8), ((45, 45), 5)])
def test_equals_vlfeat_on_noise(size, cell):
    """Noise (and non-multiple sizes): VLFeat's floor(H/c) × floor(W/c) cells equal our first cells;
    with ``cells='floor'`` the whole output equals VLFeat's."""
    from preimage.reference.vlfeat_lbp import vlfeat_lbp

    gen = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, *size, generator=gen)
    img[1] = (img[1] * 4).round() / 4  # many exact ties
    gray = rgb_to_gray(img).numpy()
    ours = LBP(cell_size=cell)(img).numpy()
    ours_floor = LBP(cell_size=cell, cells="floor")(img).numpy()
    for i in range(2):
        ref = vlfeat_lbp(gray[i], cell)
        assert ours_floor[i].shape == ref.shape
        assert np.abs(ours_floor[i] - ref).max() <= TOLERANCE
        assert np.abs(ours[i][:, : ref.shape[1], : ref.shape[2]] - ref).max() <= TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(3, 3, 100, 130, generator=torch.Generator().manual_seed(2))
    cpu = LBP()(x)
    gpu = LBP()(x.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-5)


# --- the vectorised CPU path against a straightforward per-pixel reference --------------------


def _reference_histograms(gray: np.ndarray, cell_size: int, rows: int, cols: int) -> np.ndarray:
    """The LBP histograms of one ``(H, W)`` gray image written the plain way, in float64: for every
    interior pixel its 8-bit string (:func:`lbp_codes`), its uniform bin, and its bilinear weight
    ``(1 - frac(u), frac(u))`` with ``u = (x + 0.5) / cell - 0.5`` (same in y) added into the up to
    four cells it touches; then ``sqrt(h) / (sqrt(sum h) + 1e-10)`` per cell."""
    height, width = gray.shape
    hist = np.zeros((NUM_BINS, rows, cols))
    if height < 3 or width < 3:
        return hist.astype(np.float32)
    bins = uniform_mapping().numpy()[lbp_codes(torch.from_numpy(gray)[None])[0].numpy()]
    for y in range(1, height - 1):
        v = (y + 0.5) / cell_size - 0.5
        y0 = int(np.floor(v))
        for x in range(1, width - 1):
            u = (x + 0.5) / cell_size - 0.5
            x0 = int(np.floor(u))
            for cy, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
                for cx, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
                    if 0 <= cy < rows and 0 <= cx < cols:
                        hist[bins[y - 1, x - 1], cy, cx] += wy * wx
    return (np.sqrt(hist) / (np.sqrt(hist.sum(0, keepdims=True)) + 1e-10)).astype(np.float32)


def _check_against_reference(images: torch.Tensor, cell_size: int = 16, cells: str = "ceil") -> None:
    ours = LBP(cell_size=cell_size, cells=cells)(images).numpy()
    gray = images[:, 0] if images.dim() == 4 and images.shape[1] == 1 else images
    gray = rgb_to_gray(gray).numpy() if gray.dim() == 4 else gray.float().numpy()
    assert ours.shape[0] == len(gray)
    for i, g in enumerate(gray):
        ref = _reference_histograms(g, cell_size, *ours.shape[2:])
        assert np.abs(ours[i] - ref).max() <= 1e-6, f"image {i}: max diff {np.abs(ours[i] - ref).max():.2e}"


@pytest.mark.parametrize(
    "size,cell",
    [((40, 40), 16), ((37, 53), 16), ((17, 30), 8), ((23, 19), 5), ((9, 11), 2), ((6, 7), 1), ((70, 45), 32)],
)
def test_equals_reference_on_noise_with_ties(size, cell):
    """Random images, one quantised to 5 grey levels (many exact ties between a neighbour and the
    centre), odd sizes, cell sizes that do not divide them, 16- and 32-bit moment lanes."""
    gen = torch.Generator().manual_seed(3)
    img = torch.rand(2, 3, *size, generator=gen)
    img[1] = (img[1] * 4).round() / 4
    _check_against_reference(img, cell)
    _check_against_reference(img, cell, cells="floor")


def test_equals_reference_on_gray_inputs_and_edge_cases():
    gen = torch.Generator().manual_seed(4)
    _check_against_reference(torch.rand(2, 1, 21, 34, generator=gen), 8)  # (N, 1, H, W)
    _check_against_reference(torch.rand(2, 21, 34, generator=gen), 8)  # (N, H, W)
    _check_against_reference(torch.rand(1, 3, 3, 3, generator=gen), 2)  # one interior pixel
    _check_against_reference(torch.rand(1, 3, 3, 40, generator=gen), 4)  # one interior row
    _check_against_reference(torch.rand(1, 3, 40, 3, generator=gen), 4)  # one interior column
    stripes = torch.zeros(1, 1, 24, 24)
    stripes[..., ::2, :] = 1.0  # every pixel ties with its E and W neighbours
    _check_against_reference(stripes, 8)


def test_constant_image_is_all_in_the_constant_bin():
    out = LBP(cell_size=8)(torch.full((2, 3, 30, 41), 0.4))
    assert torch.equal(out.argmax(1), torch.full((2, 4, 6), CONSTANT_BIN))
    assert torch.allclose(out[:, CONSTANT_BIN], torch.ones(2, 4, 6))
    assert out.sum(1).sub(out[:, CONSTANT_BIN]).abs().max() == 0


def test_batches_and_reused_plans_give_the_same_result():
    """More images than one CPU chunk, the same LBP object reused across sizes and calls: every image
    equals the image computed alone."""
    gen = torch.Generator().manual_seed(5)
    lbp = LBP()
    images = torch.rand(CPU_CHUNK + 3, 3, 48, 40, generator=gen)
    batch = lbp(images)
    assert tuple(lbp(torch.rand(2, 3, 33, 33, generator=gen)).shape) == (2, NUM_BINS, 3, 3)
    alone = torch.cat([LBP()(images[i : i + 1]) for i in range(len(images))])
    assert torch.equal(lbp(images), batch)
    assert torch.allclose(batch, alone, atol=1e-7, rtol=0)


def test_torch_path_equals_numpy_path():
    """The batched PyTorch path (used on CUDA), run on CPU, against the NumPy CPU path."""
    gen = torch.Generator().manual_seed(6)
    for (h, w), cell in (((64, 80), 16), ((37, 53), 5), ((70, 45), 32)):
        img = torch.rand(3, 3, h, w, generator=gen)
        img[1] = (img[1] * 4).round() / 4
        rows, cols = -(-h // cell), -(-w // cell)
        by_torch = _Plan(h, w, cell, rows, cols).run_torch(img)
        assert torch.allclose(by_torch, LBP(cell_size=cell)(img), atol=1e-6, rtol=0)


def test_too_large_cells_are_refused():
    with pytest.raises(ValueError, match="cell_size 300"):
        LBP(cell_size=300)(torch.rand(1, 3, 20, 20))

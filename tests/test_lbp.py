"""LBP (VLFeat uniform LBP re-implemented in PyTorch): shapes, bins, and equality with libvl."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preimage.features import create
from preimage.features.lbp import CONSTANT_BIN, NEIGHBOURS, NUM_BINS, OTHER_BIN, LBP, lbp_codes, rgb_to_gray, uniform_mapping
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

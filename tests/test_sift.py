"""SIFT on a 4×4 grid: shapes, sparse ↔ dense, seeded random choice, and a loose VLFeat comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preimage.features import create
from preimage.features.sift import NUM_CHANNELS, SIFT, TABLE_COLUMNS, arrange, densify
from preimage.reference import vlfeat

needs_vlfeat = pytest.mark.skipif(
    not vlfeat.available(), reason="VLFeat's libvl.so is not installed (apt-get install libvlfeat1)"
)


def _photo_uint8(name: str, size: int = 256) -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    img = getattr(skimage_data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = (resize(img[..., :3], (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)
    return img.transpose(2, 0, 1)


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random blobs (many keypoints), (1, 3, H, W) uint8."""
    rng = np.random.default_rng(seed)
    small = rng.random((3, max(2, h // 8), max(2, w // 8)))
    big = torch.nn.functional.interpolate(torch.from_numpy(small)[None], size=(h, w), mode="bicubic", align_corners=False)
    return (big.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("size", [(64, 64), (70, 45), (33, 100)])
def test_dense_shape(size):
    h, w = size
    sift = SIFT()
    x = torch.from_numpy(_textured(h, w)).float() / 255
    out = sift(x)
    assert tuple(out.shape) == (1,) + sift.output_shape(h, w) == (1, NUM_CHANNELS, -(-h // 4), -(-w // 4))
    assert sift.sparse


def test_sparse_dense_round_trip():
    sift = SIFT(seed=3)
    images = np.concatenate([_textured(64, 80, s) for s in range(3)])
    table, offsets = sift.compute_sparse(images)
    assert table.dtype == np.float32 and table.shape[1] == TABLE_COLUMNS
    assert offsets.dtype == np.int64 and offsets.shape == (4,) and offsets[-1] == len(table) > 0
    dense = sift(torch.from_numpy(images).float() / 255)
    assert torch.equal(densify(table, offsets, None, 64, 80), dense)
    assert torch.equal(sift.densify(table, offsets, (1, 3), 64, 80), dense[1:3])
    occupied = (dense != 0).any(1).sum().item()
    assert occupied == len(table)  # one row per occupied cell
    body = table[:, 2:]
    assert (body[:, 128:130] >= 0).all() and (body[:, 128:130] < 4 + 1e-4).all()  # position in the cell
    assert np.allclose(body[:, 130] ** 2 + body[:, 131] ** 2, 1, atol=1e-5)  # sin² + cos²


def test_hand_made_table_densifies():
    table = np.zeros((3, TABLE_COLUMNS), np.float32)
    table[:, 0:2] = [[0, 0], [2, 1], [1, 3]]
    table[:, 2:] = np.arange(3)[:, None] + 1
    offsets = np.array([0, 2, 3])
    dense = densify(table, offsets, None, 12, 16)
    assert dense.shape == (2, 133, 3, 4)
    assert (dense[0, :, 0, 0] == 1).all() and (dense[0, :, 2, 1] == 2).all() and (dense[1, :, 1, 3] == 3).all()
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 2, 1] = mask[1, 1, 3] = True
    assert (dense.permute(0, 2, 3, 1)[~mask] == 0).all()
    assert densify(table, offsets, (1, 1), 12, 16).shape == (0, 133, 3, 4)
    with pytest.raises(ValueError):
        densify(table, offsets, None, 8, 8)  # cells outside the grid


def _crowded(seed: int) -> np.ndarray:
    """100 keypoints in one cell, each with a distinct descriptor; returns the rows."""
    n = 100
    frames = np.stack([np.full(n, 5.5), np.full(n, 6.5), np.full(n, 2.0), np.linspace(0, 6, n)], axis=1)
    desc = np.repeat(np.arange(n, dtype=np.float32)[:, None], 128, axis=1)
    return arrange(frames, desc, 16, 16, 4, np.random.default_rng(seed))


def test_random_choice_in_crowded_cell_is_seeded():
    assert len(_crowded(0)) == 1
    assert np.array_equal(_crowded(0), _crowded(0))
    picks = {float(_crowded(s)[0, 2]) for s in range(10)}
    assert len(picks) > 1  # different seeds pick different keypoints
    images = _textured(64, 64, 5)
    a, _ = SIFT(seed=1).compute_sparse(images)
    b, _ = SIFT(seed=1).compute_sparse(images)
    assert np.array_equal(a, b)
    # same result whatever the batching / worker count (seeded by image content)
    both = np.concatenate([images, _textured(64, 64, 6)])
    c, off = SIFT(seed=1, workers=2).compute_sparse(both)
    assert np.array_equal(c[: off[1]], a)


def test_registry():
    rep = create("sift", seed=7)
    assert isinstance(rep, SIFT) and rep.sparse
    assert rep.output_shape(256, 256) == (133, 64, 64)
    assert rep.identity()["seed"] == "7"


@needs_vlfeat
def test_keypoints_comparable_to_vlfeat():
    """Keypoint count and scale distribution of our OpenCV setup vs VLFeat's defaults (loose)."""
    import cv2

    from preimage.features.sift import detect
    from preimage.reference.vlfeat_sift import vlfeat_sift

    for name in ("astronaut", "coffee", "chelsea"):
        rgb = _photo_uint8(name)
        gray = cv2.cvtColor(np.ascontiguousarray(rgb.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
        ours, _ = detect(gray)
        ref = vlfeat_sift(gray.astype(np.float32))
        med_ours, med_ref = np.median(ours[:, 2]), np.median(ref[:, 2])
        print(f"{name}: keypoints OpenCV {len(ours)} vs VLFeat {len(ref)}; median sigma {med_ours:.2f} vs {med_ref:.2f}")
        assert 0.5 <= len(ours) / len(ref) <= 2.0
        assert 0.75 <= med_ours / med_ref <= 1.33
        assert ours[:, 2].min() >= 1.5 and ref[:, 2].min() >= 1.5  # no octave -1 (σ ≈ 1 px)

"""Tests of preimage.metrics (paper §3, §5.1)."""

import itertools

import numpy as np
import pytest
import torch

from preimage.metrics import (
    bootstrap_ci,
    mean_normalised_error,
    mean_pairwise_distance,
    normalised_error,
    psnr,
    ssim,
    upsample_to,
)


def _images(n=7, s=8, seed=0):
    return np.random.default_rng(seed).random((n, 3, s, s))


def _brute_force(images):
    flat = images.reshape(len(images), -1)
    d = [np.linalg.norm(flat[i] - flat[j]) for i, j in itertools.permutations(range(len(flat)), 2)]
    return float(np.mean(d))


def test_identical_images_zero_error():
    y = _images()
    assert np.all(normalised_error(y, y) == 0)
    assert mean_normalised_error(torch.tensor(y), torch.tensor(y)) == 0.0
    assert np.all(np.isinf(psnr(y, y)))
    assert np.allclose(ssim(y, y), 1.0)


def test_mean_image_prediction_by_hand():
    # Test set {m + d, m − d}; predicting the mean image m for both gives ‖d‖ per image,
    # and the mean distance between the two test images is ‖2d‖, so the error is exactly 1/2.
    rng = np.random.default_rng(1)
    m = rng.random((3, 16, 16)) * 0.5 + 0.25
    d = (rng.random((3, 16, 16)) - 0.5) * 0.4
    y = np.stack([m + d, m - d])
    x = np.stack([m, m])
    assert mean_pairwise_distance(y) == pytest.approx(2 * np.linalg.norm(d), rel=1e-12)
    assert np.allclose(normalised_error(x, y), 0.5, rtol=1e-12)
    # Constant images 0.25 and 0.75, predict 0.5: error 0.25·√D over a distance 0.5·√D.
    y2 = np.stack([np.full((3, 4, 4), 0.25), np.full((3, 4, 4), 0.75)])
    assert mean_normalised_error(np.full_like(y2, 0.5), y2) == pytest.approx(0.5)
    # An explicit normaliser is used as given.
    assert np.allclose(normalised_error(x, y, normaliser=np.linalg.norm(d)), 1.0)


def test_mean_pairwise_distance_brute_force_and_chunking():
    y = _images(n=11, s=6, seed=3)
    ref = _brute_force(y)
    assert mean_pairwise_distance(y) == pytest.approx(ref, rel=1e-12)
    for chunk in (1, 2, 3, 5, 10, 11, 100):
        assert mean_pairwise_distance(y, chunk_size=chunk) == pytest.approx(ref, rel=1e-12)
    assert mean_pairwise_distance(torch.tensor(y, dtype=torch.float32)) == pytest.approx(ref, rel=1e-6)
    # Near-identical images: no negative rounding residue, tiny but correct distance.
    z = np.stack([np.full((3, 8, 8), 0.5), np.full((3, 8, 8), 0.5 + 1e-6)])
    assert mean_pairwise_distance(z) == pytest.approx(1e-6 * np.sqrt(z[0].size), rel=1e-3)
    with pytest.raises(ValueError):
        mean_pairwise_distance(y[:1])


def test_psnr_known_mse():
    y = np.zeros((2, 3, 8, 8))
    x = np.full_like(y, 0.1)  # MSE = 0.01 → 20 dB
    assert np.allclose(psnr(x, y), 20.0)
    assert np.allclose(psnr(x * 255, y, data_range=255.0), 20.0)
    assert psnr(torch.tensor(x), torch.tensor(y)).shape == (2,)


def test_ssim_range_and_order():
    y = _images(n=3, s=32, seed=4)
    noisy = np.clip(y + np.random.default_rng(5).normal(0, 0.05, y.shape), 0, 1)
    noisier = np.clip(y + np.random.default_rng(6).normal(0, 0.3, y.shape), 0, 1)
    s1, s2 = ssim(noisy, y), ssim(noisier, y)
    assert s1.shape == (3,)
    assert np.all(s1 > s2) and np.all(s1 <= 1)


def test_bootstrap_ci():
    v = np.random.default_rng(7).normal(1.0, 0.2, size=200)
    lo, hi = bootstrap_ci(v, n_boot=500, seed=0)
    assert lo < v.mean() < hi
    assert hi - lo < 0.1
    assert bootstrap_ci(v, n_boot=500, seed=0) == (lo, hi)
    assert bootstrap_ci(v, n_boot=500, seed=1) != (lo, hi)
    lo90, hi90 = bootstrap_ci(v, n_boot=500, alpha=0.1, seed=0)
    assert lo <= lo90 and hi90 <= hi
    assert bootstrap_ci(np.full(10, 3.0)) == (3.0, 3.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_upsample_to():
    x = np.random.default_rng(8).random((2, 3, 16, 16)).astype(np.float32)
    up = upsample_to(x, 32)
    assert isinstance(up, np.ndarray) and up.shape == (2, 3, 32, 32)
    # Constant images stay constant; mean is preserved for ×2 bilinear (align_corners=False).
    c = np.full((1, 3, 8, 8), 0.3)
    assert np.allclose(upsample_to(c, 20), 0.3)
    t = torch.tensor(x, requires_grad=True)
    ut = upsample_to(t, (24, 24))
    assert isinstance(ut, torch.Tensor) and ut.shape == (2, 3, 24, 24)
    ut.sum().backward()
    assert t.grad is not None
    assert upsample_to(x, 16) is x
    # fc evaluation path: 128 → 256 then normalised error against 256-px targets.
    pred = upsample_to(np.full((2, 3, 4, 4), 0.5), 8)
    assert normalised_error(pred, np.stack([np.zeros((3, 8, 8)), np.ones((3, 8, 8))])).shape == (2,)


def test_mean_pairwise_distance_reads_h5py_in_chunks(tmp_path):
    h5py = pytest.importorskip("h5py")
    y = _images(n=9, s=5, seed=9).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["images"] = y
    with h5py.File(tmp_path / "x.h5", "r") as f:
        got = mean_pairwise_distance(f["images"], chunk_size=4)
    assert got == pytest.approx(_brute_force(y.astype(np.float64)), rel=1e-9)

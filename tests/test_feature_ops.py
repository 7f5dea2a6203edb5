"""The operations on features and images the analyses apply (preimage.feature_ops): perturbations, interpolation,
random sampling, dark knowledge, hue and brightness (§4, §5.3-5.5)."""
import math
import time

import pytest
import torch

from preimage import feature_ops


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _features():
    f = torch.relu(torch.randn(4, 200, generator=_gen(0)))  # ReLU-sparse, like fc6
    f[3] = 0  # an all-zero sample
    return f


def _norms(f):
    return f.flatten(1).norm(dim=1)


def _magnitudes(row):
    return set(row[row != 0].abs().tolist())


# --------------------------------------------------------------------------- §5.4 perturbations


def test_binarise_keeps_norm_signs_and_has_one_magnitude():
    f = torch.tensor([[3.0, -4.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, -2.0, 0.0, 0.0]])
    b = feature_ops.binarise(f)
    torch.testing.assert_close(_norms(b), _norms(f))
    assert torch.equal(torch.sign(b), torch.sign(f))
    torch.testing.assert_close(b[0, [0, 1, 3]], torch.tensor([1.0, -1.0, 1.0]) * (26 / 3) ** 0.5)
    assert torch.equal(b[1], f[1])  # all-zero sample stays zero
    assert torch.equal(b[2], f[2])  # a single non-zero keeps its value


def test_binarise_on_conv_maps_works_per_sample():
    f = _features().reshape(4, 2, 10, 10)
    b = feature_ops.binarise(f)
    assert b.shape == f.shape
    torch.testing.assert_close(_norms(b), _norms(f))
    assert torch.equal(b != 0, f != 0)
    for row in b[:3].flatten(1):
        assert len(_magnitudes(row)) == 1
    assert _magnitudes(b[0].flatten()) != _magnitudes(b[1].flatten())  # one magnitude per sample


def test_dropout_zeros_exactly_half_and_keeps_the_norm():
    f = torch.arange(1.0, 201.0).reshape(2, 100)
    d = feature_ops.dropout(f, 0.5, _gen(1))
    assert ((d == 0).sum(dim=1) == 50).all()
    torch.testing.assert_close(_norms(d), _norms(f))
    kept = d != 0
    ratio = d[kept] / f[kept]  # survivors are scaled by one factor per sample
    torch.testing.assert_close(d[0][kept[0]] / f[0][kept[0]], torch.full((50,), ratio[0].item()))
    assert not torch.equal(kept[0], kept[1])  # chosen independently per sample
    assert torch.equal(d, feature_ops.dropout(f, 0.5, _gen(1)))  # deterministic with the same generator
    assert not torch.equal(d, feature_ops.dropout(f, 0.5, _gen(2)))


def test_dropout_fraction_count_and_all_zero_sample():
    f = torch.ones(3, 40)
    f[2] = 0
    d = feature_ops.dropout(f, 0.25, _gen(0))
    assert ((d[:2] == 0).sum(dim=1) == 10).all() and torch.equal(d[2], f[2])
    assert torch.equal(feature_ops.dropout(f, 0.0, _gen(0)), f)
    assert (feature_ops.dropout(f, 1.0, _gen(0)) == 0).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            feature_ops.dropout(f, bad, _gen(0))


def test_drop_small_binarise_drops_the_smallest_half_of_the_non_zeros():
    f = torch.tensor([[0.0, 5.0, -1.0, 0.0, 3.0, 2.0, -6.0, 0.0],  # 5 non-zeros: drop round(2.5) = 2
                      [4.0, -3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # 4 non-zeros: drop 2
                      [0.0] * 8])
    out = feature_ops.drop_small_binarise(f, 0.5)
    assert out[0].nonzero().flatten().tolist() == [1, 4, 6]  # -1 and 2 are gone
    assert out[1].nonzero().flatten().tolist() == [0, 1]  # 2 and 1 are gone
    assert torch.equal(torch.sign(out[0, [1, 4, 6]]), torch.tensor([1.0, 1.0, -1.0]))
    assert torch.equal(torch.sign(out[1, [0, 1]]), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(_norms(out), _norms(f))  # §5.4: the original norm is kept
    assert len(_magnitudes(out[0])) == 1 and len(_magnitudes(out[1])) == 1
    assert torch.equal(out[2], f[2])


def test_drop_small_binarise_keeps_the_largest_non_zeros_of_random_features():
    f = _features()
    out = feature_ops.drop_small_binarise(f, 0.5)
    for row, src in zip(out[:3], f[:3]):
        nnz = int((src != 0).sum())
        kept = row != 0
        assert int(kept.sum()) == nnz - round(nnz / 2)
        assert src[kept].abs().min() >= src[(src != 0) & ~kept].abs().max()


def test_drop_random_binarise_zeros_exactly_and_binarises():
    f = torch.rand(3, 50, generator=_gen(0)) + 0.1  # dense: every entry non-zero
    f[1] *= -1
    out = feature_ops.drop_random_binarise(f, 0.5, _gen(3))
    assert ((out == 0).sum(dim=1) == 25).all()
    for row in out:
        assert len(_magnitudes(row)) == 1
    assert torch.equal(torch.sign(out[out != 0]), torch.sign(f[out != 0]))
    torch.testing.assert_close(_norms(out), _norms(f))  # §5.4: the original norm is kept
    assert torch.equal(out, feature_ops.drop_random_binarise(f, 0.5, _gen(3)))
    # the same generator draws the same positions as dropout's
    assert torch.equal(out == 0, feature_ops.dropout(f, 0.5, _gen(3)) == 0)


def test_perturb_dispatches_by_name():
    f = _features()
    assert torch.equal(feature_ops.perturb(f, "binarise"), feature_ops.binarise(f))
    assert torch.equal(feature_ops.perturb(f, "drop_small_binarise"), feature_ops.drop_small_binarise(f))
    for kind, fn in (("dropout", feature_ops.dropout), ("drop_random_binarise", feature_ops.drop_random_binarise)):
        assert torch.equal(feature_ops.perturb(f, kind, _gen(5)), fn(f, 0.5, _gen(5)))
    assert torch.equal(feature_ops.perturb(f, "dropout", _gen(5), fraction=0.25), feature_ops.dropout(f, 0.25, _gen(5)))
    same = feature_ops.perturb(f, "none")
    assert torch.equal(same, f) and same.data_ptr() != f.data_ptr()
    with pytest.raises(ValueError, match="unknown perturbation"):
        feature_ops.perturb(f, "shuffle")
    with pytest.raises(ValueError, match="batch"):
        feature_ops.perturb(torch.rand(10), "binarise")


def test_perturbations_keep_shape_dtype_and_never_modify_the_input():
    for f in (torch.rand(2, 4, 3, 3), torch.rand(2, 30, dtype=torch.float64)):
        before = f.clone()
        for kind in ("none",) + feature_ops.PERTURBATIONS:
            out = feature_ops.perturb(f, kind, _gen(0))
            assert out.shape == f.shape and out.dtype == f.dtype
        assert torch.equal(f, before)


def test_float16_features_are_computed_in_float32():
    f = torch.full((1, 300000), 60.0, dtype=torch.float16)  # a conv1-sized map; its norm overflows float16
    f[0, ::2] = 0
    b = feature_ops.binarise(f)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    torch.testing.assert_close(_norms(b), _norms(f.float()))
    assert feature_ops.perturb(f, "none").dtype == torch.float32


# --------------------------------------------------------------------------- §5.5 interpolation


def test_interpolation_endpoints_are_exact():
    a, b = torch.rand(3, 2, generator=_gen(0)), torch.rand(3, 2, generator=_gen(1))
    line = feature_ops.interpolate(a, b, 5)
    assert line.shape == (5, 3, 2) and torch.equal(line[0], a) and torch.equal(line[-1], b)
    torch.testing.assert_close(line[2], (a + b) / 2)
    torch.testing.assert_close(line[1], 0.75 * a + 0.25 * b)
    a64, b64 = a.double() / 3, b.double() / 7
    line64 = feature_ops.interpolate(a64, b64, 2)
    assert line64.dtype == torch.float64 and torch.equal(line64[0], a64) and torch.equal(line64[1], b64)
    for steps in (1, 0, 2.5):
        with pytest.raises(ValueError, match="steps"):
            feature_ops.interpolate(a, b, steps)
    with pytest.raises(ValueError, match="shape"):
        feature_ops.interpolate(a, torch.rand(2, 3), 4)


# --------------------------------------------------------------------------- §5.5 random vectors


def _synthetic(zero_p, n=5000):
    g = _gen(0)
    values = torch.rand(n, len(zero_p), generator=g) * 3 + 1  # non-zero values in [1, 4]
    return torch.where(torch.rand(n, len(zero_p), generator=g) < zero_p, torch.zeros_like(values), values)


def test_sampler_reproduces_the_marginal_sparsity_and_range():
    zero_p = torch.tensor([0.1, 0.5, 0.9, 1.0])
    real = _synthetic(zero_p)
    sampler = feature_ops.FeatureSampler.fit(real, bins=20)
    torch.testing.assert_close(sampler.sparsity, zero_p, atol=0.02, rtol=0)
    samples = sampler.sample(20000, alpha=2.0, generator=_gen(1))
    assert samples.shape == (20000, 4)
    torch.testing.assert_close((samples == 0).float().mean(dim=0), zero_p, atol=0.02, rtol=0)
    assert (samples[:, 3] == 0).all()  # never non-zero in training: always 0
    low = torch.where(real != 0, real, torch.inf).min(0).values
    high = torch.where(real != 0, real, -torch.inf).max(0).values
    for dim in range(3):
        column = samples[:, dim][samples[:, dim] != 0]
        assert column.min() >= 2 * low[dim] - 1e-5 and column.max() <= 2 * high[dim] + 1e-5
        train_mean = real[:, dim][real[:, dim] != 0].mean().item()
        assert abs(column.mean().item() - 2 * train_mean) < 0.15  # the histogram's mean, times alpha
    assert torch.equal(samples, sampler.sample(20000, alpha=2.0, generator=_gen(1)))
    torch.testing.assert_close(sampler.sample(5, alpha=1.0, generator=_gen(2)) * 3,
                               sampler.sample(5, alpha=3.0, generator=_gen(2)))


def test_sampler_follows_the_histogram_and_skips_empty_bins():
    g = _gen(0)
    # one dimension with values only near 1 (70 %) and near 9 (30 %); the bins in between are empty
    near_one = torch.rand(7000, generator=g) * 0.1 + 1
    near_nine = torch.rand(3000, generator=g) * 0.1 + 8.9
    sampler = feature_ops.FeatureSampler.fit(torch.cat([near_one, near_nine])[:, None], bins=10)
    samples = sampler.sample(20000, alpha=1.0, generator=_gen(1))[:, 0]
    assert (samples != 0).all()
    assert ((samples < 1.9) | (samples > 8.1)).all()  # nothing drawn from the empty bins
    assert abs((samples > 5).float().mean().item() - 0.3) < 0.02


def test_truncated_gaussian_reproduces_the_overall_sparsity():
    zero_p = torch.tensor([0.1, 0.5, 0.9, 1.0])
    sampler = feature_ops.FeatureSampler.fit(_synthetic(zero_p), bins=20)
    assert abs(sampler.overall_sparsity - zero_p.mean().item()) < 0.01
    gaussian = sampler.sample_truncated_gaussian(20000, alpha=2.0, generator=_gen(2))
    assert gaussian.shape == (20000, 4) and (gaussian >= 0).all()
    assert abs((gaussian == 0).float().mean().item() - sampler.overall_sparsity) < 0.02
    std = torch.tensor(3.0).div(12 ** 0.5).item()  # of uniform [1, 4]
    assert abs(sampler.gaussian_std - std) < 0.02 and abs(sampler.gaussian_mean - 2.5) < 0.02
    assert torch.equal(gaussian, sampler.sample_truncated_gaussian(20000, alpha=2.0, generator=_gen(2)))
    empty = feature_ops.FeatureSampler.fit(torch.zeros(10, 3))
    assert (empty.sample(4, generator=_gen(0)) == 0).all()
    assert (empty.sample_truncated_gaussian(4, generator=_gen(0)) == 0).all()


def test_sampler_fits_float16_features():
    real = _synthetic(torch.tensor([0.2, 0.6])).half()
    sampler = feature_ops.FeatureSampler.fit(real, bins=50)
    samples = sampler.sample(1000, generator=_gen(0))
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
    torch.testing.assert_close(sampler.sparsity, torch.tensor([0.2, 0.6]), atol=0.02, rtol=0)


def test_sampler_keeps_the_feature_shape_and_validates():
    sampler = feature_ops.FeatureSampler.fit(torch.relu(torch.randn(50, 2, 3, 3, generator=_gen(0))), bins=4)
    assert sampler.sample(3, generator=_gen(0)).shape == (3, 2, 3, 3) and sampler.sparsity.shape == (2, 3, 3)
    assert sampler.sample_truncated_gaussian(3, generator=_gen(0)).shape == (3, 2, 3, 3)
    assert sampler.sample(0).shape == (0, 2, 3, 3)
    with pytest.raises(ValueError, match="bins"):
        feature_ops.FeatureSampler.fit(torch.rand(5, 3), bins=0)
    with pytest.raises(ValueError, match="at least one"):
        feature_ops.FeatureSampler.fit(torch.rand(0, 3))
    with pytest.raises(ValueError, match="alpha"):
        sampler.sample(2, alpha=0)
    with pytest.raises(ValueError, match="non-negative integer"):
        sampler.sample_truncated_gaussian(-1)


def test_truncated_gaussian_is_vectorised_for_fc_sized_features():
    sampler = feature_ops.FeatureSampler.fit(torch.relu(torch.randn(256, 4096, generator=_gen(0))))
    start = time.perf_counter()
    out = sampler.sample_truncated_gaussian(4096, generator=_gen(1))
    assert time.perf_counter() - start < 1.0
    assert abs((out == 0).float().mean().item() - 0.5) < 0.01


# --------------------------------------------------------------------------- §5.3 dark knowledge


def test_top_k_masks_keep_exactly_k_or_all_but_k():
    logits = torch.randn(3, 1000, generator=_gen(0))
    top = feature_ops.dark_knowledge(logits, "top5")
    rest = feature_ops.dark_knowledge(logits, "all_but_top5")
    assert ((top != 0).sum(dim=1) == 5).all() and ((rest != 0).sum(dim=1) == 995).all()
    indices = logits.topk(5, dim=1).indices.sort(dim=1).values
    assert torch.equal(top.nonzero()[:, 1].reshape(3, 5), indices)
    assert torch.equal((rest == 0).nonzero()[:, 1].reshape(3, 5), indices)
    assert torch.equal(top + rest, logits)
    assert torch.equal(feature_ops.dark_knowledge(logits, "all"), logits)
    assert ((feature_ops.dark_knowledge(logits, "top5", k=2) != 0).sum(dim=1) == 2).all()
    assert torch.equal(feature_ops.top_k_mask(logits, 5, keep=False), rest)


def test_top_k_mask_hand_made_and_errors():
    x = torch.tensor([[0.5, -2.0, 3.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    assert feature_ops.top_k_mask(x, 2).tolist() == [[0.0, 0.0, 3.0, 1.0], [4.0, 3.0, 0.0, 0.0]]
    assert feature_ops.top_k_mask(x, 2, keep=False).tolist() == [[0.5, -2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0]]
    for k in (0, 5):
        with pytest.raises(ValueError, match="k must be"):
            feature_ops.top_k_mask(x, k)
    with pytest.raises(ValueError, match="unknown dark-knowledge"):
        feature_ops.dark_knowledge(x, "top3")


# --------------------------------------------------------------------------- images


def _pixel(*rgb):
    return torch.tensor(rgb).reshape(1, 3, 1, 1)


def test_hue_shift_known_colours():
    red = _pixel(1.0, 0.0, 0.0)
    torch.testing.assert_close(feature_ops.hue_shift(red, 120), _pixel(0.0, 1.0, 0.0))
    torch.testing.assert_close(feature_ops.hue_shift(red, 240), _pixel(0.0, 0.0, 1.0))
    torch.testing.assert_close(feature_ops.hue_shift(red, -120), _pixel(0.0, 0.0, 1.0))
    torch.testing.assert_close(feature_ops.hue_shift(_pixel(1.0, 1.0, 0.0), 120), _pixel(0.0, 1.0, 1.0))  # yellow → cyan
    # wrap-around: hue 350° (S = 1, V = 0.8) + 20° → 10°
    torch.testing.assert_close(feature_ops.hue_shift(_pixel(0.8, 0.0, 0.8 / 6), 20), _pixel(0.8, 0.8 / 6, 0.0))
    torch.testing.assert_close(feature_ops.hue_shift(_pixel(0.8, 0.8 / 6, 0.0), -20), _pixel(0.8, 0.0, 0.8 / 6))


def test_hue_shift_identity_inverse_and_invariants():
    x = torch.rand(2, 3, 8, 8, generator=_gen(0))
    x[0, :, 0, 0] = 0.4  # a gray pixel
    before = x.clone()
    assert torch.equal(feature_ops.hue_shift(x, 0), x) and torch.equal(feature_ops.hue_shift(x, 360), x)
    torch.testing.assert_close(feature_ops.hue_shift(x, 1e-7), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(feature_ops.hue_shift(x, 359.9999999), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(feature_ops.hue_shift(feature_ops.hue_shift(x, 77), -77), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(feature_ops.hue_shift(feature_ops.hue_shift(x, 120), 240), x, atol=1e-5, rtol=0)
    assert torch.equal(feature_ops.hue_shift(x, 90)[0, :, 0, 0], x[0, :, 0, 0])  # gray stays gray
    y = feature_ops.hue_shift(x, 200)  # value (max) and chroma (max − min), hence saturation, unchanged
    torch.testing.assert_close(y.max(1).values, x.max(1).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(y.max(1).values - y.min(1).values, x.max(1).values - x.min(1).values,
                               atol=1e-5, rtol=0)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="images"):
        feature_ops.hue_shift(torch.rand(1, 1, 4, 4), 90)
    with pytest.raises(ValueError, match="degrees"):
        feature_ops.hue_shift(x, float("nan"))


def test_brightness_does_not_clip():
    x = torch.full((1, 3, 2, 2), 0.5)
    assert torch.equal(feature_ops.scale_brightness(x, 10), torch.full((1, 3, 2, 2), 5.0))
    assert torch.equal(feature_ops.scale_brightness(x, 0.1), x * 0.1)
    assert torch.equal(x, torch.full((1, 3, 2, 2), 0.5))
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="factor"):
            feature_ops.scale_brightness(x, bad)
    with pytest.raises(ValueError, match="images"):
        feature_ops.scale_brightness(torch.rand(3, 2, 2), 2)


def test_single_unit_vectors():
    v = feature_ops.single_unit_vectors(10, [2, 7], [1.5, 3.0])
    assert v.shape == (2, 10) and v[0, 2] == 1.5 and v[1, 7] == 3.0 and v.sum() == 4.5
    assert feature_ops.single_unit_vectors(4, [0], 2.0)[0].tolist() == [2.0, 0, 0, 0]
    assert feature_ops.single_unit_vectors(4, [1, 3]).tolist() == [[0, 1.0, 0, 0], [0, 0, 0, 1.0]]
    assert feature_ops.single_unit_vectors(4, []).shape == (0, 4)
    for units in ([4], [-1]):
        with pytest.raises(ValueError, match="out of range"):
            feature_ops.single_unit_vectors(4, units)
    with pytest.raises(ValueError, match="values for"):
        feature_ops.single_unit_vectors(4, [0, 1], [1.0])
    with pytest.raises(ValueError, match="dimension"):
        feature_ops.single_unit_vectors(0, [])


def test_every_perturbation_keeps_the_original_norm_on_hand_made_vectors():
    # §5.4: binarisation and dropout (alone or combined) keep each sample's Euclidean norm
    f = torch.tensor([[3.0, 0.0, 4.0, 0.0, 1.0, 2.0],     # norm sqrt(30)
                      [0.0, -2.0, 0.0, 2.0, 1.0, -4.0],   # norm 5
                      [0.0, 0.0, 7.0, 0.0, 0.0, 0.0]])    # one non-zero
    for kind in feature_ops.PERTURBATIONS:
        out = feature_ops.perturb(f, kind, generator=_gen(1))
        survivors = (out != 0).any(dim=1)
        torch.testing.assert_close(_norms(out)[survivors], _norms(f)[survivors], msg=kind)
    # drop-random + binarise with exactly half of six entries gone: three left, each sqrt(30/3)
    out = feature_ops.drop_random_binarise(f[:1], 0.5, _gen(2))
    nz = out[0][out[0] != 0]
    torch.testing.assert_close(nz.abs(), torch.full_like(nz, math.sqrt(30 / len(nz))))

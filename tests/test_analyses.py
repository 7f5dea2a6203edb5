"""Perturbations, interpolation, random sampling, dark knowledge and image operations (§4, §5.3-5.5)."""
import pytest
import torch

from preimage import analyses


def _features():
    g = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(4, 200, generator=g))  # ReLU-sparse, like fc6
    f[3] = 0  # an all-zero sample
    return f


def _norms(f):
    return f.flatten(1).norm(dim=1)


def test_binarise_keeps_norm_signs_and_has_one_magnitude():
    f = torch.tensor([[3.0, -4.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    b = analyses.binarise(f)
    torch.testing.assert_close(_norms(b), _norms(f))
    assert torch.equal(torch.sign(b), torch.sign(f))
    torch.testing.assert_close(b[0][b[0] != 0].abs(), torch.full((3,), 26 ** 0.5 / 3 ** 0.5))
    assert torch.equal(b[1], f[1])


def test_dropout_zeros_exactly_half_and_keeps_the_norm():
    f = torch.arange(1.0, 201.0).reshape(2, 100)
    d = analyses.dropout(f, 0.5, torch.Generator().manual_seed(1))
    assert ((d == 0).sum(dim=1) == 50).all()
    torch.testing.assert_close(_norms(d), _norms(f))
    again = analyses.dropout(f, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(d, again)  # deterministic with the same generator
    assert not torch.equal(d, analyses.dropout(f, 0.5, torch.Generator().manual_seed(2)))


def test_drop_small_binarise_drops_the_smallest_half_of_the_non_zeros():
    f = torch.tensor([[0.0, 5.0, -1.0, 0.0, 3.0, 2.0, -6.0, 0.0]])  # 5 non-zeros: drop round(2.5) = 2
    out = analyses.drop_small_binarise(f, 0.5)
    assert out[0].nonzero().flatten().tolist() == [1, 4, 6]  # -1 and 2 are gone
    assert torch.equal(torch.sign(out[0, [1, 4, 6]]), torch.tensor([1.0, 1.0, -1.0]))
    torch.testing.assert_close(_norms(out), _norms(f * torch.tensor([0, 1, 0, 0, 1, 0, 1, 0.0])))


def test_drop_random_binarise_and_dispatch():
    f = _features()
    out = analyses.perturb(f, "drop_random_binarise", torch.Generator().manual_seed(0))
    for row in out[:3]:
        assert len(set(row[row != 0].tolist())) == 1  # binarised
    assert ((out != 0).sum(dim=1) <= (f != 0).sum(dim=1)).all()
    assert torch.equal(analyses.perturb(f, "none"), f)
    with pytest.raises(ValueError, match="unknown perturbation"):
        analyses.perturb(f, "shuffle")


def test_perturbations_keep_the_shape_of_conv_maps():
    f = torch.rand(2, 4, 3, 3)
    for kind in analyses.PERTURBATIONS:
        assert analyses.perturb(f, kind, torch.Generator().manual_seed(0)).shape == f.shape


def test_interpolation_endpoints_are_exact():
    a, b = torch.rand(3, 2), torch.rand(3, 2)
    line = analyses.interpolate(a, b, 5)
    assert line.shape == (5, 3, 2) and torch.equal(line[0], a) and torch.equal(line[-1], b)
    torch.testing.assert_close(line[2], (a + b) / 2)
    with pytest.raises(ValueError):
        analyses.interpolate(a, b, 1)
    with pytest.raises(ValueError):
        analyses.interpolate(a, torch.rand(2, 3), 4)


def test_sampler_reproduces_the_marginal_sparsity():
    g = torch.Generator().manual_seed(0)
    zero_p = torch.tensor([0.1, 0.5, 0.9, 1.0])
    values = torch.rand(5000, 4, generator=g) * 3 + 1  # non-zero values in [1, 4]
    real = torch.where(torch.rand(5000, 4, generator=g) < zero_p, torch.zeros_like(values), values)
    sampler = analyses.FeatureSampler.fit(real, bins=20)
    torch.testing.assert_close(sampler.sparsity, zero_p, atol=0.02, rtol=0)
    samples = sampler.sample(20000, alpha=2.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close((samples == 0).float().mean(dim=0), zero_p, atol=0.02, rtol=0)
    nonzero = samples[samples != 0]
    assert nonzero.min() >= 2 * 1 - 1e-5 and nonzero.max() <= 2 * 4 + 1e-5  # histogram range × alpha
    gaussian = sampler.sample_truncated_gaussian(20000, alpha=2.0, generator=torch.Generator().manual_seed(2))
    assert abs((gaussian == 0).float().mean().item() - zero_p.mean().item()) < 0.02
    assert (gaussian >= 0).all()


def test_sampler_keeps_the_feature_shape():
    sampler = analyses.FeatureSampler.fit(torch.relu(torch.randn(50, 2, 3, 3)), bins=4)
    assert sampler.sample(3).shape == (3, 2, 3, 3) and sampler.sparsity.shape == (2, 3, 3)


def test_top_k_masks_keep_exactly_k_or_all_but_k():
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    top = analyses.dark_knowledge(logits, "top5")
    rest = analyses.dark_knowledge(logits, "all_but_top5")
    assert ((top != 0).sum(dim=1) == 5).all() and ((rest != 0).sum(dim=1) == 995).all()
    assert torch.equal(top.nonzero()[:, 1].reshape(3, 5).sort(dim=1).values,
                       logits.topk(5, dim=1).indices.sort(dim=1).values)
    assert torch.equal(top + rest, logits)
    assert torch.equal(analyses.dark_knowledge(logits, "all"), logits)
    with pytest.raises(ValueError):
        analyses.top_k_mask(logits, k=1001)
    with pytest.raises(ValueError):
        analyses.dark_knowledge(logits, "top3")


def test_hue_shift_known_colours_and_inverse():
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(analyses.hue_shift(red, 120), torch.tensor([0.0, 1.0, 0.0]).reshape(1, 3, 1, 1))
    torch.testing.assert_close(analyses.hue_shift(red, 240), torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[0, :, 0, 0] = 0.4  # a gray pixel stays gray
    torch.testing.assert_close(analyses.hue_shift(x, 0), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(analyses.hue_shift(x, 360), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(analyses.hue_shift(analyses.hue_shift(x, 77), -77), x, atol=1e-5, rtol=0)
    assert torch.equal(analyses.hue_shift(x, 90)[0, :, 0, 0], x[0, :, 0, 0])
    # value (max) and chroma (max - min) are unchanged
    y = analyses.hue_shift(x, 200)
    torch.testing.assert_close(y.max(1).values, x.max(1).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(y.max(1).values - y.min(1).values, x.max(1).values - x.min(1).values, atol=1e-5, rtol=0)


def test_brightness_does_not_clip():
    x = torch.full((1, 3, 2, 2), 0.5)
    assert analyses.scale_brightness(x, 10).max() == 5.0
    with pytest.raises(ValueError):
        analyses.scale_brightness(x, 0)
    with pytest.raises(ValueError):
        analyses.scale_brightness(torch.rand(3, 2, 2), 2)


def test_single_unit_vectors():
    v = analyses.single_unit_vectors(10, [2, 7], [1.5, 3.0])
    assert v.shape == (2, 10) and v[0, 2] == 1.5 and v[1, 7] == 3.0 and v.sum() == 4.5
    assert analyses.single_unit_vectors(4, [0], 2.0)[0].tolist() == [2.0, 0, 0, 0]
    with pytest.raises(ValueError, match="out of range"):
        analyses.single_unit_vectors(4, [4])

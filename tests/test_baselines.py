"""The Mahendran & Vedaldi baseline (preimage.baselines): priors, objective, descent, batching, settings."""
import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize

from preimage import baselines, metrics
from preimage.features import create

SIZE = 32


@pytest.fixture(scope="module")
def photos():
    """Three 32-px RGB photographs from scikit-image, (3, 3, 32, 32) in [0, 1]."""
    images = []
    for name in ("astronaut", "coffee", "chelsea"):
        a = getattr(skdata, name)()
        side = min(a.shape[:2])
        top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
        images.append(resize(a[top:top + side, left:left + side], (SIZE, SIZE), anti_aliasing=True))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def hog():
    return create("hog", cell_size=4)


@pytest.fixture(scope="module")
def conv2():
    return create("conv2", weights="random", seed=0, crop=67)


# --------------------------------------------------------------------------- priors by hand


def test_tv_of_a_constant_image_is_zero_with_finite_gradient():
    x = torch.full((2, 3, 5, 4), 0.3, requires_grad=True)
    for beta in (1.0, 2.0):
        tv = baselines.tv_beta(x, beta)
        assert tv.shape == (2,) and torch.equal(tv, torch.zeros(2))
        (grad,) = torch.autograd.grad(tv.sum(), x)
        assert torch.isfinite(grad).all()


def test_tv_of_a_step_edge_by_hand():
    # 3x3 image, columns 0-1 at 0 and column 2 at 2: a vertical edge of height 2 between columns 1 and 2.
    # Forward differences with the border difference 0: only the 3 pixels of column 1 see dx = 2, dy = 0.
    x = torch.zeros(1, 1, 3, 3)
    x[..., 2] = 2.0
    assert baselines.tv_beta(x, 2).item() == pytest.approx(3 * 2.0 ** 2)  # 12
    assert baselines.tv_beta(x, 1).item() == pytest.approx(3 * 2.0)  # 6
    # a diagonal corner: pixel (0, 0) differs by 1 from both neighbours → (1 + 1)^{β/2}
    y = torch.zeros(1, 1, 2, 2)
    y[0, 0, 0, 0] = 1.0
    # pixel (0,0): dx = -1, dy = -1 → 2; pixel (0,1): dy = 0, dx = 0 (border); pixel (1,0): dx = 0 → 0
    assert baselines.tv_beta(y, 2).item() == pytest.approx(2.0)
    assert baselines.tv_beta(y, 1).item() == pytest.approx(2.0 ** 0.5)
    # transposing the image transposes the roles of dx and dy
    assert baselines.tv_beta(x.transpose(-1, -2), 2).item() == pytest.approx(12.0)


def test_alpha_norm_by_hand():
    x = torch.tensor([[[[-2.0, 1.0], [0.0, 0.5]]]])
    assert baselines.alpha_norm(x, 6).item() == pytest.approx(64 + 1 + 0.5 ** 6)
    assert baselines.alpha_norm(x, 2).item() == pytest.approx(4 + 1 + 0.25)
    assert baselines.alpha_norm(torch.stack([x[0], 2 * x[0]]), 1).tolist() == pytest.approx([3.5, 7.0])


def test_priors_are_normalised_by_b_and_v():
    # An image at the bound B everywhere has Rα = C (channels); steps of V along rows have R_TV ≈ C.
    x = torch.full((1, 3, 8, 8), baselines.PIXEL_BOUND)
    terms = baselines.objective(lambda im: im.flatten(1), x, baselines.to_image(x).flatten(1), 1.0, 1.0)
    assert terms["alpha_prior"].item() == pytest.approx(3.0)
    assert terms["feature_loss"].item() == pytest.approx(0.0, abs=1e-12)
    ramp = (torch.arange(8.0) * baselines.TV_SCALE).view(1, 1, 1, 8).expand(1, 3, 8, 8)
    terms = baselines.objective(lambda im: im.flatten(1), ramp, torch.ones(1, 192), 0.0, 1.0)
    assert terms["tv_prior"].item() == pytest.approx(3.0 * 7 / 8)  # the last column has no step


# --------------------------------------------------------------------------- gradients and errors


def test_the_gradient_reaches_the_image_through_hog_and_alexnet(photos, hog, conv2):
    for rep in (hog, conv2):
        targets = rep(photos[[1, 0]]).detach()  # the codes of the other image: the data term is not at a minimum
        x = baselines.from_image(photos[:2]).requires_grad_(True)
        terms = baselines.objective(rep, x, targets, lambda_alpha=0.0, lambda_tv=0.0)
        (grad,) = torch.autograd.grad(terms["feature_loss"].sum(), x)
        assert torch.isfinite(grad).all(), rep.name
        assert (grad.flatten(1).abs().sum(dim=1) > 0).all(), rep.name


def test_feature_space_error_of_the_true_images_is_zero(photos, hog, conv2):
    for rep in (hog, conv2):
        targets = rep(photos)
        err = baselines.feature_space_error(rep, photos, targets, batch_size=2)
        assert err.shape == (3,) and err == pytest.approx([0, 0, 0], abs=1e-6)
        other = baselines.feature_space_error(rep, photos.flip(0), targets)
        assert (other[[0, 2]] > 0.01).all()


# --------------------------------------------------------------------------- the optimisation


@pytest.mark.parametrize("name", ["hog", "conv2"])
def test_the_objective_decreases_and_beats_the_noise_start(photos, hog, conv2, name):
    rep = {"hog": hog, "conv2": conv2}[name]
    targets = rep(photos[:2]).detach()
    config = baselines.MVConfig(iterations=30 if name == "hog" else 20, log_every=5)
    result = baselines.optimise_preimage(rep, targets, SIZE, name, config)
    first, last = result.history[0], result.history[-1]
    assert first["iteration"] == 0 and last["iteration"] == config.iterations - 1
    assert last["objective"] < 0.8 * first["objective"]
    assert last["feature_loss"] < first["feature_loss"]
    assert result.images.shape == (2, 3, SIZE, SIZE)
    assert result.images.min() >= 0 and result.images.max() <= 1
    channels = 1 if name == "hog" else 3
    noise = baselines.to_image(torch.stack([baselines.noise_start(i, channels, SIZE, config) for i in range(2)]))
    assert (baselines.feature_space_error(rep, result.images, targets) <
            baselines.feature_space_error(rep, noise.clamp(0, 1), targets)).all()
    assert result.seconds > 0 and result.seconds_per_image == pytest.approx(result.seconds / 2)


def test_hog_inversion_is_grey_and_seeded(photos, hog):
    targets = hog(photos[:1]).detach()
    config = baselines.MVConfig(iterations=5, seed=3)
    a = baselines.optimise_preimage(hog, targets, SIZE, "hog", config)
    b = baselines.optimise_preimage(hog, targets, SIZE, "hog", config)
    c = baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(iterations=5, seed=4))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(a.images[:, 0], a.images[:, 1]) and torch.equal(a.images[:, 1], a.images[:, 2])


def test_batching_does_not_change_the_result(photos, hog, conv2):
    for rep, name in ((hog, "hog"), (conv2, "conv2")):
        targets = rep(photos).detach()
        runs = [baselines.optimise_preimage(rep, targets, SIZE, name, baselines.MVConfig(iterations=6, batch_size=b, log_every=2))
                for b in (3, 2, 1)]
        for other in runs[1:]:
            torch.testing.assert_close(other.images, runs[0].images, atol=2e-4, rtol=0)
            for h0, h1 in zip(runs[0].history, other.history):
                assert h0["iteration"] == h1["iteration"]
                assert h1["objective"] == pytest.approx(h0["objective"], rel=1e-3)


def test_progress_and_history_cover_all_images(photos, hog):
    targets = hog(photos).detach()
    calls = []
    result = baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(iterations=3, batch_size=2, log_every=1),
                             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 3), (3, 3)]
    assert [h["iteration"] for h in result.history] == [0, 1, 2]
    assert set(result.history[0]) >= {"objective", "feature_loss", "feature_error", "alpha_prior", "tv_prior", "lr"}


# --------------------------------------------------------------------------- settings


def test_learning_rate_schedule_divides_by_ten_at_the_decay_points():
    config = baselines.MVConfig(iterations=8, decay_at=(0.25, 0.75))
    assert baselines.lr_schedule(config, 1.0) == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert baselines.lr_schedule(baselines.MVConfig(iterations=4, decay_at=0.5), 2.0) == pytest.approx([2, 2, 0.2, 0.2])


def test_settings_defaults_overrides_and_resolution(conv2, hog):
    config = baselines.MVConfig()
    assert set(baselines.DEFAULT_LAMBDAS) == {"hog", "hogb", "dsift", "conv1", "conv2", "conv3", "conv4", "conv5",
                                              "fc6", "fc7", "fc8"}
    tv = [baselines.DEFAULT_LAMBDAS[n]["lambda_tv"] for n in ("conv1", "conv3", "conv5", "fc8")]
    assert tv == sorted(tv) and tv[0] < tv[-1]  # stronger TV for deeper layers
    s = baselines.settings("fc6", config)
    assert s["lambda_tv"] == baselines.DEFAULT_LAMBDAS["fc6"]["lambda_tv"] and not s["grey"]
    other = baselines.settings("torchvision:resnet18:layer4", config)
    assert other["lambda_tv"] == baselines.FALLBACK_LAMBDAS["lambda_tv"] and other["lr"] == baselines.FALLBACK_LR
    assert baselines.settings("hog", config)["grey"]
    assert baselines.settings("fc6", baselines.MVConfig(lr=0.5, lambda_tv=3.0))["lr"] == 0.5
    # a 32-px image that conv2 (crop 67) upsamples: λTV scaled by (32/67)^2; HOG does not resize
    s = baselines.settings("conv2", config, conv2, SIZE)
    assert s["lambda_tv"] == pytest.approx(baselines.DEFAULT_LAMBDAS["conv2"]["lambda_tv"] * (SIZE / 67) ** 2)
    assert baselines.settings("conv2", config, conv2, 67)["tv_resolution_factor"] == 1.0
    assert baselines.settings("hog", config, hog, SIZE)["tv_resolution_factor"] == 1.0
    with pytest.raises(ValueError):
        baselines.optimise_preimage(hog, torch.zeros(1, 31, 8, 8), SIZE, "hog", baselines.MVConfig(iterations=0))


def test_variants_take_their_base_representations_settings_from_the_catalog():
    """The workflow passes ``PLAN.options(slug)["name"]`` as the base name: fc6 for fc6-ae and fc6-random."""
    from preimage.config import validate_config
    from preimage.plan import Plan

    plan = Plan(validate_config({"representations": ["hog", "fc6"],
                                       "variants": {"autoencoder": ["fc6"], "untrained_control": "always"}}))
    config = baselines.MVConfig()
    for slug in ("fc6-ae", "fc6-random"):
        name = plan.options(slug)["name"]
        assert name == "fc6" and baselines.settings(name, config) == baselines.settings("fc6", config)
    assert plan.options("hog")["name"] == "hog"


# --------------------------------------------------------------------------- σ, restarts, masks, M&V's error


def test_sigma_scales_the_variable_not_the_image_or_the_priors(photos):
    sigma = baselines.MV_SIGMA
    u = baselines.from_image(photos, sigma=sigma)
    torch.testing.assert_close(baselines.to_image(u, sigma), photos, atol=1e-6, rtol=0)
    identity = lambda im: im.flatten(1)  # noqa: E731
    scaled = baselines.objective(identity, u, photos.flatten(1), 1.0, 1.0, sigma=sigma)
    plain = baselines.objective(identity, baselines.from_image(photos), photos.flatten(1), 1.0, 1.0)
    assert scaled["feature_loss"].abs().max() < 1e-10
    for key in ("alpha_prior", "tv_prior"):  # priors of the image deviation: the same whatever σ
        torch.testing.assert_close(scaled[key], plain[key], rtol=1e-4, atol=0)
    # defaults: the image step and noise start we calibrated, in units of u
    config = baselines.MVConfig()
    chosen = baselines.settings("hog", config)
    assert chosen["sigma"] == sigma and chosen["lr"] * sigma == pytest.approx(baselines.PIXEL_STEP)
    assert config.init_std * sigma == pytest.approx(baselines.PIXEL_INIT_STD)
    assert baselines.settings("hog", baselines.MVConfig(sigma=1.0))["sigma"] == 1.0


def test_sigma_changes_the_steps_in_the_image(photos, hog):
    targets = hog(photos[:1]).detach()
    small = baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(iterations=3, sigma=0.05))
    large = baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(iterations=3, sigma=0.5))
    mean = baselines.MEAN_GREY
    assert (small.images - mean).abs().mean() < (large.images - mean).abs().mean()


def test_restarts_give_different_reconstructions_and_restart_0_is_the_single_run(photos, hog):
    targets = hog(photos[:2]).detach()
    single = baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(iterations=4))
    three = baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(iterations=4, restarts=3))
    assert three.samples.shape == (2, 3, 3, SIZE, SIZE) and torch.equal(three.samples[:, 0], three.images)
    torch.testing.assert_close(three.images, single.images, atol=2e-4, rtol=0)  # same starts, other batch
    for i in range(2):
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert (three.samples[i, a] - three.samples[i, b]).abs().max() > 1e-3
    assert three.seconds_per_image == pytest.approx(three.seconds / 6)
    diversity = metrics.sample_diversity(three.samples, normaliser=1.0)
    assert diversity.shape == (2,) and (diversity > 0).all()
    with pytest.raises(ValueError):
        baselines.optimise_preimage(hog, targets, SIZE, "hog", baselines.MVConfig(restarts=0))


def test_sample_diversity_by_hand():
    a = torch.zeros(1, 3, 2, 2)
    samples = torch.stack([a, a + 0.5, a + 1.0], dim=1)  # distances 1, 2, 1 (12 values, steps 0.5 and 1)
    side = 12 ** 0.5
    expected = (0.5 * side + 1.0 * side + 0.5 * side) / 3
    assert metrics.sample_diversity(samples, 2.0).tolist() == pytest.approx([expected / 2])
    assert metrics.sample_diversity(torch.stack([a, a], dim=1), 1.0).tolist() == [0.0]
    with pytest.raises(ValueError):
        metrics.sample_diversity(samples[:, :1], 1.0)


def test_the_mask_restricts_the_data_term_to_the_kept_activations():
    identity = lambda im: im  # noqa: E731
    x = torch.zeros(1, 3, 4, 4)
    target = baselines.to_image(x).clone()
    target[..., 0, 0] += 1.0  # the code differs from Φ(img(x)) at one activation
    mask = torch.ones(1, 3, 4, 4)
    mask[..., 0, 0] = 0
    assert baselines.objective(identity, x, target, 0, 0, mask=mask)["feature_loss"].item() == pytest.approx(0)
    assert baselines.objective(identity, x, target, 0, 0)["feature_loss"].item() > 0
    errors = baselines.feature_space_error(identity, baselines.to_image(x), target, mask=mask)
    assert errors.tolist() == pytest.approx([0.0])


def test_mv_normalised_error_by_hand():
    targets = torch.tensor([[0.0, 0.0], [3.0, 4.0]])  # squared distances: 0, 25, 25, 0 → mean 12.5
    assert baselines.mv_normalised_error(np.array([12.5, 25.0]), targets).tolist() == pytest.approx([1.0, 2.0])
    with pytest.raises(ValueError):
        baselines.mv_normalised_error(np.array([1.0]), targets[:1])


@pytest.mark.parametrize("name,params", [("hogb", {"cell_size": 4}), ("dsift", {"bin_size": 4, "step": 4})])
def test_hogb_and_dsift_invert_by_optimisation(photos, name, params):
    rep = create(name, **params)
    targets = rep(photos[:1]).detach()
    result = baselines.optimise_preimage(rep, targets, SIZE, name, baselines.MVConfig(iterations=25, log_every=5))
    assert result.settings["grey"] and torch.equal(result.images[:, 0], result.images[:, 1])
    assert result.history[-1]["feature_loss"] < 0.7 * result.history[0]["feature_loss"]

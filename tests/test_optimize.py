"""Mahendran & Vedaldi's optimisation-based inversion: priors, descent, gradients, batching."""
import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize

from preimage import optimize
from preimage.features import create

SIZE = 32


@pytest.fixture(scope="module")
def photos():
    images = [resize(getattr(skdata, name)(), (SIZE, SIZE), anti_aliasing=True) for name in ("astronaut", "coffee")]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def test_alpha_norm_and_tv_by_hand():
    x = torch.zeros(1, 1, 3, 3)
    assert optimize.tv_beta(x + 5, 2).item() == 0  # constant image: no variation
    x[0, 0, :, 2] = 2.0  # a vertical step edge of height 2 between columns 1 and 2
    # pixels with both neighbours: (i, j) for i, j in {0, 1}; those at j = 1 see dx = 2 → 2 rows × 4
    assert optimize.tv_beta(x, 2).item() == pytest.approx(8.0)
    assert optimize.tv_beta(x, 1).item() == pytest.approx(4.0, rel=1e-3)
    assert optimize.alpha_norm(torch.tensor([[[[-2.0, 1.0]]]]), 6).item() == pytest.approx(65.0)


def test_gradient_reaches_the_image_through_hog_and_alexnet(photos):
    for rep in (create("hog", cell_size=4), create("conv2", weights="random", crop=67)):
        x = (photos * 255 - optimize._mean("cpu")).requires_grad_(True)
        targets = rep(photos[[1, 0]]).detach()
        terms = optimize.objective(rep, x, targets, 100.0, 1.0, 1.0, 6.0, 2.0)
        (grad,) = torch.autograd.grad(terms["total"].sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, rep.name


@pytest.mark.parametrize("name, params", [("hog", {"cell_size": 4}), ("fc6", {"weights": "random", "crop": 67})])
def test_the_objective_decreases_and_beats_the_noise_start(photos, name, params):
    rep = create(name, **params)
    targets = rep(photos).detach()
    config = optimize.MVConfig(iterations=40, log_every=10)
    result = optimize.invert(rep, targets, SIZE, name, config)
    totals = [h["total"] for h in result.history]
    assert totals[-1] < totals[0] and result.history[-1]["data"] < result.history[0]["data"]
    assert result.images.shape == (2, 3, SIZE, SIZE) and 0 <= result.images.min() and result.images.max() <= 1
    noise = optimize.to_image(torch.stack([optimize._start(i, SIZE, 0) for i in range(2)])).clamp(0, 1)
    assert (optimize.feature_space_error(rep, result.images, targets) <
            optimize.feature_space_error(rep, noise, targets)).all()
    assert result.seconds > 0 and result.seconds_per_image == pytest.approx(result.seconds / 2)


def test_feature_error_of_the_true_images_is_zero(photos):
    rep = create("hog", cell_size=4)
    assert optimize.feature_space_error(rep, photos, rep(photos)) == pytest.approx([0, 0], abs=1e-6)


def test_batching_does_not_change_the_result(photos):
    rep = create("hog", cell_size=4)
    targets = rep(photos).detach()
    together = optimize.invert(rep, targets, SIZE, "hog", optimize.MVConfig(iterations=10, batch_size=2))
    alone = optimize.invert(rep, targets, SIZE, "hog", optimize.MVConfig(iterations=10, batch_size=1))
    torch.testing.assert_close(together.images, alone.images, atol=1e-4, rtol=0)


def test_settings_per_layer_and_overrides():
    assert optimize._settings("hog", optimize.MVConfig())["momentum"] == 0.5
    assert optimize._settings("fc6-ae", optimize.MVConfig())["data_weight"] == optimize.DEFAULT_LAMBDAS["fc6"][0]
    assert optimize._settings("fc6", optimize.MVConfig(lr=0.5))["lr"] == 0.5
    with pytest.raises(ValueError):
        optimize.invert(create("hog"), torch.zeros(1, 31, 4, 4), SIZE, "hog", optimize.MVConfig(iterations=0))

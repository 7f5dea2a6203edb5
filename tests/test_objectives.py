"""The losses of Appendix A (feature space, adversarial), their training and their evaluation measures."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from preimage import decoding, objectives, train
from preimage.objectives import (Discriminator, FeatureObjective, GanObjective, GanSettings, NotDifferentiable,
                                  build_objective, differentiable_representation, require_differentiable)
from preimage.config import ConfigError, validate_config
from preimage.features import create
from preimage.metrics import high_frequency_energy, relative_feature_error, sharpness
from tiny_data import assert_same_decoder_weights, builtin_stores

SIZE = 32
HOG = {"name": "hog", "params": {"cell_size": 8}}
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- loss terms


def _hog_batch(seed=0, n=4, size=16):
    torch.manual_seed(seed)
    images = torch.rand(n, 3, size, size)
    hog = differentiable_representation("hog", {"cell_size": 4}, CPU)
    return hog, images, hog(images)


def test_feature_loss_is_zero_at_the_original_and_the_scaled_squared_feature_distance_elsewhere():
    hog, images, features = _hog_batch()
    scale = 3.0
    objective = FeatureObjective(hog, images.shape[-1], scale, CPU)
    z = features * scale
    at_original = objective(images, images, z)
    assert at_original["loss"].item() == pytest.approx(0.0, abs=1e-10)
    assert at_original["pixel"].item() == 0.0
    other = (images + 0.1 * torch.randn_like(images)).clamp(0, 1)
    expected = ((hog(other) - features) ** 2).mean() * scale**2
    assert objective(other, images, z)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_loss_reaches_the_image_through_a_smaller_prediction():
    """A decoder predicting a smaller image (the fc decoders, §5.1) is upsampled to the region Φ sees."""
    hog, images, features = _hog_batch()
    objective = FeatureObjective(hog, 16, 1.0, CPU)
    small = torch.rand(4, 3, 8, 8, requires_grad=True)
    objective(small, images[..., ::2, ::2], features)["loss"].backward()
    assert small.grad is not None and small.grad.abs().sum() > 0


def _gan(settings=GanSettings(), size=16):
    hog, images, features = _hog_batch(size=size)
    torch.manual_seed(1)
    objective = GanObjective(hog, size, 1.0, CPU, output_size=size, width=0.125, lr=1e-3, betas=(0.9, 0.999),
                             settings=settings)
    return objective, images, features


def test_gan_loss_is_the_weighted_sum_of_its_logged_terms():
    settings = GanSettings(feature_weight=2.0, adversarial_weight=0.5, pixel_weight=3.0)
    objective, images, features = _gan(settings)
    prediction = (images + 0.05 * torch.randn_like(images)).requires_grad_(True)
    terms = objective(prediction, images, features)
    assert set(terms) == {"loss", "feature", "adversarial", "pixel", "d_loss", "d_real", "d_fake", "d_steps"}
    expected = 2.0 * terms["feature"] + 0.5 * terms["adversarial"] + 3.0 * terms["pixel"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["pixel"].item() == pytest.approx(((prediction - images) ** 2).mean().item(), rel=1e-6)
    # the decoder's loss reaches the image, never the discriminator's gradients (D has its own step)
    before = [None if p.grad is None else p.grad.clone() for p in objective.discriminator.parameters()]
    terms["loss"].backward()
    assert prediction.grad.abs().sum() > 0
    for old, p in zip(before, objective.discriminator.parameters()):
        assert (old is None and p.grad is None) or torch.equal(old, p.grad)


def test_adversarial_terms_of_an_undecided_discriminator_are_log_2():
    objective, images, features = _gan(GanSettings(pause_ratio=1e9))
    objective.last_adversarial = 1.0  # D pauses: it stays as set here
    for p in objective.discriminator.parameters():
        torch.nn.init.zeros_(p)  # logit 0 everywhere: D(x) = 1/2
    terms = objective(images.clone(), images, features)
    assert terms["adversarial"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["d_loss"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert terms["d_real"].item() == pytest.approx(0.5) and terms["d_fake"].item() == pytest.approx(0.5)
    assert terms["d_steps"].item() == 0.0


def test_discriminator_steps_unless_it_wins_by_far():
    objective, images, features = _gan()
    before = [p.detach().clone() for p in objective.discriminator.parameters()]
    assert objective(images * 0.5, images, features)["d_steps"].item() == 1.0  # the first step always runs
    changed = [not torch.equal(a, b) for a, b in zip(before, objective.discriminator.parameters())]
    assert any(changed)
    paused, _, _ = _gan(GanSettings(pause_ratio=1e9))
    paused.last_adversarial = 1.0
    frozen = [p.detach().clone() for p in paused.discriminator.parameters()]
    assert paused(images * 0.5, images, features)["d_steps"].item() == 0.0
    assert all(torch.equal(a, b) for a, b in zip(frozen, paused.discriminator.parameters()))


def test_discriminator_shapes():
    for size in (8, 32, 64, 192):
        logits = Discriminator(size, width=0.125)(torch.rand(2, 3, size, size))
        assert logits.shape == (2,)
    with pytest.raises(ValueError):
        Discriminator(2)


def test_gan_settings_refuse_unknown_keys():
    assert GanSettings.from_mapping({"adversarial_weight": 0.5}).adversarial_weight == 0.5
    with pytest.raises(TypeError, match="decoder.gan"):
        GanSettings.from_mapping({"adversarial": 0.5})


# --------------------------------------------------------------------------- differentiability


@pytest.mark.parametrize("name", ["sift", "lbp"])
def test_non_differentiable_representations_are_refused_in_the_library(name):
    assert not create(name).differentiable
    with pytest.raises(NotDifferentiable, match=f"{name}.*not differentiable"):
        require_differentiable(name)
    with pytest.raises(NotDifferentiable):
        build_objective({"kind": "gan", "representation": {"name": name, "params": {}}}, image_size=32,
                        output_size=32, feature_scale=1.0, width=0.125, lr=1e-3, betas=(0.9, 0.999), device=CPU,
                        use_amp=False)


def test_differentiable_representations_pass_and_are_frozen():
    for name in ("hog", "conv1"):
        require_differentiable(name)
    net = differentiable_representation("conv1", {"weights": "random", "crop": 32}, CPU)
    assert not any(p.requires_grad for p in net.net.parameters())
    assert build_objective(None, image_size=32, output_size=32, feature_scale=1.0, width=1.0, lr=1e-3,
                           betas=(0.9, 0.999), device=CPU, use_amp=False) is None  # pixel: the default objective


@pytest.mark.parametrize("overrides, key", [
    ({"representations": ["sift", "hog"], "variants": {"gan": ["sift"]}}, "variants.gan"),
    ({"representations": ["lbp"], "variants": {"feature": ["lbp"]}}, "variants.feature"),
    ({"representations": ["lbp", "hog"], "decoder": {"loss": {"default": "pixel", "lbp": "gan"}}}, "decoder.loss"),
    ({"representations": ["sift"], "decoder": {"loss": "feature"}}, "decoder.loss"),
])
def test_non_differentiable_representations_are_refused_at_config_check(overrides, key):
    with pytest.raises(ConfigError, match=f"{key}.*not differentiable"):
        validate_config(overrides)


def test_differentiable_losses_pass_the_config_check():
    config = validate_config({"representations": ["hog", "sift"], "variants": {"gan": ["hog"], "feature": ["hog"]},
                              "decoder": {"loss": {"default": "pixel", "hog": "feature"}}})
    assert config["decoder"]["gan"]["adversarial_weight"] == GanSettings().adversarial_weight
    assert config["decoder"]["init"] == "scratch"


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Builtin crops at 32 px and their HOG features (train only)."""
    root = tmp_path_factory.mktemp("tiny_gan")
    builtin_stores(root, SIZE, 4, 2, caches=[("hog", HOG["params"], "hog")], splits=["train"])
    return root


def _train(root, name, kind="gan", stop_after_epochs=None, init_from=None, **gan):
    cfg = dict(epochs=3, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.15)
    loss = {"kind": kind, "representation": HOG, "gan": gan}
    return train.train_decoder("hog", str(root / "hog_train.h5"), str(root / "train.h5"), str(root / f"{name}.pt"),
                               str(root / f"{name}.csv"), str(root / "ckpt" / f"{name}.pt"), cfg,
                               stop_after_epochs=stop_after_epochs, loss=loss, init_from=init_from)


@pytest.fixture(scope="module")
def gan_trained(tiny):
    """An uninterrupted -gan training run (3 epochs), its files under ``tiny``: ``gan.pt``, ``gan.csv``."""
    return _train(tiny, "gan")


def test_gan_training_logs_every_term_and_records_its_loss(tiny, gan_trained):
    log = pd.read_csv(tiny / "gan.csv")
    for column in ("train_loss", "val_loss", "train_feature", "train_adversarial", "train_pixel", "train_d_loss",
                   "train_d_real", "train_d_fake", "train_d_steps", "val_feature"):
        assert column in log.columns and log[column].notna().all(), column
    assert log["epoch"].tolist() == [1, 2, 3]
    _, meta = decoding.load_decoder(tiny / "gan.pt")
    assert meta["loss"]["loss"] == "gan" and meta["loss"]["adversarial_weight"] == GanSettings().adversarial_weight
    assert "adversarial" in meta["label"]


def test_killed_gan_training_resumes_to_the_same_weights(tiny, gan_trained):
    """A -gan job stopped after epoch 1 (its checkpoint holds decoder, discriminator, both optimisers and
    the RNG states) and restarted ends with the weights and log of an uninterrupted run."""
    assert _train(tiny, "gan_resumed", stop_after_epochs=1) == {"stopped_at": 1}
    checkpoint = torch.load(tiny / "ckpt" / "gan_resumed.pt", weights_only=True)
    assert {"discriminator", "optimizer", "last_adversarial"} <= set(checkpoint["objective"])
    _train(tiny, "gan_resumed")
    assert_same_decoder_weights(tiny / "gan.pt", tiny / "gan_resumed.pt")
    pd.testing.assert_frame_equal(pd.read_csv(tiny / "gan.csv").drop(columns=["seconds", "images_per_s"]),
                                  pd.read_csv(tiny / "gan_resumed.csv").drop(columns=["seconds", "images_per_s"]))


def test_a_changed_loss_weight_does_not_resume_the_old_checkpoint(tiny):
    _train(tiny, "reweighted", stop_after_epochs=1)
    result = _train(tiny, "reweighted", adversarial_weight=0.5)
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]


@pytest.fixture(scope="module")
def warm_started(tiny):
    """A pixel decoder, and a feature-loss decoder trained on from it (3 epochs): its training result."""
    _train(tiny, "pixel", kind="pixel")
    return _train(tiny, "warm", kind="feature", init_from=str(tiny / "pixel.pt"))


def test_feature_training_can_start_from_the_pixel_decoder(tiny, warm_started):
    result = warm_started
    assert result["meta"]["init"] and result["meta"]["loss"] == {"loss": "feature"}
    cfg = dict(epochs=1, batch_size=8, width=0.25, device="cpu", seed=0)
    with pytest.raises(ValueError, match="differs in width"):
        train.train_decoder("hog", str(tiny / "hog_train.h5"), str(tiny / "train.h5"), str(tiny / "x.pt"),
                            str(tiny / "x.csv"), str(tiny / "ckpt" / "x.pt"), cfg,
                            loss={"kind": "feature", "representation": HOG}, init_from=str(tiny / "pixel.pt"))


def test_nan_in_any_term_stops_with_a_clear_error(tiny, monkeypatch):
    real = objectives.GanObjective.feature_loss
    monkeypatch.setattr(objectives.GanObjective, "feature_loss", lambda self, p, z: real(self, p, z) * float("nan"))
    with pytest.raises(train.NonFiniteLoss, match="became nan"):
        _train(tiny, "nan")


# --------------------------------------------------------------------------- evaluation measures


def test_relative_feature_error_known_values():
    targets = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    features = np.array([[3.0, 9.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(relative_feature_error(features, targets), [1.0, 0.0, 0.0])
    assert relative_feature_error(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), 2.0))[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        relative_feature_error(np.ones((2, 3)), np.ones((2, 4)))


def _cosines(frequency, amplitude=1.0, size=64, offset=0.5):
    """(1, 3, size, size) images: vertical stripes ``offset + amplitude·cos(2π·frequency·column)``."""
    column = torch.arange(size, dtype=torch.float64)
    stripe = offset + amplitude * torch.cos(2 * math.pi * frequency * column)
    return stripe.expand(1, 3, size, size).clone()


def test_high_frequency_energy_known_values():
    size = 64
    fine = _cosines(16 / size, amplitude=0.25, size=size)  # 0.25 cycles/px: above the 0.125 cutoff
    window = torch.sin(math.pi * torch.arange(size, dtype=torch.float64) / size) ** 2
    windowed = (fine - fine.mean(dim=(-2, -1), keepdim=True)) * window[:, None] * window[None, :]
    # all of the windowed image's energy lies above the cutoff (Parseval)
    assert high_frequency_energy(fine)[0] == pytest.approx(float((windowed**2).sum()), rel=1e-9)
    coarse = _cosines(4 / size, amplitude=0.25, size=size)  # 1/16 cycles/px, and the window's ±1/64: below
    assert high_frequency_energy(coarse)[0] == pytest.approx(0.0, abs=1e-20)
    assert high_frequency_energy(torch.full((1, 3, size, size), 0.7))[0] == pytest.approx(0.0, abs=1e-20)


def test_sharpness_known_values():
    fine, coarse = _cosines(16 / 64, 0.4), _cosines(4 / 64, 0.4)
    assert sharpness(fine, fine) == pytest.approx(1.0)
    assert sharpness(_cosines(16 / 64, 0.2), fine) == pytest.approx(0.25)  # half the amplitude: a quarter
    assert sharpness(fine + coarse - 0.5, fine) == pytest.approx(1.0)  # coarse structure does not count
    assert sharpness(torch.full_like(fine, 0.5), fine) == pytest.approx(0.0)
    blurred = torch.nn.functional.avg_pool2d(fine, 3, stride=1, padding=1, count_include_pad=False)
    assert 0 < sharpness(blurred, fine) < 0.5
    assert math.isnan(sharpness(fine, torch.full_like(fine, 0.5)))  # originals without any detail: undefined


def test_figure_12_13_comparison_uses_the_optimisations_images(tiny, tmp_path, monkeypatch):
    from preimage import figures, hdf5, image_store

    with image_store.ImageStore(tiny / "test.h5") as images:
        n, originals = len(images), images.read(0, len(images))
    decoders = {}
    for label, blur in (("hog-gan", 0), ("hog", 2)):
        h5 = tmp_path / f"{label}.h5"
        with hdf5.create_h5(h5) as handle:
            hdf5.create_dataset(handle, "reconstructions", data=(originals // (blur + 1)).astype(np.uint8))
        csv = tmp_path / f"{label}.csv"
        pd.DataFrame([{"method": "decoder", "error": 0.5, "feature_error": 0.25, "sharpness": 0.75}]).to_csv(csv)
        decoders[label] = (str(h5), str(csv))
    mv_h5, mv_csv = tmp_path / "mv.h5", tmp_path / "mv.csv"
    inverted = np.array([0, n - 1])
    with hdf5.create_h5(mv_h5) as handle:
        hdf5.create_dataset(handle, "indices", data=inverted)
        hdf5.create_dataset(handle, "mahendran_vedaldi", data=originals[inverted])
    pd.DataFrame([{"method": "mahendran_vedaldi", "error": 0.9, "feature_error": 0.1}]).to_csv(mv_csv)
    drawn = []
    original_grid = figures.image_grid
    monkeypatch.setattr(figures, "image_grid",
                        lambda rows, path, title=None: (drawn.extend(rows), original_grid(rows, path, title)))
    figures.loss_comparison(str(tiny / "test.h5"), decoders, str(tmp_path / "fig.png"), n_show=8,
                            mahendran_vedaldi=(str(mv_h5), str(mv_csv)))
    assert [label.split("\n")[0] for label, _ in drawn] == ["input", "hog-gan", "hog", "Mahendran &"]
    assert all(len(images) == 2 for _, images in drawn)  # the two images the optimisation inverted
    assert "0.500 / 0.250 / 0.75" in drawn[1][0]
    assert drawn[3][0].endswith("0.900 / 0.100 / 1.00")  # its images are the originals: sharpness 1
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_a_feature_loss_decoder_keeps_its_last_epoch_not_the_pixel_start(tiny, warm_started):
    """The validation loss is the pixel loss: choosing on it would hand back the pixel decoder a
    feature-loss run starts from (epoch 0), so Appendix A's objectives keep their last epoch."""
    result = warm_started
    assert result["meta"]["kept_epoch"] == 3
    start = torch.load(tiny / "pixel.pt", weights_only=True)["state_dict"]
    kept = torch.load(tiny / "warm.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(start[key], kept[key]) for key in start)

"""The catalog that resolves every configured representation name (slug, family, variant, params),
the naming functions, and the plan built on the catalog (jobs, layer lists, result paths)."""
import pytest

from preimage.config import validate_config
from preimage.plan import Plan
from preimage.representations import (Catalog, name_of_slug, node_label, per_rep, slug_of, split_variant,
                                      variant_of)


def _catalog(**overrides):
    return Catalog(validate_config(overrides))


def _plan(**overrides):
    return Plan(validate_config(overrides))


def test_slugs_of_configured_names():
    assert slug_of("hog") == "hog" and slug_of("fc6") == "fc6"
    assert slug_of("torchvision:resnet50:layer4") == "resnet50@layer4"
    assert slug_of("efficientnet_lite0:stages.3") == "efficientnet_lite0@stages.3"


@pytest.mark.parametrize("name", ["hog", "fc6", "torchvision:resnet50:layer4", "torchvision:vit_b_16:encoder.ln",
                                  "efficientnet_lite0:stages.3", "efficientnet_lite0:pool"])
def test_a_slug_names_its_configured_representation(name):
    assert name_of_slug(slug_of(name)) == name


@pytest.mark.parametrize("name, base, variant", [
    ("fc6", "fc6", None), ("fc6-ae", "fc6", "ae"), ("conv5-random", "conv5", "random"),
    ("hog-feature", "hog", "feature"), ("efficientnet_lite0:pool-gan", "efficientnet_lite0:pool", "gan"),
    ("resnet50@layer4-random", "resnet50@layer4", "random"),
    ("torchvision:convnext_tiny:features.1.0.block", "torchvision:convnext_tiny:features.1.0.block", None)])
def test_variants_are_split_from_names_and_slugs(name, base, variant):
    assert split_variant(name) == (base, variant) and variant_of(name) == variant


def test_node_labels_are_the_node_of_a_network_name():
    assert [node_label(n) for n in ("conv5", "torchvision:resnet50:layer4", "efficientnet_lite0:stages.3")] == [
        "conv5", "layer4", "stages.3"]


def test_each_name_resolves_to_its_family_variant_and_parameters():
    cat = _catalog(representations=["hog", "fc6", "torchvision:resnet18:layer1"],
                   features={"hog": {"cell_size": 4}, "alexnet": {"weights": "imagenet"},
                             "torchvision": {"weights": "random"}},
                   variants={"autoencoder": ["fc6"]})
    assert cat["hog"].family == "hog" and cat["hog"].params["cell_size"] == 4 and not cat["hog"].uses_gpu
    assert cat["fc6"].family == "alexnet" and cat["fc6"].uses_gpu and cat["fc6"].variant is None
    ae, control = cat["fc6-ae"], cat["fc6-random"]
    assert (ae.variant, ae.base, ae.name, ae.display) == ("ae", "fc6", "fc6", "fc6-ae")
    assert (control.variant, control.params["weights"]) == ("random", "random")
    assert cat["fc6"].params["weights"] == "imagenet"  # the control does not change its base
    assert Plan(cat.config, cat, results="out").feature_params("fc6-ae")["weights"] == "out/fc6-ae/encoder.pt"
    assert _plan().results == "results"
    net = cat["resnet18@layer1"]
    assert (net.family, net.name, net.display) == ("torchvision", "torchvision:resnet18:layer1",
                                                   "torchvision:resnet18:layer1")
    # random torchvision weights: the configured rows already are the untrained control
    assert "resnet18@layer1-random" not in cat
    assert cat.slugs == ["hog", "fc6", "resnet18@layer1", "fc6-ae", "fc6-random"]
    assert Plan(cat.config, cat).decoder_slugs() == ["hog", "fc6", "resnet18@layer1", "fc6-random"]
    assert cat.feature_slugs(gpu=False) == ["hog"]


@pytest.mark.parametrize("mode, expected", [("auto", ["conv5-random"]), ("always", ["conv5-random"]), ("never", [])])
def test_untrained_controls_follow_the_mode_and_the_weights(mode, expected):
    trained = _catalog(representations=["hog", "conv5"], features={"alexnet": {"weights": "imagenet"}},
                       variants={"untrained_control": mode})
    assert trained.with_variant("random") == expected
    untrained = _catalog(representations=["conv5"], features={"alexnet": {"weights": "random"}},
                         variants={"untrained_control": mode})
    assert untrained.with_variant("random") == (["conv5-random"] if mode == "always" else [])


def test_lists_naming_unconfigured_representations_are_trimmed_with_a_note():
    plan = _plan(representations=["hog"], variants={"autoencoder": ["fc6"]},
                 baselines={"mahendran_vedaldi": {"representations": ["hog", "conv3"]}})
    assert plan.catalog.slugs == ["hog"]  # no AlexNet job for representations: [hog]
    assert plan.mahendran_vedaldi_slugs() == ["hog"]
    assert any("variants.autoencoder skips fc6" in note for note in plan.notes)
    assert any("mahendran_vedaldi.representations skips conv3" in note for note in plan.notes)
    assert len(plan.notes) == len(set(plan.notes))


def test_analysis_lists_by_name_or_slug():
    plan = _plan(representations=["conv5", "fc6", "fc8", "torchvision:resnet18:avgpool"],
                 features={"torchvision": {"weights": "random"}},
                 variants={"autoencoder": ["fc6"]},
                 analyses={"perturbation": {"layers": None},
                           "single_units": {"layers": ["fc6", "conv5", "torchvision:resnet18:avgpool"]}})
    assert plan.catalog.alexnet_layers() == ["conv5", "fc6", "fc8"]
    assert plan.perturbation_slugs() == ["conv5", "fc6", "fc8", "fc6-ae"]
    assert plan.single_unit_slugs() == ["fc6", "resnet18@avgpool"]  # conv5 is a feature map


def test_per_representation_values():
    cat = _catalog(representations=["fc6", "hog"], variants={"autoencoder": ["fc6"]},
                   train={"epochs": {"default": 3, "fc6": 7, "fc6-ae": 2}})
    assert cat.train_params("fc6")["epochs"] == 7 and cat.train_params("hog")["epochs"] == 3
    assert cat.train_params("fc6-ae")["epochs"] == 2
    assert per_rep({"default": 1, "fc6": 5}, cat["fc6-ae"]) == 5  # a variant inherits its base's value
    assert per_rep(4, cat["hog"]) == 4


def test_autoencoders_are_alexnet_only():
    with pytest.raises(Exception, match="variants.autoencoder"):  # the schema refuses it
        _catalog(representations=["hog"], variants={"autoencoder": ["hog"]})
    config = validate_config({"representations": ["hog"]})
    config["variants"]["autoencoder"] = ["hog"]
    with pytest.raises(ValueError, match="AlexNet"):  # and so does the catalog, for a config built in code
        Catalog(config)


def test_loss_variants_resolve_to_their_base_features_and_losses():
    cat = _catalog(representations=["hog", "sift", "fc6", "efficientnet_lite0:pool"],
                   variants={"gan": ["fc6", "efficientnet_lite0:pool", "conv5"], "feature": ["hog"],
                             "untrained_control": "never"},
                   decoder={"gan": {"adversarial_weight": 0.05},
                            "init": {"default": "scratch", "efficientnet_lite0:pool-gan": "pixel"}},
                   train={"epochs": {"default": 15, "efficientnet_lite0:pool-gan": 4}})
    plan = Plan(cat.config, cat, results="out")
    assert cat.slugs[-3:] == ["hog-feature", "fc6-gan", "efficientnet_lite0@pool-gan"]
    gan = cat["efficientnet_lite0@pool-gan"]
    assert (gan.variant, gan.base, gan.name, gan.display) == ("gan", "efficientnet_lite0@pool", "efficientnet_lite0:pool",
                                                              "efficientnet_lite0:pool-gan")
    assert gan.params == cat["efficientnet_lite0@pool"].params
    assert cat.features_of("fc6-gan") == "fc6" and cat.features_of("fc6") == "fc6"
    assert "fc6-gan" not in cat.feature_slugs(gpu=True) and "hog-feature" not in cat.feature_slugs(gpu=False)
    assert "fc6-gan" in plan.decoder_slugs() and "hog-feature" in plan.decoder_slugs()
    assert [cat.loss(s) for s in ("hog", "hog-feature", "fc6-gan", "sift")] == ["pixel", "feature", "gan", "pixel"]
    params = plan.loss_params("fc6-gan")
    assert params["kind"] == "gan" and params["representation"] == {"name": "fc6", "params": cat["fc6"].params}
    assert params["gan"]["adversarial_weight"] == 0.05
    assert plan.loss_params("hog-feature")["gan"] == {} and plan.loss_params("hog") == {"kind": "pixel"}
    assert cat.train_params("efficientnet_lite0@pool-gan")["epochs"] == 4 and cat.train_params("fc6-gan")["epochs"] == 15
    assert cat.starts_from("efficientnet_lite0@pool-gan") == "efficientnet_lite0@pool"
    assert plan.init_decoder("efficientnet_lite0@pool-gan") == ["out/efficientnet_lite0@pool/decoder.pt"]
    assert plan.init_decoder("fc6-gan") == [] and plan.init_decoder("fc6") == []
    assert cat.loss_bases() == ["hog", "fc6", "efficientnet_lite0@pool"]
    assert cat.loss_family("fc6") == ["fc6-gan", "fc6"] and cat.loss_family("hog") == ["hog-feature", "hog"]
    assert plan.feature_error_options("fc6") == {"name": "fc6", "params": cat["fc6"].params}
    assert plan.feature_error_options("fc6-gan")["name"] == "fc6"
    assert plan.feature_error_options("sift") is None and not cat.has_feature_error("sift")
    assert any("variants.gan skips conv5" in note for note in cat.notes)


def test_decoder_loss_per_representation():
    cat = _catalog(representations=["hog", "conv5"], variants={"untrained_control": "always"},
                   decoder={"loss": {"default": "pixel", "conv5": "feature"}})
    assert cat.loss("conv5") == "feature" and cat.loss("conv5-random") == "feature" and cat.loss("hog") == "pixel"
    assert cat.has_feature_error("conv5")  # a feature-loss decoder gets its feature error


def test_loss_variants_of_non_differentiable_representations_are_refused_by_the_library():
    config = validate_config({"representations": ["sift"]})
    config["variants"]["gan"] = ["sift"]
    with pytest.raises(ValueError, match="variants.gan: sift is not differentiable"):
        Catalog(config)
    config = validate_config({"representations": ["lbp"]})
    config["decoder"]["loss"] = "feature"
    with pytest.raises(ValueError, match="decoder.loss: lbp is not differentiable"):
        Catalog(config)


def test_starting_from_a_pixel_decoder_needs_one():
    with pytest.raises(ValueError, match="decoder.init"):
        _catalog(representations=["hog"], variants={"gan": ["hog"]},
                 decoder={"loss": {"default": "pixel", "hog": "feature"}, "init": "pixel"})

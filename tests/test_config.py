"""Config validation: defaults, clear errors naming the key, command-line strings."""
from pathlib import Path

import re

import pytest
import yaml

from preimage.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_an_empty_config():
    config = validate_config({})
    assert config["data"]["source"] == "builtin"
    assert config["data"]["size"] == 64 and config["data"]["builtin"]["min_scale"] == 0.35
    assert "fc6" in config["representations"]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "paper-lite.yaml"])
def test_shipped_configs_follow_the_schema(name, tmp_path):
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    if config["data"].get("root"):
        config["data"]["root"] = str(tmp_path)  # the ImageNet root does not exist here
    validate_config(config)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"data": {"sizee": 3}}, "unknown key data.sizee"),
        ({"colour": 1}, "unknown key colour"),
        ({"data": {"size": "big"}}, "data.size: 'big' is not of type 'integer'"),
        ({"data": {"train_per_class": -5}}, "data.train_per_class: -5 is invalid"),
        ({"data": {"test_per_class": 0}}, "data.test_per_class: 0 is invalid"),
        ({"data": {"source": "flickr"}}, "data.source: 'flickr' is not one of"),
        ({"data": {"classes": -2}}, "data.classes: -2 is invalid; expected null (all), a count"),
        ({"data": {"source": "imagenet"}}, "data.root: required when data.source is 'imagenet'"),
        ({"data": {"source": "folder", "root": "/no/such/folder"}}, "data.root: '/no/such/folder' does not exist"),
        ({"representations": ["hog", "fc9"]}, "unknown representation 'fc9'"),
    ],
)
def test_errors_name_the_key(config, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert expected in message, message
    assert "Traceback" not in message


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate_config({"data": {"size": 3, "seed": -1, "bogus": 0}})
    message = str(info.value)
    assert "data.size" in message and "data.seed" in message and "data.bogus" in message


def test_command_line_strings_are_coerced():
    # snakemake --config data='{seed: 3, classes: 5, root: null}' delivers nested values as strings
    config = validate_config({"data": {"seed": "3", "classes": "5", "root": "null", "builtin": {"flip": "false"}}})
    assert config["data"]["seed"] == 3 and config["data"]["classes"] == 5
    assert config["data"]["root"] is None and config["data"]["builtin"]["flip"] is False


def test_command_line_strings_inside_per_representation_mappings_are_coerced():
    # train={epochs: {default: 1, hog: 2}} from the command line: values under additionalProperties
    config = validate_config({"train": {"epochs": {"default": "1", "hog": "2"}}})
    assert config["train"]["epochs"] == {"default": 1, "hog": 2}
    assert validate_config({"train": {"epochs": "7"}})["train"]["epochs"] == 7


def test_classes_as_wnid_list(tmp_path):
    config = validate_config({"data": {"source": "folder", "root": str(tmp_path), "classes": ["n01", "n02"]}})
    assert config["data"]["classes"] == ["n01", "n02"]


@pytest.mark.parametrize("config, expected", [
    ({"representations": ["hog"], "baselines": {"mahendran_vedaldi": {"representations": ["lbp"]}}},
     "baselines.mahendran_vedaldi.representations: 'lbp' is not differentiable"),
    ({"analyses": {"interpolation": {"layers": ["hog"]}}}, "analyses.interpolation.layers: 'hog' is not a CNN representation"),
    ({"variants": {"untrained_control": "yes"}}, "variants.untrained_control"),
])
def test_analysis_and_baseline_keys_are_checked(config, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_config(config)


def test_baseline_representations_outside_the_run_are_allowed():
    # `--config representations=[hog]` must not fail on the default M&V list [hog, conv3, fc6]:
    # the workflow runs M&V only where a decoder is trained and notes the rest (rules/common.smk).
    config = validate_config({"representations": ["hog"],
                              "baselines": {"mahendran_vedaldi": {"representations": ["hog", "fc6"]}}})
    assert config["baselines"]["mahendran_vedaldi"]["representations"] == ["hog", "fc6"]


def test_efficientnet_lite0_family_keys_and_defaults():
    config = validate_config({"representations": ["efficientnet_lite0:stages.3", "efficientnet_lite0:fc"],
                              "analyses": {"interpolation": {"layers": ["efficientnet_lite0:fc"]}}})
    assert config["features"]["efficientnet_lite0"] == {"weights": "imagenet", "seed": 0, "crop": 224}
    with pytest.raises(ConfigError, match="representations"):
        validate_config({"representations": ["efficientnet_lite0:stages:3"]})

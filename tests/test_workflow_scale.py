"""Paper scale through the real Snakefile: data.shards gives the same stores as one job, a failed
shard reruns alone, features.store: recompute gives the cached path's errors, and config/paper.yaml
plans the sharded DAG. The unsharded, cached reference is the shared tiny run (tests/conftest.py:
tiny_run); the sharded and recomputed runs use the same config with one setting changed, each in a
folder of its own from the start (they need nothing from the tiny run), started with the session
(:data:`RUNS_STARTED_EARLY`)."""
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workflow import (ROOT, config_dict, expected_network_feature_jobs, job_counts, merged, network_feature_jobs,
                      planned_jobs, snakemake, write_config)

pytestmark = pytest.mark.slow

FEATURES = ["results/features/hog/train.h5", "results/features/sift/train.h5", "results/features/conv5/train.h5",
            "results/features/hog/test.h5"]
RECOMPUTED_ERRORS = "results/conv5/error.csv"

#: tests/conftest.py starts these as the session starts (fixture background_runs): the data and feature
#: stages with data.shards 3, and conv5's errors with AlexNet's features recomputed instead of cached
RUNS_STARTED_EARLY = {
    "shards3": ((*FEATURES, "--config", "data={shards: 3, min_shard_images: 1}"), ["tiny"]),
    "recompute": ((RECOMPUTED_ERRORS, "--config", "features={store: {default: cache, alexnet: recompute}}"), ["tiny"]),
}


def _contents(path):
    with h5py.File(path, "r") as handle:
        return {name: handle[name][:] for name in handle}, dict(handle.attrs)


@pytest.fixture(scope="module")
def two_runs(tiny_run, background_runs):
    """The data and feature stages of one config run with data.shards 1 (the tiny run) and 3."""
    return {1: tiny_run.workdir, 3: background_runs("shards3").workdir}


def test_three_shards_give_the_same_images_and_features_as_one_job(two_runs):
    one, three = two_runs[1], two_runs[3]
    for split in ("train", "test"):
        (a, attrs_a), (b, attrs_b) = _contents(one / f"results/data/{split}.h5"), _contents(three / f"results/data/{split}.h5")
        assert sorted(a) == sorted(b) == ["classes", "images", "labels", "paths"]
        for name in a:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), (split, name)
            if a[name].dtype != object:  # numbers: the same bytes (strings compare equal above)
                assert a[name].tobytes() == b[name].tobytes()
        assert attrs_a["content_sha256"] == attrs_b["content_sha256"]
    for path in FEATURES:
        (a, attrs_a), (b, attrs_b) = _contents(one / path), _contents(three / path)
        assert sorted(a) == sorted(b)
        for name in a:
            assert np.array_equal(a[name], b[name]), (path, name)
        assert attrs_a["images_sha256"] == attrs_b["images_sha256"]
    # the shard files were temporary: only the joined stores remain
    assert not list((three / "results/data").glob("shards/*/*.h5"))
    assert not list((three / "results/features").glob("*/shards/*.h5"))
    assert (three / "results/logs/data/extract_2-of-3.log").exists()


def _photo(seed):
    return np.random.default_rng(seed).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)


def test_a_failed_shard_reruns_alone(tmp_path):
    photos = tmp_path / "photos"
    for k, name in enumerate("abc"):
        for i in range(3):
            (photos / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_photo(10 * k + i)).save(photos / name / f"{i}.png")
    broken = photos / "b" / "1.png"
    broken.write_bytes(b"\x89PNG not an image")  # class b (shard 2 of 3) is one usable image short
    config = merged(config_dict("tiny"), {"representations": ["hog"], "data": {
        "source": "folder", "root": str(photos), "train_per_class": 2, "test_per_class": 1, "shards": 3,
        "min_shard_images": 1}})
    configfile = write_config(tmp_path / "config.yaml", config)
    failed = snakemake(tmp_path, "results/data/train.h5", "--keep-going", configfile=configfile, check=False)
    assert failed.returncode != 0
    shards = tmp_path / "results/data/shards"
    assert (shards / "1-of-3/train.h5").exists() and (shards / "3-of-3/train.h5").exists()
    assert not (shards / "2-of-3/train.h5").exists()
    assert "class 'b'" in (tmp_path / "results/logs/data/extract_2-of-3.log").read_text()

    Image.fromarray(_photo(11)).save(broken)  # the file is repaired
    plan = snakemake(tmp_path, "results/data/train.h5", "-n", configfile=configfile)
    assert job_counts(plan) == {"extract_shard": 1, "join_data": 1}
    assert "shard=2-of-3" in plan.stdout + plan.stderr
    snakemake(tmp_path, "results/data/train.h5", configfile=configfile)
    with h5py.File(tmp_path / "results/data/train.h5", "r") as handle:
        assert handle["images"].shape[0] == 6 and sorted(set(handle["labels"][:])) == [0, 1, 2]

    # the same for a feature shard: two of three finished, the third (failed, or killed) reruns alone
    done = [f"results/features/hog/shards/train-{i}-of-3.h5" for i in (1, 3)]
    snakemake(tmp_path, *done, configfile=configfile)
    assert planned_jobs(tmp_path, "results/features/hog/train.h5", configfile=configfile) == {
        "shallow_feature_shard": 1, "join_features": 1}


def test_recompute_gives_the_errors_of_the_cache(tiny_run, background_runs):
    recomputed_run = background_runs("recompute")
    errors = {}
    for store_setting, run in (("cache", tiny_run), ("recompute", recomputed_run)):
        errors[store_setting] = pd.read_csv(run.results / "conv5/error.csv").set_index("method")
        with h5py.File(run.results / "features/conv5/train.h5", "r") as handle:
            assert ("features" in handle) == (store_setting == "cache")
    cached, recomputed = errors["cache"], errors["recompute"]
    for method in ("decoder", "mean_image", "nearest_neighbour"):
        a, b = cached.loc[method], recomputed.loc[method]
        assert a["ci_low"] <= b["error"] <= a["ci_high"] and b["ci_low"] <= a["error"] <= b["ci_high"], method
    assert cached.loc["mean_image", "error"] == recomputed.loc["mean_image", "error"]


def test_paper_config_plans_the_sharded_dag(paper_plan):
    """config/paper.yaml on a fake ILSVRC2012 tree: every extraction and training-split cache job
    is one of data.shards shards; the recomputed layers get a recipe instead of a cache."""
    import yaml

    planned = paper_plan("paper.yaml")
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    shards = paper["data"]["shards"]
    recomputed = [k for k, v in paper["features"]["store"].items() if v == "recompute" and k != "default"]
    assert shards > 1 and recomputed
    assert planned["extract_shard"] == shards and planned["join_data"] == 1 and "extract_data" not in planned
    cached_cnn = 3 * (8 - len(recomputed))  # each AlexNet layer, its untrained control, its autoencoder
    # the networks: AlexNet, its untrained control, and each cached layer's autoencoder (its own encoder)
    cached_layers = [layer for layer in paper["representations"] if layer.startswith(("conv", "fc"))
                     and layer not in recomputed]
    networks = {"alexnet": len(cached_layers), "alexnet-random": len(cached_layers),
                **{f"alexnet-{layer}-ae": 1 for layer in cached_layers}}
    assert sum(networks.values()) == cached_cnn
    assert network_feature_jobs(planned, shard=True) == expected_network_feature_jobs(networks, shards, shard=True)
    assert planned["shallow_feature_shard"] == shards * 3
    assert planned["join_features"] == cached_cnn + 3
    # the test split: one job
    assert network_feature_jobs(planned) == expected_network_feature_jobs(networks, parts=1)
    assert planned["shallow_features"] == 3
    assert planned["feature_recipe"] == 2 * 3 * len(recomputed)

"""The execution profiles on the paper's configuration: a dry run plans the whole paper DAG, and
profiles/slurm sends each job to the right partition with the right GPU request (issue: scale out)."""
import re
from collections import defaultdict

import pytest

from workflow import ROOT, fake_imagenet, planned_jobs, snakemake


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    # 1,000 classes with as many (empty) files as paper-lite.yaml asks for: the config check counts them
    return fake_imagenet(tmp_path_factory.mktemp("imagenet"))


def _resources_by_rule(text: str) -> dict:
    """{rule: [resources dict of each planned job]} from ``snakemake -n`` output."""
    found = defaultdict(list)
    rule = None
    for line in text.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            pairs = [part.strip().split("=", 1) for part in line.split("resources:", 1)[1].split(",")]
            found[rule].append({k: v for k, v in pairs})
            rule = None
    return found


@pytest.mark.parametrize("name", ["paper.yaml", "paper-lite.yaml"])
def test_paper_configuration_plans_the_full_dag(imagenet_root, tmp_path, name):
    planned = planned_jobs(tmp_path, "all", "--configfile", str(ROOT / "config" / name),
                           "--config", f"data={{root: {imagenet_root}}}")
    # 11 representations + 8 untrained controls (paper.yaml: untrained_control auto, pretrained weights)
    # + paper.yaml's GAN variants of conv5-fc8 (Appendix A, Figures 12-13)
    gan = 4 if name == "paper.yaml" else 0
    assert planned["train"] == 19 + gan and planned["train_autoencoder"] == 8
    assert planned["evaluate"] == 11 + 8 + 8 + gan
    assert planned["mahendran_vedaldi"] == 9
    if name == "paper-lite.yaml":  # one extraction job, every cache computed by one job per network and split
        # AlexNet's 8 layers in one pass, their 8 untrained controls in another, each autoencoder with its own encoder
        networks = ["alexnet", "alexnet-random"] + [f"alexnet-{layer}-ae" for layer in
                                                    ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")]
        assert {rule: n for rule, n in planned.items() if rule.startswith(("network_feature", "features"))} == {
            f"network_features_{network}": 2 for network in networks}
        assert planned["shallow_features"] == 2 * 3
        assert planned["extract_data"] == 1
        return
    # paper.yaml: 64 shards; conv1-conv3 (layer, untrained control, autoencoder) recomputed
    assert planned["extract_shard"] == 64 and planned["join_data"] == 1 and "extract_data" not in planned
    assert planned["feature_recipe"] == 2 * 3 * 3
    # conv4-fc8: test whole, train sharded; one job per network (AlexNet, its control, each autoencoder's encoder)
    networks = ["alexnet", "alexnet-random"] + [f"alexnet-{layer}-ae" for layer in ("conv4", "conv5", "fc6", "fc7", "fc8")]
    assert {rule: n for rule, n in planned.items() if rule.startswith("network_features")} == {
        f"network_features_{network}": 1 for network in networks}
    assert {rule: n for rule, n in planned.items() if rule.startswith("network_feature_shard")} == {
        f"network_feature_shard_{network}": 64 for network in networks}
    assert planned["shallow_features"] == 3 and planned["shallow_feature_shard"] == 64 * 3
    assert planned["join_features"] == 5 * 3 + 3


def test_slurm_profile_puts_gpu_jobs_on_the_gpu_partition(imagenet_root, tmp_path):
    result = snakemake(tmp_path, "all", "-n", "--profile", str(ROOT / "profiles/slurm"),
                       "--configfile", str(ROOT / "config/paper.yaml"), "--config", f"data={{root: {imagenet_root}}}")
    jobs = _resources_by_rule(result.stdout + result.stderr)
    # every network's extraction rule takes the profile's network_features / network_feature_shard settings
    networks = [rule for rule in jobs if rule.startswith(("network_features_", "network_feature_shard_"))]
    assert {rule.split("_alexnet")[0] for rule in networks} == {"network_features", "network_feature_shard"}
    for rule in networks + ["train", "train_autoencoder", "evaluate", "mahendran_vedaldi"]:
        assert jobs[rule], f"no {rule} jobs planned"
        for resources in jobs[rule]:
            assert resources["gpu"] == "1" and resources["slurm_partition"] == "gpu", (rule, resources)
            assert int(resources["cpus_per_gpu"]) > 0 and int(resources["mem_mb"]) > 0, (rule, resources)
    for rule in ("shallow_features", "shallow_feature_shard", "extract_shard", "join_data", "join_features",
                 "feature_recipe", "errors_table", "findings"):
        assert jobs[rule], f"no {rule} jobs planned"
        for resources in jobs[rule]:
            assert resources.get("gpu", "0") == "0" and resources["slurm_partition"] == "cpu", (rule, resources)
    # runtimes come from the rules (scaled by attempt) unless the profile overrides them
    assert all(int(r["runtime"]) >= 60 for r in jobs["train"])

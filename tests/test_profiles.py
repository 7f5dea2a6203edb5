"""The execution profiles on the paper's configuration: a dry run plans the whole paper DAG, and
profiles/slurm sends each job to the right partition with the right GPU request (issue: scale out)."""
import re
from collections import defaultdict

import pytest

from workflow import ROOT, expected_network_feature_jobs, is_network_feature_rule, network_feature_jobs, snakemake

ALEXNET = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


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
def test_paper_configuration_plans_the_full_dag(paper_plan, name):
    planned = paper_plan(name)
    # 11 representations + 8 untrained controls (paper.yaml: untrained_control auto, pretrained weights)
    # + paper.yaml's GAN variants of conv5-fc8 (Appendix A, Figures 12-13)
    gan = 4 if name == "paper.yaml" else 0
    assert planned["train"] == 19 + gan and planned["train_autoencoder"] == 8
    assert planned["evaluate"] == 11 + 8 + 8 + gan
    assert planned["mahendran_vedaldi"] == 9
    if name == "paper-lite.yaml":  # one extraction job, every cache computed by one job per split
        # AlexNet's 8 layers, their 8 untrained controls, each autoencoder with its own fine-tuned encoder
        networks = {"alexnet": 8, "alexnet-random": 8, **{f"alexnet-{layer}-ae": 1 for layer in ALEXNET}}
        assert network_feature_jobs(planned) == expected_network_feature_jobs(networks)
        assert planned["shallow_features"] == 2 * 3
        assert planned["extract_data"] == 1
        return
    # paper.yaml: 64 shards; conv1-conv3 (layer, untrained control, autoencoder) recomputed
    assert planned["extract_shard"] == 64 and planned["join_data"] == 1 and "extract_data" not in planned
    assert planned["feature_recipe"] == 2 * 3 * 3
    # conv4-fc8 (AlexNet, its untrained control, each autoencoder's encoder): the test split whole, the
    # training split in shards
    networks = {"alexnet": 5, "alexnet-random": 5, **{f"alexnet-{layer}-ae": 1 for layer in ALEXNET[3:]}}
    assert network_feature_jobs(planned) == expected_network_feature_jobs(networks, parts=1)
    assert network_feature_jobs(planned, shard=True) == expected_network_feature_jobs(networks, parts=64, shard=True)
    assert planned["shallow_features"] == 3 and planned["shallow_feature_shard"] == 64 * 3
    assert planned["join_features"] == 5 * 3 + 3


def test_slurm_profile_puts_gpu_jobs_on_the_gpu_partition(imagenet_root, tmp_path):
    result = snakemake(tmp_path, "all", "-n", "--profile", str(ROOT / "profiles/slurm"),
                       "--configfile", str(ROOT / "config/paper.yaml"), "--config", f"data={{root: {imagenet_root}}}")
    jobs = _resources_by_rule(result.stdout + result.stderr)
    network_features = [rule for rule in jobs if is_network_feature_rule(rule) or is_network_feature_rule(rule, True)]
    assert any(map(is_network_feature_rule, network_features)) and any(
        is_network_feature_rule(rule, shard=True) for rule in network_features)
    for rule in (*network_features, "train", "train_autoencoder", "evaluate", "mahendran_vedaldi"):
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

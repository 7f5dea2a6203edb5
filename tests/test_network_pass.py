"""One forward pass per network: several nodes of one network computed together (NodeSet), their
caches written by one job (compute_network_caches) equal to the single-node caches, the catalog's
network groups, and the workflow's one extraction job per network and split."""
import json

import pytest
import torch

from preimage.config import validate_config
from preimage.features import NodeSet, create
from preimage.features.cache import compute_cache, compute_network_caches
from preimage.features.torchvision_net import run_sequential_pass, sequential_pass
from preimage.representations import Catalog
from tiny_data import builtin_stores, h5_contents
from workflow import config_path, expected_network_feature_jobs, network_feature_jobs, planned_jobs



# --------------------------------------------------------------------------- several nodes, one pass

NETWORKS = {
    "alexnet": (["conv1", "conv3", "fc7"], {"weights": "random", "crop": 64}),
    "caffenet": (["conv2", "conv5", "fc7"], {"weights": "random", "crop": 227, "arch": "caffenet"}),
    "efficientnet_lite0": (["efficientnet_lite0:stem", "efficientnet_lite0:stages.3", "efficientnet_lite0:pool",
                            "efficientnet_lite0:fc"], {"weights": "random", "crop": 64}),
    # a module name (layer1 = its last node), an inner node and the logits
    "resnet18": (["torchvision:resnet18:layer1", "torchvision:resnet18:layer3.0.relu", "torchvision:resnet18:fc"],
                 {"weights": "random", "crop": 64}),
    # channels-last stage maps (permuted to N, C, h, w) and the pooled vector
    "swin_t": (["torchvision:swin_t:features.1", "torchvision:swin_t:avgpool"], {"weights": "random", "crop": 64}),
}


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_one_pass_gives_each_nodes_own_features_exactly(network):
    names, params = NETWORKS[network]
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    nodes = NodeSet(names, **params)
    with torch.no_grad():
        together = nodes.compute(images)
        for name, features, shared in zip(names, together, nodes.representations):
            alone = create(name, **params)
            expected = alone.compute(images)
            assert features.shape == expected.shape == (3, *alone.output_shape(40, 40)), name
            assert torch.equal(features, expected), name  # the same numbers, bit for bit
            assert shared.identity() == alone.identity() and shared.label == alone.label, name


def test_the_network_runs_once_and_its_weights_are_loaded_once():
    names, params = NETWORKS["alexnet"]
    nodes = NodeSet(names, **params)
    first = nodes.representations[0]
    assert all(r.model is first.model for r in nodes.representations)
    calls = []
    first.model.features[0].register_forward_hook(lambda *args: calls.append("conv1"))
    first.model.classifier[4].register_forward_hook(lambda *args: calls.append("fc7"))
    with torch.no_grad():
        nodes.compute(torch.rand(2, 3, 40, 40))
    assert calls == ["conv1", "fc7"]  # one batch, one pass: each module once, nothing after fc7
    calls.clear()
    with torch.no_grad():
        for r in nodes.representations:
            r.compute(torch.rand(2, 3, 40, 40))
    assert calls.count("conv1") == 3  # node by node, the first layer runs for each of them


def test_a_node_is_copied_before_an_in_place_module_changes_it():
    linear, relu = torch.nn.Linear(3, 3), torch.nn.ReLU(inplace=True)
    modules, ends = sequential_pass([torch.nn.Sequential(linear), torch.nn.Sequential(linear, relu)])
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    before, after = run_sequential_pass(modules, ends, x)
    with torch.no_grad():
        assert ends == [1, 2] and torch.equal(before, linear(x)) and (before < 0).any()
        assert torch.equal(after, torch.relu(linear(x)))


def test_nodes_of_different_networks_or_no_network_are_refused():
    with pytest.raises(ValueError, match="efficientnet_lite0:stem is not a node of the network of conv1"):
        NodeSet(["conv1", "efficientnet_lite0:stem"], weights="random")
    with pytest.raises(ValueError, match="torchvision:vgg11:features.3 is not a node of the network of "
                                         "torchvision:resnet18:layer1"):
        NodeSet(["torchvision:resnet18:layer1", "torchvision:vgg11:features.3"], weights="random")
    with pytest.raises(ValueError, match="lbp is not a node of the network of hog"):
        NodeSet(["hog", "lbp"])
    with pytest.raises(ValueError, match="at least one"):
        NodeSet([])
    # a second layer of another network's family cannot be cut from this one
    alexnet = create("conv1", weights="random", crop=64)
    with pytest.raises(ValueError, match="unknown AlexNet layer 'conv9'"):
        alexnet.at_node("conv9")


# --------------------------------------------------------------------------- caches


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return builtin_stores(tmp_path_factory.mktemp("images"), size=32, train_per_class=3, test_per_class=1)["train"]


@pytest.mark.parametrize("shard", [None, (1, 3)])
def test_network_caches_equal_the_single_node_caches(images, tmp_path, shard):
    names, params = ["conv1", "conv5", "fc6"], {"weights": "random", "crop": 64, "seed": 3}
    outputs = [tmp_path / "together" / f"{name}.h5" for name in names]
    result = compute_network_caches(names, params, images, outputs, batch_size=8, device="cpu", shard=shard)
    assert result["caches"] == 3
    for name, together in zip(names, outputs):
        alone = tmp_path / "alone" / f"{name}.h5"
        compute_cache(name, params, images, alone, batch_size=8, device="cpu", shard=shard)
        (data_a, attrs_a), (data_b, attrs_b) = h5_contents(together), h5_contents(alone)
        assert sorted(data_a) == sorted(data_b) == ["features"]
        for (values_a, *layout_a), (values_b, *layout_b) in zip(data_a.values(), data_b.values()):
            assert layout_a == layout_b and values_a.tobytes() == values_b.tobytes(), name
        assert attrs_a == attrs_b, name  # no attribute differs (the caches record no time)
        if shard:
            assert json.loads(attrs_a["shard"]) == [1, 3] and json.loads(attrs_a["rows"])[0] > 0


def test_every_cache_of_a_failed_pass_is_left_unwritten(images, tmp_path, monkeypatch):
    compute = NodeSet.compute
    batches = []

    def fail_on_the_second_batch(self, x):
        batches.append(len(x))
        if len(batches) == 2:
            raise RuntimeError("interrupted")
        return compute(self, x)

    monkeypatch.setattr(NodeSet, "compute", fail_on_the_second_batch)
    outputs = [tmp_path / "conv1.h5", tmp_path / "fc6.h5"]
    with pytest.raises(RuntimeError, match="interrupted"):
        compute_network_caches(["conv1", "fc6"], {"weights": "random", "crop": 64}, images, outputs, batch_size=8,
                               device="cpu")
    assert batches == [8, 8] and sorted(tmp_path.iterdir()) == []  # no cache, no temporary left


# --------------------------------------------------------------------------- the catalog's groups


def _catalog(**config):
    return Catalog(validate_config(config))


def test_network_groups_of_the_default_config():
    import yaml

    from workflow import ROOT

    catalog = Catalog(validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text())))
    lite = ["efficientnet_lite0@stages.3", "efficientnet_lite0@pool", "efficientnet_lite0@fc"]
    assert catalog.network_groups() == {"alexnet": ["conv1", "conv5", "fc6"], "efficientnet_lite0": lite,
                                        "efficientnet_lite0-random": [f"{s}-random" for s in lite]}


def test_network_groups_split_by_weights_variant_encoder_store_and_family():
    catalog = _catalog(
        representations=["hog", "conv1", "conv3", "fc6", "torchvision:alexnet:features.5", "torchvision:resnet18:layer1",
                         "torchvision:resnet18:fc"],
        features={"alexnet": {"weights": "imagenet"}, "torchvision": {"weights": "random", "crop": 64},
                  "store": {"default": "cache", "conv1": "recompute"}},
        variants={"autoencoder": ["conv3", "fc6"], "untrained_control": "auto", "gan": ["fc6"]},
    )
    assert catalog.network_groups(store="cache") == {
        "alexnet": ["conv3", "fc6"],
        # AlexNet's layers and torchvision's AlexNet are different networks under one name
        "torchvision-alexnet": ["alexnet@features.5"],
        "resnet18": ["resnet18@layer1", "resnet18@fc"],  # random weights: no untrained control
        "alexnet-conv3-ae": ["conv3-ae"],  # each autoencoder fine-tunes its own encoder
        "alexnet-fc6-ae": ["fc6-ae"],
        "alexnet-random": ["conv3-random", "fc6-random"],
    }  # fc6-gan shares fc6's cache; conv1 (recompute) and conv1-random have no extraction job
    assert catalog.network_groups()["alexnet"] == ["conv1", "conv3", "fc6"]
    assert catalog.network_groups(store="recompute") == {"alexnet": ["conv1"], "alexnet-random": ["conv1-random"]}


def test_a_group_name_depends_on_its_network_not_its_nodes():
    one = _catalog(representations=["conv5"], features={"alexnet": {"weights": "imagenet"}})
    two = _catalog(representations=["conv1", "conv5", "fc8"], features={"alexnet": {"weights": "imagenet", "crop": 99}})
    assert list(one.network_groups()) == list(two.network_groups()) == ["alexnet", "alexnet-random"]


# --------------------------------------------------------------------------- the workflow
# The tiny run's caches against the single-node computation, and which extraction jobs a changed
# network reruns, are checked on the shared tiny run (tests/test_workflow.py).

#: The networks of .test/config-tiny.yaml and how many of their nodes it caches.
TINY_NETWORKS = {"alexnet": 3, "alexnet-fc6-ae": 1, "efficientnet_lite0": 2, "efficientnet_lite0-random": 2,
                 "resnet18": 1, "vit_b_16": 1, "test_vit": 1, "test_resnet": 1}
#: Its cached representations (hog-gan shares hog's cache): 5 shallow ones and the networks' nodes.
TINY_CACHES = 5 + sum(TINY_NETWORKS.values())


@pytest.mark.slow
def test_all_plans_one_extraction_job_per_network_and_split(tmp_path):
    configfile = config_path("tiny")
    planned = planned_jobs(tmp_path, "all", configfile=configfile)
    assert network_feature_jobs(planned) == expected_network_feature_jobs(TINY_NETWORKS)
    assert planned["shallow_features"] == 2 * 5  # HOG, LBP, SIFT, HOGb, DSIFT: one job per split, as before
    sharded = planned_jobs(tmp_path, "all", "--config", "data={shards: 3, min_shard_images: 1}",
                           configfile=configfile)
    # the test split whole, the training split in 3 shards per network
    assert network_feature_jobs(sharded) == expected_network_feature_jobs(TINY_NETWORKS, parts=1)
    assert network_feature_jobs(sharded, shard=True) == expected_network_feature_jobs(TINY_NETWORKS, 3, shard=True)
    assert sharded["join_features"] == TINY_CACHES  # one per cached representation

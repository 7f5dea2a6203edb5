"""AlexNet representations conv1 … fc8 and the weights option (offline, seeded, CPU)."""

from __future__ import annotations

import functools
import hashlib
import urllib.error

import pytest
import torch
import torchvision

import preimage.weights as W
from preimage.features import create, known_names
from preimage.features.alexnet import LAYERS, AlexNetRepresentation
from preimage.features.torchvision_net import fit_crop

SHAPES_227 = {
    "conv1": (64, 27, 27),
    "conv2": (192, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (256, 13, 13),
    "conv5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


@functools.lru_cache(maxsize=None)
def rep(layer: str, seed: int = 0) -> AlexNetRepresentation:
    return create(layer, weights="random", seed=seed)


def images(n: int = 2, h: int = 227, w: int = 227, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def manual_features(model: torch.nn.Module, x227: torch.Tensor, layer: str) -> torch.Tensor:
    """Reference: a plain torchvision AlexNet with hooks on the paper's layer outputs."""
    mean = torch.tensor(W.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(W.IMAGENET_STD).view(1, 3, 1, 1)
    part, n = LAYERS[layer]
    module = (model.features if part == "features" else model.classifier)[n - 1]
    got = {}
    h = module.register_forward_hook(lambda m, i, o: got.__setitem__("out", o.clone()))
    try:
        with torch.no_grad():
            model.eval()((x227 - mean) / std)
    finally:
        h.remove()
    return got["out"]


def test_registered():
    assert set(LAYERS) <= set(known_names())
    assert isinstance(create("fc6", weights="random"), AlexNetRepresentation)


@pytest.mark.parametrize("layer", list(SHAPES_227))
def test_shapes_at_227(layer):
    r = rep(layer)
    out = r.compute(images(2))
    assert tuple(out.shape) == (2, *SHAPES_227[layer])
    assert r.output_shape(227, 227) == SHAPES_227[layer]
    assert r.output_shape(256, 300) == SHAPES_227[layer]  # everything is cropped to 227 first
    assert r.differentiable


@pytest.mark.parametrize("layer", list(SHAPES_227))
def test_matches_plain_torchvision(layer):
    x = images(2)
    ref = manual_features(rep(layer).model, x, layer)
    torch.testing.assert_close(rep(layer).compute(x), ref, rtol=1e-5, atol=1e-5)


def test_layer_semantics():
    x = images(2, 256, 256)
    assert (rep("fc6").compute(x) >= 0).all() and (rep("fc7").compute(x) >= 0).all()
    assert (rep("fc8").compute(x) < 0).any()  # logits, no ReLU
    # conv1 is after pooling: 56×56 after the conv at 227, 27×27 after the max-pool
    m = rep("conv1").model
    pre = m.features[:2](torch.zeros(1, 3, 227, 227))
    assert pre.shape[-2:] == (56, 56)
    assert rep("conv1").compute(x).shape[-2:] == (27, 27)
    assert isinstance(rep("conv1").net[-1], torch.nn.MaxPool2d)
    assert isinstance(rep("conv2").net[-1], torch.nn.MaxPool2d)
    assert isinstance(rep("conv3").net[-1], torch.nn.ReLU)
    assert isinstance(rep("conv4").net[-1], torch.nn.ReLU)
    assert isinstance(rep("conv5").net[-1], torch.nn.MaxPool2d)
    assert isinstance(rep("fc8").net[-1], torch.nn.Linear)


def test_adaptive_avgpool_is_identity_at_227():
    m = rep("conv5").model
    with torch.no_grad():
        pool5 = rep("conv5").net(torch.randn(2, 3, 227, 227))
        assert pool5.shape[-2:] == (6, 6)
        assert torch.equal(m.avgpool(pool5), pool5)


def test_runs_only_up_to_layer():
    r = rep("conv1")
    assert not any(isinstance(mod, torch.nn.Linear) for mod in r.net.modules())
    called = []
    h = r.model.features[3].register_forward_hook(lambda *a: called.append(1))
    try:
        r.compute(images(1))
    finally:
        h.remove()
    assert called == []


def test_batch_equals_single():
    x = images(3, 240, 250, seed=1)
    for layer in ("conv2", "fc7"):
        batch = rep(layer).compute(x)
        single = torch.cat([rep(layer).compute(x[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


def test_gradients_reach_input():
    x = images(1, 227, 227).requires_grad_(True)
    rep("fc6").compute(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in rep("fc6").model.parameters())


def test_crop_and_resize_up():
    x = images(1, 256, 300)
    c = fit_crop(x, 227)
    assert torch.equal(c, x[..., 14:241, 36:263])
    exact = images(1)
    assert fit_crop(exact, 227) is exact
    small = fit_crop(images(1, 100, 150), 227)
    assert small.shape[-2:] == (227, 227)
    assert rep("conv3").compute(images(1, 100, 150)).shape == (1, 384, 13, 13)


def test_random_seeds():
    x = images(1)
    a = rep("conv4", 0).compute(x)
    b = create("conv4", weights="random", seed=0).compute(x)
    c = rep("conv4", 1).compute(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert rep("conv4", 1).identity()["weights"] == "random:1"
    assert rep("conv4").identity()["label"] == "AlexNet (untrained, random:0)"


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create("conv1", weights="random", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_weights_from_path(tmp_path):
    torch.manual_seed(7)
    model = torchvision.models.alexnet(weights=None)
    path = tmp_path / "my_alexnet.pth"
    torch.save(model.state_dict(), path)
    r = create("conv5", weights=str(path))
    x = images(2, 250, 260)
    torch.testing.assert_close(r.compute(x), manual_features(model, fit_crop(x, 227), "conv5"), rtol=1e-5, atol=1e-5)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    ident = r.identity()
    assert ident["weights"] == sha and ident["weights_source"] == "path"
    assert sha[:12] in ident["label"] and ident["layer"] == "conv5"
    assert r.categories is None


def test_missing_path_is_clear_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(W.WeightsUnavailableError, match="nope.pth") as err:
        create("fc6", weights=str(missing))
    assert str(missing) in str(err.value) and "never used as a fallback" in str(err.value)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """TORCH_HOME → tmp_path, and every download fails immediately."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(W, "_download", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_cache_location(offline_hub):
    w = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    assert w.url.endswith("/" + ALEXNET_FILE)
    assert W.cached_weights_path(w) == offline_hub / ALEXNET_FILE


def test_imagenet_uncached_offline_is_clear_error(offline_hub):
    expected = offline_hub / ALEXNET_FILE
    with pytest.raises(W.WeightsUnavailableError) as err:
        create("conv1", weights="imagenet")
    msg = str(err.value)
    assert str(expected) in msg
    assert torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url in msg
    assert not expected.exists()


def test_imagenet_from_torch_home_cache(offline_hub):
    torch.manual_seed(11)
    model = torchvision.models.alexnet(weights=None)
    offline_hub.mkdir(parents=True)
    path = offline_hub / ALEXNET_FILE
    torch.save(model.state_dict(), path)
    # a stand-in file: its sha256 does not start with 7be5be79, which is reported, not fatal
    with pytest.warns(UserWarning, match="not the official file"):
        r = create("fc8", weights="imagenet")
    x = images(2)
    torch.testing.assert_close(r.compute(x), manual_features(model, x, "fc8"), rtol=1e-5, atol=1e-5)
    ident = r.identity()
    assert ident["weights"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ident["weights_source"] == "imagenet" and ident["label"] == "AlexNet (ImageNet)"
    assert ident["weights_name"] == "AlexNet_Weights.IMAGENET1K_V1"
    assert len(r.categories) == 1000 and r.categories[0] == "tench"


def test_imagenet_normalisation_matches_torchvision():
    tf = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    assert tuple(tf.mean) == W.IMAGENET_MEAN and tuple(tf.std) == W.IMAGENET_STD
    assert rep("conv1").identity()["normalize_mean"] == "0.485,0.456,0.406"


def test_bad_params():
    with pytest.raises(TypeError, match="unknown parameter"):
        create("conv1", weights="random", stride=3)
    with pytest.raises(TypeError):
        create("conv1", weights=3)


def test_sha256_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * (3 << 20) + b"tail")
    assert W.sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()

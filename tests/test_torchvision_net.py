"""torchvision:<model>:<node> representations (offline, random weights, small models)."""

from __future__ import annotations

import functools
import hashlib
import urllib.error

import pytest
import torch
import torchvision

import preimage.weights as W
from preimage.features import create, lookup
from preimage.features.torchvision_net import TorchvisionRepresentation


@functools.lru_cache(maxsize=None)
def resnet18_layer4() -> TorchvisionRepresentation:
    return create("torchvision:resnet18:layer4", weights="random", seed=0)


def test_lookup_prefix():
    assert lookup("torchvision:resnet18:layer4") is TorchvisionRepresentation


def test_resnet18_layer4_shape():
    r = resnet18_layer4()
    assert r.output_shape(224, 224) == (512, 7, 7)
    x = torch.rand(2, 3, 240, 260, generator=torch.Generator().manual_seed(0))
    out = r.compute(x)
    assert out.shape == (2, 512, 7, 7)
    assert (out >= 0).all()  # layer4 ends with a ReLU
    ident = r.identity()
    assert ident["weights"] == "random:0" and ident["crop"] == "224"
    assert ident["label"] == "resnet18 (untrained, random:0)"


def test_matches_plain_model_and_batch():
    r = resnet18_layer4()
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    m = r.loaded.model
    mean = torch.tensor(W.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(W.IMAGENET_STD).view(1, 3, 1, 1)
    got = {}
    h = m.layer4.register_forward_hook(lambda mod, i, o: got.__setitem__("o", o))
    with torch.no_grad():
        m((x - mean) / std)
    h.remove()
    out = r.compute(x)
    torch.testing.assert_close(out, got["o"], rtol=1e-5, atol=1e-5)
    single = torch.cat([r.compute(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(out, single, rtol=1e-4, atol=1e-5)


def test_vector_node_and_gradients():
    r = create("torchvision:resnet18:flatten", weights="random", seed=0)
    assert r.output_shape(224, 224) == (512,)
    x = torch.rand(1, 3, 224, 224, requires_grad=True)
    r.compute(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_seeds():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    a = create("torchvision:mobilenet_v3_small:features.3", weights="random", seed=0, crop=64)
    b = create("torchvision:mobilenet_v3_small:features.3", weights="random", seed=0, crop=64)
    c = create("torchvision:mobilenet_v3_small:features.3", weights="random", seed=1, crop=64)
    assert torch.equal(a.compute(x), b.compute(x))
    assert not torch.allclose(a.compute(x), c.compute(x))


def test_unknown_node_lists_valid_names():
    with pytest.raises(ValueError, match="no graph node 'layer9'") as err:
        create("torchvision:resnet18:layer9", weights="random")
    assert "layer4" in str(err.value) and "avgpool" in str(err.value)
    with pytest.raises(ValueError, match=r"layer4\.0\.conv1"):
        create("torchvision:resnet18:layer4.9", weights="random")


def test_unknown_model_and_bad_name():
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'.*resnet18"):
        create("torchvision:resnet19:layer4", weights="random")
    with pytest.raises(ValueError, match="torchvision:<model>:<node>"):
        create("torchvision:resnet18", weights="random")


def test_path_weights(tmp_path):
    torch.manual_seed(3)
    m = torchvision.models.resnet18(weights=None)
    p = tmp_path / "r18.pth"
    torch.save(m.state_dict(), p)
    r = create("torchvision:resnet18:avgpool", weights=str(p))
    assert r.identity()["weights"] == hashlib.sha256(p.read_bytes()).hexdigest()
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(r.compute(x), create("torchvision:resnet18:avgpool", weights=str(p)).compute(x))


def test_imagenet_prefers_v1_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(*a, **k):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(W, "_download", no_network)
    w = W.resolve_imagenet_weights("resnet50")
    assert w.name == "IMAGENET1K_V1"  # not DEFAULT (= V2)
    assert W.resolve_imagenet_weights("resnet50", "IMAGENET1K_V2").name == "IMAGENET1K_V2"
    with pytest.raises(ValueError, match="no member"):
        W.resolve_imagenet_weights("resnet50", "V9")
    with pytest.raises(W.WeightsUnavailableError) as err:
        create("torchvision:resnet18:layer4", weights="imagenet")
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert url in str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]) in str(err.value)

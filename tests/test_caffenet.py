"""CaffeNet (features.alexnet.arch: caffenet): Table 1 shapes, LRN, groups, weights, config (offline, CPU)."""

from __future__ import annotations

import functools
import hashlib
import math

import h5py
import pytest
import torch

import preimage.weights as W
from preimage.config import ConfigError, validate_config
from preimage.features import create
from preimage.features.alexnet import AlexNetRepresentation
from preimage.features.caffenet import (
    CAFFE_MEAN_BGR,
    LAYER_ENDS,
    STATE_DICT_SHAPES,
    CaffeNet,
    caffe_preprocess,
    caffenet_sizes,
    fc_crops,
    load_caffenet,
)
from preimage.features.torchvision_net import fit_crop
from preimage.hdf5 import read_attrs

# Paper Table 1, transcribed: (processing step, out size, out channels); size 1 = a vector.
TABLE1 = [
    ("conv1", 55, 96), ("relu1", 55, 96), ("pool1", 27, 96), ("norm1", 27, 96),
    ("conv2", 27, 256), ("relu2", 27, 256), ("pool2", 13, 256), ("norm2", 13, 256),
    ("conv3", 13, 384), ("relu3", 13, 384),
    ("conv4", 13, 384), ("relu4", 13, 384),
    ("conv5", 13, 256), ("relu5", 13, 256), ("pool5", 6, 256),
    ("fc6", 1, 4096), ("relu6", 1, 4096), ("drop6", 1, 4096),
    ("fc7", 1, 4096), ("relu7", 1, 4096), ("drop7", 1, 4096),
    ("fc8", 1, 1000),
]
# Table 1's layers and the processing steps they group (the output of a layer is its last step).
TABLE1_LAYERS = {
    "conv1": ["conv1", "relu1", "mpool1", "norm1"],
    "conv2": ["conv2", "relu2", "mpool2", "norm2"],
    "conv3": ["conv3", "relu3"],
    "conv4": ["conv4", "relu4"],
    "conv5": ["conv5", "relu5", "mpool5"],
    "fc6": ["fc6", "relu6", "drop6"],
    "fc7": ["fc7", "relu7", "drop7"],
    "fc8": ["fc8"],
}


def table1_shape(step: str) -> tuple:
    step = step.replace("mpool", "pool")
    size, channels = next((s, c) for name, s, c in TABLE1 if name == step)
    return (channels,) if size == 1 else (channels, size, size)


def table1_layer_shape(layer: str) -> tuple:
    return table1_shape(TABLE1_LAYERS[layer][-1])


# Layer definitions (Krizhevsky et al. 2012 / Caffe's reference CaffeNet): in, out, kernel, groups.
CONVS = {"conv1": (3, 96, 11, 1), "conv2": (96, 256, 5, 2), "conv3": (256, 384, 3, 1),
         "conv4": (384, 384, 3, 2), "conv5": (384, 256, 3, 2)}
FCS = {"fc6": (256 * 6 * 6, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000)}


@functools.lru_cache(maxsize=None)
def rep(layer: str, seed: int = 0) -> AlexNetRepresentation:
    return create(layer, weights="random", seed=seed, arch="caffenet")


@functools.lru_cache(maxsize=None)
def random_net(seed: int = 0) -> CaffeNet:
    return load_caffenet("random", seed).model


def images(n: int = 2, h: int = 227, w: int = 227, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def caffe_input(x227: torch.Tensor) -> torch.Tensor:
    """Reference preprocessing written out: RGB [0, 1] → BGR 0-255 minus the mean pixel."""
    bgr = torch.stack([x227[:, 2], x227[:, 1], x227[:, 0]], dim=1) * 255.0
    return bgr - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)


def caffe_lrn(a: torch.Tensor, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """Caffe's LRN, ACROSS_CHANNELS, written out: scale_c = k + alpha/n * sum of a_j^2 over
    j = c - (n-1)/2 … c + (n-1)/2 (channels outside the range count as 0); b = a * scale^-beta."""
    a = a.double()
    channels = a.shape[1]
    pre = (n - 1) // 2
    out = torch.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - pre), min(channels, c - pre + n)
        scale = k + alpha / n * (a[:, lo:hi] ** 2).sum(dim=1)
        out[:, c] = a[:, c] * scale.pow(-beta)
    return out


# -- architecture ---------------------------------------------------------------------


def test_every_processing_step_has_table1_shape():
    net = random_net()
    modules = dict(net.named_children())
    seen = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
             for name, _, _ in TABLE1]
    try:
        with torch.no_grad():
            out = net(caffe_input(images(1)))
    finally:
        for h in hooks:
            h.remove()
    assert seen == {name: table1_shape(name) for name, _, _ in TABLE1}
    assert tuple(out.shape) == (1, 1000)
    # The network is exactly Table 1's steps plus the flatten before fc6.
    assert [n for n in modules if n != "flatten"] == [name for name, _, _ in TABLE1]


@pytest.mark.parametrize("layer", list(TABLE1_LAYERS))
def test_layer_outputs_have_table1_shape(layer):
    r = rep(layer)
    expected = table1_layer_shape(layer)
    assert tuple(r.compute(images(1)).shape) == (1, *expected)
    assert r.output_shape(227, 227) == expected
    assert r.output_shape(256, 300) == expected  # cropped to 227 first
    assert r.differentiable


def test_layer_ends_are_table1_last_steps():
    for layer, steps in TABLE1_LAYERS.items():
        last = steps[-1].replace("mpool", "pool")
        # drop6 / drop7 are the identity at evaluation: we stop at the ReLU before them
        assert LAYER_ENDS[layer] == (last.replace("drop", "relu") if last.startswith("drop") else last)
    assert isinstance(rep("conv1").net[-1], torch.nn.LocalResponseNorm)
    assert isinstance(rep("conv2").net[-1], torch.nn.LocalResponseNorm)
    assert isinstance(rep("conv5").net[-1], torch.nn.MaxPool2d)
    assert isinstance(rep("fc8").net[-1], torch.nn.Linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in rep("conv5").net.modules())


def test_parameter_count_from_layer_definitions():
    expected = sum(o * (i // g) * k * k + o for i, o, k, g in CONVS.values())
    expected += sum(i * o + o for i, o in FCS.values())
    net = random_net()
    assert sum(p.numel() for p in net.parameters()) == expected
    assert round(expected / 1e6, 2) == 60.97  # the ~61M of AlexNet/CaffeNet
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == STATE_DICT_SHAPES


def test_grouped_convolutions_are_grouped():
    net = random_net()
    for name, (i, o, k, g) in CONVS.items():
        conv = getattr(net, name)
        assert conv.groups == g and tuple(conv.weight.shape) == (o, i // g, k, k)
    # Behaviour: in conv2, the second half of the outputs sees only the second half of the inputs.
    x = torch.randn(1, 96, 27, 27)
    y = x.clone()
    y[:, :48] += torch.randn(1, 48, 27, 27)
    with torch.no_grad():
        a, b = net.conv2(x), net.conv2(y)
    assert torch.equal(a[:, 128:], b[:, 128:])
    assert not torch.allclose(a[:, :128], b[:, :128])


def test_lrn_equals_caffes_formula():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 96, 5, 5, generator=g) * 200  # conv1-sized activations, large enough to matter
    ours = random_net().norm1(a)
    ref = caffe_lrn(a)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(ours, a, rtol=1e-2)  # the normalisation really changes the values
    # and alpha divided by the local size: with alpha not divided the result is different
    assert not torch.allclose(ours.double(), caffe_lrn(a, alpha=5e-4), rtol=1e-3)


def test_pooling_rounds_up_like_caffe():
    assert caffenet_sizes(227) == {"conv1": 55, "pool1": 27, "pool2": 13, "pool5": 6}
    # at 224 conv1 is 54: Caffe's ceil gives 27 (floor would give 26)
    assert caffenet_sizes(224)["pool1"] == 27
    for crop in (224, 256):
        sizes = caffenet_sizes(crop)
        with torch.no_grad():
            out = rep("conv5").net(torch.zeros(1, 3, crop, crop))
        assert out.shape[-1] == sizes["pool5"]
    assert fc_crops()[0] <= 227 <= fc_crops()[1]


def test_fc_layers_need_6x6_pool5_conv_layers_any_crop():
    with pytest.raises(ValueError, match="pool5 to be 6×6"):
        create("fc6", weights="random", arch="caffenet", crop=256)
    r = create("conv5", weights="random", arch="caffenet", crop=256)
    assert r.output_shape(256, 256) == (256, 7, 7)


# -- preprocessing --------------------------------------------------------------------


def test_preprocessing_is_caffes():
    x = images(2, 256, 300)
    got = rep("conv1").preprocess(x)
    ref = caffe_input(fit_crop(x, 227))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
    # a pure red image: B and G planes are -mean, R is 255 - mean_R
    red = torch.zeros(1, 3, 227, 227)
    red[:, 0] = 1.0
    p = rep("conv1").preprocess(red)
    assert torch.allclose(p[0, :, 0, 0], torch.tensor([-CAFFE_MEAN_BGR[0], -CAFFE_MEAN_BGR[1], 255 - CAFFE_MEAN_BGR[2]]))
    torch.testing.assert_close(caffe_preprocess(red, torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)), p)


def test_matches_the_plain_module():
    x = images(2, 240, 250, seed=1)
    with torch.no_grad():
        ref = random_net()(caffe_input(fit_crop(x, 227)))
    torch.testing.assert_close(rep("fc8").compute(x), ref, rtol=1e-4, atol=1e-4)


# -- weights --------------------------------------------------------------------------


def test_random_is_deterministic_per_seed_and_labelled():
    x = images(1)
    a = rep("conv3", 0).compute(x)
    b = create("conv3", weights="random", seed=0, arch="caffenet").compute(x)
    c = rep("conv3", 1).compute(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    ident = rep("conv3", 1).identity()
    assert ident["weights"] == "random:1" and ident["label"] == "CaffeNet (untrained, random:1)"
    assert ident["weights_source"] == "random"


def test_random_is_caffes_initialisation_and_leaves_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    net = load_caffenet("random", 4).model
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(net.conv2.bias, torch.ones(256)) and torch.equal(net.fc8.bias, torch.zeros(1000))
    assert abs(net.fc6.weight.std().item() - 0.005) < 1e-4 and abs(net.conv3.weight.std().item() - 0.01) < 2e-4


def test_state_dict_file_round_trip(tmp_path):
    source = random_net(5)
    path = tmp_path / "caffenet.pt"
    torch.save(source.state_dict(), path)
    x = images(2, 250, 260)
    loaded = create("conv2", weights=str(path), arch="caffenet")
    seeded = create("conv2", weights="random", seed=5, arch="caffenet")
    for layer in ("conv2", "fc7"):  # the second layer cut from the same loaded network (at_node)
        r = loaded if layer == "conv2" else loaded.at_node(layer)
        with torch.no_grad():
            ref = (seeded if layer == "conv2" else seeded.at_node(layer)).net(caffe_input(fit_crop(x, 227)))
        torch.testing.assert_close(r.compute(x), ref, rtol=1e-5, atol=1e-5)
    ident = r.identity()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert ident["weights"] == sha and ident["weights_source"] == "path" and ident["weights_file"] == str(path)
    assert sha[:12] in ident["label"] and ident["label"].startswith("CaffeNet")
    assert ident["arch"] == "caffenet" and ident["layer"] == "fc7"
    assert ident["normalize_mean"] == "104.007,116.669,122.679" and ident["normalize_std"] == "1,1,1"


def test_missing_unexpected_or_misshapen_keys_are_clear_errors(tmp_path):
    state = random_net().state_dict()
    broken = {k: v for k, v in state.items() if k != "fc8.bias"}
    broken["classifier.6.bias"] = state["fc8.bias"]
    path = tmp_path / "broken.pt"
    torch.save(broken, path)
    with pytest.raises(ValueError) as err:
        create("conv1", weights=str(path), arch="caffenet")
    msg = str(err.value)
    assert "missing keys: fc8.bias" in msg and "unexpected keys: classifier.6.bias" in msg and str(path) in msg
    assert "conv1.weight (96, 3, 11, 11)" in msg  # the expected layout is spelled out
    wrong = dict(state)
    wrong["conv2.weight"] = torch.zeros(256, 96, 5, 5)  # an ungrouped conv2
    torch.save(wrong, path)
    with pytest.raises(ValueError, match=r"wrong shapes: conv2.weight \(256, 96, 5, 5\) \(expected \(256, 48, 5, 5\)\)"):
        create("conv1", weights=str(path), arch="caffenet")


def test_torchvision_alexnet_file_is_rejected(tmp_path):
    import torchvision

    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="not a CaffeNet state dict"):
        create("conv1", weights=str(path), arch="caffenet")


class _Hostile:
    """Unpickling this would create a file (proof that code ran)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = dict(random_net().state_dict())
    state["conv1.bias"] = _Hostile(marker)
    torch.save(state, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="could run code"):
        create("conv1", weights=str(path), arch="caffenet")
    assert not marker.exists()


def test_missing_file_and_imagenet_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(W.WeightsUnavailableError, match="never used as a fallback") as err:
        create("fc6", weights=str(missing), arch="caffenet")
    assert str(missing) in str(err.value)
    for spec in ("imagenet", "imagenet:IMAGENET1K_V1"):
        with pytest.raises(W.WeightsUnavailableError) as err:
            create("fc6", weights=spec, arch="caffenet")
        msg = str(err.value)
        assert "bvlc_reference_caffenet.caffemodel" in msg and "fc6.weight (4096, 9216)" in msg
        assert "never used as a fallback" in msg


def test_bad_arch_and_params():
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        create("conv1", weights="random", arch="vgg")
    with pytest.raises(TypeError, match="known: weights, seed, crop, arch"):
        create("conv1", weights="random", arch="caffenet", stride=2)


def test_identity_tells_the_architectures_apart():
    tv = create("conv5", weights="random").identity()
    cn = rep("conv5").identity()
    assert tv["arch"] == "torchvision" and tv["param_arch"] == "torchvision"
    assert cn["arch"] == "caffenet" and cn["param_arch"] == "caffenet"
    assert cn["weights"] == tv["weights"] == "random:0"  # same weights spec, different networks
    assert cn != tv


def test_gradients_reach_input():
    x = images(1).requires_grad_(True)
    rep("conv2").compute(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in random_net().parameters())


# -- configuration --------------------------------------------------------------------


def test_config_arch_default_and_choices():
    assert validate_config({})["features"]["alexnet"]["arch"] == "torchvision"
    config = validate_config({"features": {"alexnet": {"arch": "caffenet", "weights": "random"}}})
    assert config["features"]["alexnet"]["arch"] == "caffenet"
    with pytest.raises(ConfigError, match="features.alexnet.arch: 'vgg' is not one of"):
        validate_config({"features": {"alexnet": {"arch": "vgg"}}})
    with pytest.raises(ConfigError, match="caffenet has no downloadable imagenet weights"):
        validate_config({"features": {"alexnet": {"arch": "caffenet"}}})  # weights default: imagenet


@pytest.mark.slow
def test_workflow_passes_arch_to_the_feature_cache_and_the_autoencoder(tmp_path):
    from workflow import config_path, expected_network_feature_jobs, planned_rules, snakemake

    configfile = config_path("caffenet")
    target, ae_target = "results/features/conv4/test.h5", "results/features/conv4-ae/test.h5"
    snakemake(tmp_path, target, ae_target, configfile=configfile)
    with h5py.File(tmp_path / target, "r") as f:
        attrs = read_attrs(f)
    assert attrs["params"]["arch"] == "caffenet" and attrs["identity"]["arch"] == "caffenet"
    assert attrs["label"] == "CaffeNet (untrained, random:0)"
    assert list(attrs["shape"]) == [384, 13, 13]
    assert planned_rules(tmp_path, target, configfile=configfile) == set()
    rerun = planned_rules(tmp_path, target, "--config", "features={alexnet: {weights: random, arch: torchvision}}",
                          configfile=configfile)
    assert set(expected_network_feature_jobs({"alexnet": 1})) <= rerun and "extract_data" not in rerun
    # the autoencoder variant: trained on CaffeNet, its encoder file read back as CaffeNet
    with h5py.File(tmp_path / ae_target, "r") as f:
        attrs = read_attrs(f)
    assert attrs["params"]["arch"] == "caffenet" and attrs["identity"]["weights_source"] == "path"
    assert attrs["label"].startswith("CaffeNet (weights encoder.pt") and list(attrs["shape"]) == [384, 13, 13]


def test_autoencoder_encoder_file_loads_as_caffenet(tmp_path):
    """The §5.2 autoencoder fine-tunes CaffeNet and writes a state dict that loads as arch caffenet."""
    from preimage import data, image_store, train

    params = validate_config({"data": {"size": 32, "train_per_class": 2, "test_per_class": 1}})["data"]
    paths = {"train": tmp_path / "train.h5", "test": tmp_path / "test.h5"}
    data.extract(params, paths)
    cfg = dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    result = train.train_autoencoder(
        "conv1", str(paths["train"]), str(tmp_path / "ae.pt"), str(tmp_path / "enc.pt"), str(tmp_path / "ae.csv"),
        str(tmp_path / "ckpt.pt"), cfg, weights="random", weights_seed=2, crop=227, arch="caffenet")
    assert "CaffeNet" in result["meta"]["label"] and result["meta"]["feature_shape"] == [96, 27, 27]
    tuned = create("conv1", weights=str(tmp_path / "enc.pt"), arch="caffenet")
    start = create("conv1", weights="random", seed=2, arch="caffenet")
    assert not torch.equal(tuned.model.conv1.weight, start.model.conv1.weight)
    assert torch.equal(tuned.model.fc8.weight, start.model.fc8.weight)  # above conv1: untouched
    x = image_store.to_float(image_store.ImageStore(paths["test"]).read(0, 1))
    assert tuned(x).shape == (1, 96, 27, 27)

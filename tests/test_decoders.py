"""Tests of preimage.decoders (paper §3, supplementary Tables 3-7)."""

import pytest
import torch
import torch.nn as nn

from preimage.decoders import (
    LEAKY_SLOPE,
    build_decoder,
    count_parameters,
    decoder_kind_for,
    fc_output_size,
    scale_channels,
)

W = 0.125  # small width for speed


def feature_shapes(s: int) -> dict:
    return {
        "hog": ("two_stream", (31, s // 8, s // 8)),
        "lbp": ("two_stream", (58, s // 16, s // 16)),
        "sift": ("sift", (133, s // 4, s // 4)),
        "conv1": ("conv", (64, 27, 27)),
        "conv3": ("conv", (384, 13, 13)),
        "conv5": ("conv", (256, 6, 6)),
        "fc6": ("fc", (4096,)),
    }


@pytest.mark.parametrize("s", [64, 256])
@pytest.mark.parametrize("rep", ["hog", "lbp", "sift", "conv1", "conv3", "conv5", "fc6"])
def test_output_shapes(s, rep):
    torch.manual_seed(0)
    kind, fs = feature_shapes(s)[rep]
    assert decoder_kind_for(rep) == kind
    d = build_decoder(kind, fs, s, width=W)
    expected = fc_output_size(s) if kind == "fc" else s
    assert d.output_size == expected
    assert d.image_size == s
    with torch.no_grad():
        y = d(torch.randn(2, *fs))
    assert y.shape == (2, 3, expected, expected)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("s", [96, 128, 227])
@pytest.mark.parametrize(
    "kind,fs",
    [("two_stream", (31, 12, 12)), ("two_stream", (31, 28, 28)), ("sift", (133, 24, 24)),
     ("conv", (256, 7, 7)), ("conv", (192, 15, 15)), ("conv", (8, 5, 3)), ("fc", (1000,)), ("fc", (512, 1, 1))],
)
def test_odd_sizes(kind, fs, s):
    d = build_decoder(kind, fs, s, width=W)
    with torch.no_grad():
        y = d(torch.randn(1, *fs))
    assert y.shape == (1, 3, d.output_size, d.output_size)
    if kind != "fc":
        assert d.output_size == s


def test_fc_output_size_rule():
    assert fc_output_size(256) == 128
    assert fc_output_size(227) == 128
    assert fc_output_size(128) == 64
    assert fc_output_size(96) == 64
    assert fc_output_size(64) == 32
    d = build_decoder("fc", (4096,), 256, width=W, output_size=64)
    assert d.output_size == 64
    assert d(torch.randn(1, 4096)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("kind,fs", [("two_stream", (31, 8, 8)), ("sift", (133, 16, 16)), ("conv", (256, 6, 6)), ("fc", (100,))])
def test_gradients_flow(kind, fs):
    torch.manual_seed(0)
    d = build_decoder(kind, fs, 64, width=W)
    x = torch.randn(2, *fs, requires_grad=True)
    y = d(x)
    y.pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in d.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # Every parameterised layer gets some gradient (the whole network is used).
    assert sum(float(p.grad.abs().sum() > 0) for p in d.parameters()) == len(list(d.parameters()))


def test_leaky_relu_everywhere_but_last():
    d = build_decoder("conv", (256, 6, 6), 64, width=W)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == LEAKY_SLOPE == 0.2 for a in acts)
    assert not any(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)) for m in d.modules())
    # The last module that produces output is a (transposed) convolution, not an activation.
    last = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.LeakyReLU))][-1]
    assert isinstance(last, (nn.Conv2d, nn.ConvTranspose2d)) and last.out_channels == 3


def test_nearest_upsample_option():
    d = build_decoder("two_stream", (31, 8, 8), 64, width=W, upsample="nearest")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in d.modules())
    assert d(torch.randn(1, 31, 8, 8)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError):
        build_decoder("conv", (8, 4, 4), 64, upsample="bicubic")


def test_width_scaling_and_paper_scale():
    assert scale_channels(256, 0.125) == 32
    assert scale_channels(32, 0.125) == 8  # floor
    with torch.device("meta"):
        full = build_decoder("fc", (4096,), 256, width=1.0)
        small = build_decoder("fc", (4096,), 256, width=0.125)
    n = count_parameters(full)
    # Table 7 at width 1: three 4096-wide fc layers (3·4096² ≈ 50.3M) + five up-convolutions.
    fc = 3 * (4096 * 4096 + 4096)
    uconv = sum(a * b * 16 + b for a, b in [(256, 256), (256, 128), (128, 64), (64, 32), (32, 3)])
    assert n == fc + uconv
    assert 50e6 < n < 55e6
    assert count_parameters(small) < n / 15  # fc1 keeps its 4096 inputs
    with torch.device("meta"):
        hog = build_decoder("two_stream", (31, 32, 32), 256, width=1.0)
    assert 5e6 < count_parameters(hog) < 60e6
    assert "convA1" in hog.describe() and "uconvJ3" in hog.describe()


def test_input_shape_checked():
    d = build_decoder("conv", (256, 6, 6), 64, width=W)
    with pytest.raises(ValueError):
        d(torch.randn(1, 256, 7, 7))
    with pytest.raises(ValueError):
        build_decoder("conv", (4096,), 64)
    with pytest.raises(ValueError):
        build_decoder("nope", (4096,), 64)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("hog", "two_stream"), ("HOG", "two_stream"), ("hog-uoctti", "two_stream"), ("lbp", "two_stream"),
        ("lbp_8", "two_stream"), ("sift", "sift"), ("sift-dense", "sift"),
        ("conv1", "conv"), ("conv5", "conv"), ("conv5-random", "conv"), ("pool5", "conv"), ("norm2", "conv"),
        ("fc6", "fc"), ("fc6-random", "fc"), ("fc6-ae", "fc"), ("fc7", "fc"), ("fc8", "fc"), ("prob", "fc"),
        ("torchvision:resnet18:layer4", "conv"), ("torchvision:resnet18:layer2.1.relu", "conv"),
        ("torchvision:alexnet:features.12", "conv"), ("torchvision:resnet18:avgpool", "fc"),
        ("torchvision:resnet18:fc", "fc"), ("torchvision:alexnet:classifier.4", "fc"),
        ("torchvision:vgg16:classifier", "fc"),
        ("efficientnet_lite0:stem", "conv"), ("efficientnet_lite0:stages.3", "conv"),
        ("efficientnet_lite0:pool", "fc"), ("efficientnet_lite0:fc", "fc"),
    ],
)
def test_decoder_kind_for(name, kind):
    assert decoder_kind_for(name) == kind


def test_decoder_kind_for_with_shape():
    assert decoder_kind_for("torchvision:vit_b_16:encoder", (768,)) == "fc"
    assert decoder_kind_for("torchvision:resnet18:layer4", (512, 1, 1)) == "fc"
    assert decoder_kind_for("torchvision:resnet18:avgpool", (512, 7, 7)) == "conv"
    assert decoder_kind_for("mystery", (64, 8, 8)) == "conv"
    # one-colon family names are graph nodes too: the shape decides, whatever the node is called
    assert decoder_kind_for("efficientnet_lite0:stages.5.0.dw.act", (1152, 7, 7)) == "conv"
    assert decoder_kind_for("efficientnet_lite0:head", (1280, 7, 7)) == "conv"  # by name: a classifier head
    assert decoder_kind_for("efficientnet_lite0:fc", (1000,)) == "fc"
    assert decoder_kind_for("efficientnet_lite0:conv_like_fc", (1280, 1, 1)) == "fc"
    assert decoder_kind_for("efficientnet_lite0:fc6", (80, 14, 14)) == "conv"
    with pytest.raises(ValueError):
        decoder_kind_for("mystery")


def test_tiny_decoder_fits_a_batch():
    torch.manual_seed(0)
    d = build_decoder("two_stream", (31, 4, 4), 32, width=W)
    f, img = torch.randn(4, 31, 4, 4), torch.rand(4, 3, 32, 32)
    opt = torch.optim.Adam(d.parameters(), 1e-3)
    losses = []
    for _ in range(30):
        loss = ((d(f) - img) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

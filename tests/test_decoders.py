"""Tests of preimage.decoders (paper §3, supplementary Tables 3-7)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from preimage.features.base import lookup
from preimage.decoders import (
    LEAKY_SLOPE,
    Decoder,
    build_decoder,
    count_parameters,
    fc_output_size,
    scale_channels,
)

W = 0.125  # small width for speed

# --------------------------------------------------------------------------- the paper's tables
# Transcribed from the supplementary material of Dosovitskiy & Brox (CVPR 2016), Tables 3-7:
# (Layer, Input, InSize, K, S, OutSize); sizes as (H, W, C) or (D,), "—" as None, the joined
# input "{upconvA3, convB2}" as a tuple.

TABLE_3_HOG = [
    ("convA1", "HOG", (32, 32, 31), 5, 2, (16, 16, 256)),
    ("convA2", "convA1", (16, 16, 256), 5, 2, (8, 8, 512)),
    ("convA3", "convA2", (8, 8, 512), 3, 2, (4, 4, 1024)),
    ("upconvA1", "convA3", (4, 4, 1024), 4, 2, (8, 8, 512)),
    ("upconvA2", "upconvA1", (8, 8, 512), 4, 2, (16, 16, 256)),
    ("upconvA3", "upconvA2", (16, 16, 256), 4, 2, (32, 32, 128)),
    ("convB1", "HOG", (32, 32, 31), 5, 1, (32, 32, 128)),
    ("convB2", "convB1", (32, 32, 128), 3, 1, (32, 32, 128)),
    ("convJ1", ("upconvA3", "convB2"), (32, 32, 256), 3, 1, (32, 32, 256)),
    ("convJ2", "convJ1", (32, 32, 256), 3, 1, (32, 32, 128)),
    ("upconvJ4", "convJ2", (32, 32, 128), 4, 2, (64, 64, 64)),
    ("upconvJ5", "upconvJ4", (64, 64, 64), 4, 2, (128, 128, 32)),
    ("upconvJ6", "upconvJ5", (128, 128, 32), 4, 2, (256, 256, 3)),
]

TABLE_4_SIFT = [
    ("conv1", "SIFT", (64, 64, 133), 5, 2, (32, 32, 256)),
    ("conv2", "conv1", (32, 32, 256), 3, 2, (16, 16, 512)),
    ("conv3", "conv2", (16, 16, 512), 3, 2, (8, 8, 1024)),
    ("conv4", "conv3", (8, 8, 1024), 3, 2, (4, 4, 2048)),
    ("conv5", "conv4", (4, 4, 2048), 3, 1, (4, 4, 2048)),
    ("conv6", "conv5", (4, 4, 2048), 3, 1, (4, 4, 1024)),
    ("upconv1", "conv6", (4, 4, 1024), 4, 2, (8, 8, 512)),
    ("upconv2", "upconv1", (8, 8, 512), 4, 2, (16, 16, 256)),
    ("upconv3", "upconv2", (16, 16, 256), 4, 2, (32, 32, 128)),
    ("upconv4", "upconv3", (32, 32, 128), 4, 2, (64, 64, 64)),
    ("upconv5", "upconv4", (64, 64, 64), 4, 2, (128, 128, 32)),
    ("upconv6", "upconv5", (128, 128, 32), 4, 2, (256, 256, 3)),
]

TABLE_5_LBP = [
    ("convA1", "LBP", (16, 16, 58), 5, 2, (8, 8, 256)),
    ("convA2", "convA1", (8, 8, 256), 5, 2, (4, 4, 512)),
    ("convA3", "convA2", (4, 4, 512), 3, 1, (4, 4, 1024)),
    ("upconvA1", "convA3", (4, 4, 1024), 4, 2, (8, 8, 512)),
    ("upconvA2", "upconvA1", (8, 8, 512), 4, 2, (16, 16, 256)),
    ("convB1", "LBP", (16, 16, 58), 5, 1, (16, 16, 128)),
    ("convB2", "convB1", (16, 16, 128), 3, 1, (16, 16, 128)),
    ("convJ1", ("upconvA2", "convB2"), (16, 16, 384), 3, 1, (16, 16, 256)),
    ("convJ2", "convJ1", (16, 16, 256), 3, 1, (16, 16, 128)),
    ("upconvJ3", "convJ2", (16, 16, 128), 4, 2, (32, 32, 128)),
    ("upconvJ4", "upconvJ3", (32, 32, 128), 4, 2, (64, 64, 64)),
    ("upconvJ5", "upconvJ4", (64, 64, 64), 4, 2, (128, 128, 32)),
    ("upconvJ6", "upconvJ5", (128, 128, 32), 4, 2, (256, 256, 3)),
]

TABLE_6_CONV5 = [
    ("conv1", "AlexNet-CONV5", (6, 6, 256), 3, 1, (6, 6, 256)),
    ("conv2", "conv1", (6, 6, 256), 3, 1, (6, 6, 256)),
    ("conv3", "conv2", (6, 6, 256), 3, 1, (6, 6, 256)),
    ("upconv1", "conv3", (6, 6, 256), 5, 2, (12, 12, 256)),
    ("upconv2", "upconv1", (12, 12, 256), 5, 2, (24, 24, 128)),
    ("upconv3", "upconv2", (24, 24, 128), 5, 2, (48, 48, 64)),
    ("upconv4", "upconv3", (48, 48, 64), 5, 2, (96, 96, 32)),
    ("upconv5", "upconv4", (96, 96, 32), 5, 2, (192, 192, 3)),
]

TABLE_7_FC8 = [
    ("fc1", "AlexNet-FC8", (1000,), None, None, (4096,)),
    ("fc2", "fc1", (4096,), None, None, (4096,)),
    ("fc3", "fc2", (4096,), None, None, (4096,)),
    ("reshape", "fc3", (4096,), None, None, (4, 4, 256)),
    ("upconv1", "reshape", (4, 4, 256), 5, 2, (8, 8, 256)),
    ("upconv2", "upconv1", (8, 8, 256), 5, 2, (16, 16, 128)),
    ("upconv3", "upconv2", (16, 16, 128), 5, 2, (32, 32, 64)),
    ("upconv4", "upconv3", (32, 32, 64), 5, 2, (64, 64, 32)),
    ("upconv5", "upconv4", (64, 64, 32), 5, 2, (128, 128, 3)),
]

PAPER_INPUTS = ("HOG", "LBP", "SIFT", "AlexNet-CONV5", "AlexNet-FC8")

# (table, kind, feature shape (C, H, W) or (D,), image size): the paper's settings.
PAPER = {
    "hog": (TABLE_3_HOG, "two_stream", (31, 32, 32), 256),
    "sift": (TABLE_4_SIFT, "sift", (133, 64, 64), 256),
    "lbp": (TABLE_5_LBP, "two_stream", (58, 16, 16), 256),
    "conv5": (TABLE_6_CONV5, "conv", (256, 6, 6), 227),
    "fc8": (TABLE_7_FC8, "fc", (1000,), 227),
}


def normalised(table):
    """Table rows with the paper's input name replaced by "input" and inputs as tuples."""
    rows = []
    for name, inp, in_shape, k, s, out_shape in table:
        inputs = inp if isinstance(inp, tuple) else (inp,)
        inputs = tuple("input" if i in PAPER_INPUTS else i for i in inputs)
        rows.append((name, inputs, in_shape, k, s, out_shape))
    return rows


def built_rows(decoder: Decoder):
    return [(l.name, l.inputs, l.in_shape, l.kernel, l.stride, l.out_shape) for l in decoder.layers]


def table_parameters(table) -> int:
    """Weights + biases of every conv/upconv (K²·Cin·Cout + Cout) and fc (Din·Dout + Dout) row."""
    total = 0
    for _, _, in_shape, k, _, out_shape in table:
        if k is not None:
            total += k * k * in_shape[-1] * out_shape[-1] + out_shape[-1]
        elif len(out_shape) == 1:
            total += in_shape[0] * out_shape[0] + out_shape[0]
    return total


def meta_decoder(kind, fs, size, width=1.0, **kw):
    with torch.device("meta"):
        return build_decoder(kind, fs, size, width=width, **kw)


@pytest.mark.parametrize("rep", list(PAPER))
def test_paper_tables_row_for_row(rep):
    table, kind, fs, size = PAPER[rep]
    d = meta_decoder(kind, fs, size)
    assert built_rows(d) == normalised(table)
    assert d.pad == (0, 0)
    # describe() prints exactly these rows (no padding or cropping rows at the paper's sizes).
    lines = d.describe().splitlines()
    assert len(lines) == 1 + len(table)
    for line, (name, *_rest) in zip(lines[1:], table):
        assert line.split()[0] == name
    # The forward pass gives the table's final shape.
    out_h, out_w, out_c = table[-1][-1]
    assert d.output_size == out_h == out_w and out_c == 3
    with torch.device("meta"):
        y = d(torch.empty(2, *fs))
    assert tuple(y.shape) == (2, 3, out_h, out_w)
    if kind in ("two_stream", "sift"):
        assert d.output_size == size


@pytest.mark.parametrize("rep", list(PAPER))
def test_paper_parameter_counts(rep):
    table, kind, fs, size = PAPER[rep]
    ours, paper = count_parameters(meta_decoder(kind, fs, size)), table_parameters(table)
    print(f"{rep}: {ours} parameters built, {paper} from the table")
    assert abs(ours - paper) <= 0.01 * paper
    assert ours == paper  # in fact exact


@pytest.mark.parametrize("rep", list(PAPER))
def test_leaky_relu_after_every_layer_but_the_last(rep):
    _, kind, fs, size = PAPER[rep]
    d = meta_decoder(kind, fs, size)
    for i, layer in enumerate(d.layers):
        block = d.blocks[layer.name]
        if layer.name == "reshape":
            continue
        assert isinstance(block, nn.Sequential)
        weighted = block[0]
        if layer.kernel is None:
            assert isinstance(weighted, nn.Linear)
        elif layer.stride == 2 and layer.name.startswith("up"):
            assert isinstance(weighted, nn.ConvTranspose2d)
            assert weighted.kernel_size == (layer.kernel,) * 2 and weighted.stride == (2, 2)
        else:
            assert isinstance(weighted, nn.Conv2d) and not isinstance(weighted, nn.ConvTranspose2d)
            assert weighted.kernel_size == (layer.kernel,) * 2 and weighted.stride == (layer.stride,) * 2
        if i < len(d.layers) - 1:
            assert len(block) == 2 and isinstance(block[1], nn.LeakyReLU)
            assert block[1].negative_slope == LEAKY_SLOPE == 0.2
        else:
            assert len(block) == 1
    assert not any(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)) for m in d.modules())


@pytest.mark.parametrize("k", [4, 5])
def test_upconvolution_is_zero_unpooling_then_convolution(k):
    """§3: each value at the top-left of a 2×2 block of zeros, then a K×K convolution."""
    torch.manual_seed(0)
    d = build_decoder("conv" if k == 5 else "sift", (4, 6, 6) if k == 5 else (4, 8, 8), 24, width=W)
    up = next(m for m in d.modules() if isinstance(m, nn.ConvTranspose2d))
    x = torch.randn(2, up.in_channels, 5, 5)
    unpooled = torch.zeros(2, up.in_channels, 10, 10)
    unpooled[..., ::2, ::2] = x
    # ConvTranspose2d(k, 2, p, output_padding=op) on the unpooled map: a convolution with the
    # flipped kernel, padded k-1-p at the top/left and k-2-p+op at the bottom/right
    # (K=4: 2 and 1; K=5: 2 and 2, i.e. a "same" 5×5 convolution).
    p, op = up.padding[0], up.output_padding[0]
    assert (p, op) == ((1, 0) if k == 4 else (2, 1))
    lo, hi = k - 1 - p, k - 2 - p + op
    kernel = up.weight.flip(-1, -2).transpose(0, 1)
    expected = F.conv2d(F.pad(unpooled, (lo, hi, lo, hi)), kernel, up.bias)
    with torch.no_grad():
        got = up(x)
    assert got.shape == (2, up.out_channels, 10, 10) == expected.shape
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)


def test_width_scales_every_hidden_channel_of_the_same_topology():
    for rep, (_, kind, fs, size) in PAPER.items():
        full, small = meta_decoder(kind, fs, size), meta_decoder(kind, fs, size, width=0.25)
        assert len(full.layers) == len(small.layers)
        for a, b in zip(full.layers, small.layers):
            assert (a.name, a.inputs, a.kernel, a.stride) == (b.name, b.inputs, b.kernel, b.stride)
            assert a.out_shape[:-1] == b.out_shape[:-1]
            expected = 3 if a.out_shape[-1] == 3 else scale_channels(a.out_shape[-1], 0.25)
            if a.name == "fc3":  # the 4×4 seed of scaled channels
                expected = 16 * scale_channels(256, 0.25)
            assert b.out_shape[-1] == expected, (rep, a.name)
    assert scale_channels(256, 0.125) == 32
    assert scale_channels(32, 0.125) == 8  # floor


# --------------------------------------------------------------------------- other sizes (derived)


def feature_shapes(s: int) -> dict:
    return {
        "hog": ("two_stream", (31, (s + 4) // 8, (s + 4) // 8)),
        "hog4": ("two_stream", (31, s // 4, s // 4)),
        "lbp": ("two_stream", (58, s // 16, s // 16)),
        "lbp4": ("two_stream", (58, s // 4, s // 4)),
        "sift": ("sift", (133, s // 4, s // 4)),
        "conv1": ("conv", (64, 27, 27)),
        "conv3": ("conv", (384, 13, 13)),
        "conv5": ("conv", (256, 6, 6)),
        "fc6": ("fc", (4096,)),
    }


@pytest.mark.parametrize("s", [64, 256])
@pytest.mark.parametrize("rep", ["hog", "hog4", "lbp", "lbp4", "sift", "conv1", "conv3", "conv5", "fc6"])
def test_output_shapes(s, rep):
    torch.manual_seed(0)
    kind, fs = feature_shapes(s)[rep]
    d = build_decoder(kind, fs, s, width=W)
    if kind == "fc":
        assert d.output_size == fc_output_size(s)
    elif kind == "conv":
        n = max(1, round(math.log2(s / fs[-1])))
        assert d.output_size == fs[-1] * 2**n
    else:
        assert d.output_size == s and d.pad == (0, 0)
    assert d.image_size == s
    with torch.no_grad():
        y = d(torch.randn(2, *fs))
    assert y.shape == (2, 3, d.output_size, d.output_size)
    assert torch.isfinite(y).all()


def test_embedded_default_topology():
    """64-px images, 4-px cells: 16×16 HOG/LBP features take Table 5's streams, two join
    up-convolutions (16 → 64); SIFT 16×16×133: two strided convolutions and four up-convolutions."""
    d = meta_decoder("two_stream", (31, 16, 16), 64, width=0.25)
    assert [(l.name, l.kernel, l.stride) for l in d.layers][:9] == [(r[0], r[3], r[4]) for r in TABLE_5_LBP[:9]]
    assert [l.name for l in d.layers][9:] == ["upconvJ5", "upconvJ6"]
    assert [l.out_shape for l in d.layers][9:] == [(32, 32, 8), (64, 64, 3)]
    s = meta_decoder("sift", (133, 16, 16), 64, width=0.25)
    assert [l.stride for l in s.layers] == [2, 2, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [l.out_shape[-1] for l in s.layers] == [64, 128, 256, 512, 512, 256, 32, 16, 8, 3]
    assert s.layers[5].out_shape[:2] == (4, 4) and s.output_size == 64


def test_alexnet_conv_output_sizes():
    """conv5 at 227 gives Table 6's 192; conv1-conv4 follow n = max(1, round(log2(s / F)))."""
    sizes = {(64, 27, 27): (216, 3), (192, 13, 13): (208, 4), (384, 13, 13): (208, 4),
             (256, 13, 13): (208, 4), (256, 6, 6): (192, 5)}
    for fs, (out, n) in sizes.items():
        d = meta_decoder("conv", fs, 227)
        assert d.output_size == out
        ups = [l for l in d.layers if l.name.startswith("upconv")]
        assert len(ups) == n and [l.kernel for l in ups] == [5] * n
        assert [l.out_shape[-1] for l in ups] == [256, 128, 64, 32, 3][-n:]
        assert [l.out_shape for l in d.layers[:3]] == [(fs[1], fs[2], 256)] * 3
        assert d.image_size == 227
    assert meta_decoder("conv", (256, 6, 6), 64).output_size == 48
    assert meta_decoder("conv", (64, 27, 27), 64).output_size == 54


@pytest.mark.parametrize(
    "kind,fs,s,pad",
    [
        ("two_stream", (31, 28, 28), 227, (4, 4)),  # HOG of 227 px: 28 cells → 32 (multiple of 8)
        ("two_stream", (58, 14, 14), 227, (2, 2)),  # LBP of 227 px: 14 → 16
        ("two_stream", (31, 12, 12), 96, (0, 0)),
        ("two_stream", (31, 4, 4), 32, (0, 0)),
        ("two_stream", (31, 7, 5), 50, (1, 3)),
        ("sift", (133, 57, 57), 227, (7, 7)),
        ("sift", (133, 24, 24), 96, (0, 0)),
    ],
)
def test_shallow_padding_and_cropping(kind, fs, s, pad):
    d = build_decoder(kind, fs, s, width=W)
    assert d.pad == pad and d.output_size == s
    side = fs[1] + pad[0]
    assert fs[2] + pad[1] == side
    assert d.layers[0].in_shape[:2] == (side, side)
    if any(pad):
        assert d.describe().splitlines()[1].startswith("pad")
    with torch.no_grad():
        y = d(torch.randn(1, *fs))
    assert y.shape == (1, 3, s, s)


def test_padding_keeps_cells_aligned():
    """Zero padding at the bottom/right: a cropped prediction from a 28×28 HOG map equals the
    top-left of the prediction from the same map padded explicitly to 32×32."""
    torch.manual_seed(0)
    d28 = build_decoder("two_stream", (31, 28, 28), 227, width=W).eval()
    d32 = build_decoder("two_stream", (31, 32, 32), 256, width=W).eval()
    d32.load_state_dict(d28.state_dict())
    x = torch.randn(1, 31, 28, 28)
    with torch.no_grad():
        a, b = d28(x), d32(F.pad(x, (0, 4, 0, 4)))
    torch.testing.assert_close(a, b[..., :227, :227])


@pytest.mark.parametrize("s", [96, 128, 227])
@pytest.mark.parametrize(
    "kind,fs",
    [("conv", (256, 7, 7)), ("conv", (192, 15, 15)), ("conv", (8, 5, 3)), ("fc", (1000,)), ("fc", (512, 1, 1))],
)
def test_cnn_odd_sizes(kind, fs, s):
    d = build_decoder(kind, fs, s, width=W)
    with torch.no_grad():
        y = d(torch.randn(1, *fs))
    assert y.shape == (1, 3, d.output_size, d.output_size)
    if kind == "conv":
        side = max(fs[1:])
        assert d.output_size == side * 2 ** max(1, round(math.log2(s / side)))


def test_fc_output_size_rule():
    assert fc_output_size(256) == 128
    assert fc_output_size(227) == 128
    assert fc_output_size(128) == 64
    assert fc_output_size(96) == 64
    assert fc_output_size(64) == 32
    d = build_decoder("fc", (4096,), 256, width=W, output_size=64)
    assert d.output_size == 64
    assert d(torch.randn(1, 4096)).shape == (1, 3, 64, 64)
    # Fewer up-convolutions at small sizes: the last ones of Table 7.
    small = meta_decoder("fc", (4096,), 64)
    assert [l.out_shape for l in small.layers[4:]] == [(8, 8, 64), (16, 16, 32), (32, 32, 3)]
    with pytest.raises(ValueError):
        build_decoder("fc", (4096,), 256, width=W, output_size=100)
    with pytest.raises(TypeError):
        build_decoder("conv", (8, 4, 4), 64, output_size=32)


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


def test_nearest_upsample_option():
    d = build_decoder("two_stream", (31, 8, 8), 64, width=W, upsample="nearest")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in d.modules())
    assert {l.kernel for l in d.layers if l.name.startswith("upconv")} == {3}
    assert d(torch.randn(1, 31, 8, 8)).shape == (1, 3, 64, 64)
    c = build_decoder("conv", (256, 6, 6), 64, width=W, upsample="nearest")
    assert {l.kernel for l in c.layers if l.name.startswith("upconv")} == {5}
    assert c(torch.randn(1, 256, 6, 6)).shape == (1, 3, 48, 48)
    with pytest.raises(ValueError):
        build_decoder("conv", (8, 4, 4), 64, upsample="bicubic")


def test_state_dict_round_trip_uses_table_names():
    torch.manual_seed(0)
    a = build_decoder("two_stream", (58, 16, 16), 64, width=W)
    keys = {k.split(".")[1] for k in a.state_dict()}
    assert keys == {l.name for l in a.layers}
    b = build_decoder("two_stream", (58, 16, 16), 64, width=W)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 58, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_input_shape_checked():
    d = build_decoder("conv", (256, 6, 6), 64, width=W)
    with pytest.raises(ValueError):
        d(torch.randn(1, 256, 7, 7))
    with pytest.raises(ValueError):
        build_decoder("conv", (4096,), 64)
    with pytest.raises(ValueError):
        build_decoder("nope", (4096,), 64)
    with pytest.raises(ValueError):
        build_decoder("sift", (133, 16, 16), 64, width=0)


@pytest.mark.parametrize(
    "name,shape,kind",
    [
        ("hog", (31, 32, 32), "two_stream"), ("lbp", (58, 16, 16), "two_stream"), ("sift", (133, 64, 64), "sift"),
        ("conv1", (64, 27, 27), "conv"), ("conv5", (256, 6, 6), "conv"), ("fc6", (4096,), "fc"),
        ("fc8", (1000,), "fc"), ("torchvision:resnet18:layer4", (512, 7, 7), "conv"),
        ("torchvision:resnet18:avgpool", (512, 1, 1), "fc"), ("torchvision:vit_b_16:encoder", (768,), "fc"),
        ("efficientnet_lite0:stages.5.0.dw.act", (1152, 7, 7), "conv"), ("efficientnet_lite0:fc", (1000,), "fc"),
        ("efficientnet_lite0:head", (1280, 1, 1), "fc"),
    ],
)
def test_each_representation_declares_its_decoder(name, shape, kind):
    # the representation class decides (supplementary Tables 3-7), not its name
    assert lookup(name).decoder_kind(shape) == kind


def test_no_decoder_for_features_of_other_ranks():
    with pytest.raises(ValueError, match="no decoder"):
        lookup("torchvision:resnet18:layer4").decoder_kind((4, 5, 6, 7))
    with pytest.raises(ValueError, match="no decoder"):  # tokens (T, D) only on a square patch grid
        lookup("torchvision:resnet18:layer4").decoder_kind((7, 5))
    with pytest.raises(ValueError, match="no decoder"):  # HOG etc. take no tokens
        lookup("conv1").decoder_kind((5, 768))


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

"""Up-convolutional decoders that invert a feature representation (paper §3).

Dosovitskiy & Brox, "Inverting Visual Representations with Convolutional Networks",
CVPR 2016, train one decoder network per representation Φ to minimise
``Σ_i ‖x_i − f(Φ(x_i), w)‖²`` (§3, eq. 2).  The architectures are given in the
supplementary material:

* Table 3 — HOG (32×32×31 at 256 px): two streams joined, then up-convolutions.
* Table 4 — SIFT (64×64×133 at 256 px, 4-px cells): strided convolutions, then
  up-convolutions to the image size.
* Table 5 — LBP (16×16×58 at 256 px): same two-stream design as HOG.
* Table 6 — AlexNet conv1 … conv5: three 3×3 convolutions at the feature resolution,
  then up-convolutions to the image size.
* Table 7 — AlexNet fc6, fc7, fc8 (vectors): three fully connected layers (4096 each),
  reshape to 4×4×256, five up-convolutions to a 128×128 image.

Provenance of the numbers below
-------------------------------
The supplementary tables themselves could not be read from the reference corpora available
while this module was written: only the beginnings of the arXiv / ar5iv / arxiv-vanity
pages for 1506.02753 were retrievable, and no reimplementation that copies the tables was
found.  What is certain from the paper text is the overall design (listed above), leaky
ReLU with negative slope 0.2 after every layer except the last, and "up-convolution" =
unpooling by a factor of 2 followed by a convolution (Dosovitskiy et al., "Learning to
generate chairs", CVPR 2015).  The fc network (Table 7) and the conv network (Table 6)
follow the paper's description exactly in structure and their channel counts (256, 128,
64, 32 halving towards the image) are the common ones of that family of networks; the
kernel sizes and the channel counts of the HOG/LBP streams and of the SIFT network are our
reconstruction, chosen in the same spirit (5×5 then 3×3 strided convolutions with doubling
channels on the way down, 4×4 up-convolutions with halving channels on the way up).
:func:`Decoder.describe` prints the layer table that is actually built.

Design choices (apply to every decoder)
---------------------------------------
* **Up-convolution.**  Default ``upsample="deconv"``: ``ConvTranspose2d(k=4, s=2, p=1)``.
  A stride-2 transposed convolution is exactly "zero-unpooling" (each input value placed in
  one corner of a 2×2 block, zeros elsewhere) followed by a 4×4 convolution — this is what
  the Caffe "Deconvolution"/``uconv`` layer of the paper computes, and it doubles the size
  exactly.  ``upsample="nearest"`` (nearest-neighbour ×2 then a 3×3 convolution; fewer
  checkerboard artefacts) is offered as an option, not the paper's choice.
* **Output size.**  Every decoder up-convolves (×2 per layer) from the feature resolution
  until it reaches at least its ``output_size``, then crops (when the excess comes from
  rounding up odd sizes on the way down) or bilinearly resizes (``align_corners=False``,
  antialiased when shrinking) to exactly ``output_size``.  So feature resolutions that are
  not powers of two (AlexNet 6×6, 13×13, 27×27, HOG at 96 or 227 px …) and image sizes
  like 64, 96, 128, 227, 256 work.
* **fc decoders predict a smaller image** (§5.1: the fc networks predict a downsampled
  image, which is upsampled bilinearly for evaluation).  The rule is
  :func:`fc_output_size`: ``4·2^n`` with ``n = max(1, round(log2(image_size / 8)))``, i.e.
  the power-of-two multiple of 4 nearest to ``image_size / 2`` (256 → 128, 227 → 128,
  128 → 64, 96 → 64, 64 → 32).  All other kinds predict ``image_size`` directly.  Training
  targets for an fc decoder must be resized to ``decoder.output_size``; evaluation uses
  :func:`preimage.metrics.upsample_to`.
* **Output range.**  The last layer is linear (no activation, no clamp): the decoder
  predicts in the space of its training targets — in this project images ``(N, 3, s, s)``
  with values in ``[0, 1]``.  Clamp to ``[0, 1]`` only for display/evaluation.
* **Width.**  ``width`` multiplies every hidden channel count (and fc hidden size) of the
  paper's networks, rounded, with a floor of :data:`MIN_CHANNELS`; the 3 output channels
  are never scaled.  ``width=1.0`` is the paper's scale, ``width=0.125`` trains on a CPU.

Public API: :func:`build_decoder`, :func:`decoder_kind_for`, :func:`count_parameters`,
:func:`fc_output_size`, :func:`scale_channels`.
"""

from __future__ import annotations

import math
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DECODER_KINDS",
    "LEAKY_SLOPE",
    "MIN_CHANNELS",
    "Decoder",
    "TwoStreamDecoder",
    "SiftDecoder",
    "ConvDecoder",
    "FCDecoder",
    "build_decoder",
    "count_parameters",
    "decoder_kind_for",
    "fc_output_size",
    "scale_channels",
]

LEAKY_SLOPE = 0.2
MIN_CHANNELS = 8
DECODER_KINDS = ("two_stream", "sift", "conv", "fc")
UPSAMPLE_MODES = ("deconv", "nearest")

Size2 = Tuple[int, int]


# --------------------------------------------------------------------------- helpers


def scale_channels(channels: int, width: float, minimum: int = MIN_CHANNELS) -> int:
    """``round(channels · width)``, at least ``minimum``."""
    return max(int(minimum), int(round(channels * float(width))))


def fc_output_size(image_size: int) -> int:
    """Native output size of the fc decoder for images of ``image_size`` pixels.

    ``4·2^n`` with ``n = max(1, round(log2(image_size / 8)))`` — the power-of-two multiple
    of the 4×4 seed nearest to half the image size (paper §5.1: 128 px for 256-px images).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    n = max(1, int(round(math.log2(image_size / 8.0))))
    return 4 * 2**n


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works for modules on the ``meta`` device too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _act() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE)


def _conv_out(n: int, k: int, s: int) -> int:
    p = k // 2
    return (n + 2 * p - k) // s + 1


def _n_doublings(src: int, dst: int) -> int:
    """Smallest n ≥ 0 with src·2^n ≥ dst."""
    n = 0
    while src * 2**n < dst:
        n += 1
    return n


def _conv_plan(feature_size: int, output_size: int) -> Tuple[int, int]:
    """(number of ×2 up-convolutions n, start size s) for a conv decoder.

    The feature map (after the three convolutions) is resized bilinearly to
    ``s = ceil(output_size / 2^n)`` with the largest ``n`` that keeps ``s ≥ feature_size``, so the
    up-convolutions end at (or within rounding of) the output size instead of overshooting it by
    up to 2× per axis (27×27 conv1 → 64 px: 27→32→64, not 27→54→108→64).
    """
    n = 0
    while math.ceil(output_size / 2 ** (n + 1)) >= feature_size:
        n += 1
    return n, math.ceil(output_size / 2**n)


def _up_channels(start: int, n: int, width: float, floor: int = 32) -> List[int]:
    """Output channels of ``n`` up-convolutions: start, start/2, … (≥ floor), last = 3."""
    if n <= 0:
        return []
    hidden = [scale_channels(max(floor, start >> i), width) for i in range(n - 1)]
    return hidden + [3]


def _fit(x: torch.Tensor, size: Size2) -> torch.Tensor:
    """Make the spatial size of ``x`` exactly ``size``.

    Exact match: unchanged.  Larger by at most one pixel per axis (the ceil-rounding of a
    strided convolution undone by a ×2 up-convolution): crop the bottom/right.  Otherwise:
    bilinear resize (``align_corners=False``; antialiased when shrinking).
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if 0 <= h - size[0] <= 1 and 0 <= w - size[1] <= 1:
        return x[..., : size[0], : size[1]]
    shrink = h > size[0] and w > size[1]
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


class _Up(nn.Module):
    """×2 up-convolution (see module docstring for the two modes)."""

    def __init__(self, cin: int, cout: int, mode: str = "deconv") -> None:
        super().__init__()
        if mode == "deconv":
            self.op = nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)
            self.kernel = 4
        elif mode == "nearest":
            self.op = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1))
            self.kernel = 3
        else:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class _Table:
    """Collects the layer table (paper format: name, input, in-size, K, S, out-size)."""

    def __init__(self) -> None:
        self.rows: List[Tuple[str, str, str, str, str, str]] = []

    def add(self, name: str, inp: str, in_shape: Sequence[int], k, s, out_shape: Sequence[int]) -> None:
        fmt = lambda sh: "×".join(str(v) for v in sh)  # noqa: E731
        self.rows.append((name, inp, fmt(in_shape), str(k), str(s), fmt(out_shape)))

    def render(self) -> str:
        head = ("Layer", "Input", "InSize", "K", "S", "OutSize")
        rows = [head] + self.rows
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class _UpPath(nn.Module):
    """A chain of ×2 up-convolutions (leaky ReLU after all but the last)."""

    def __init__(self, cin: int, channels: Sequence[int], mode: str) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for i, cout in enumerate(channels):
            layers.append(_Up(cin, cout, mode))
            if i < len(channels) - 1:
                layers.append(_act())
            cin = cout
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _conv(cin: int, cout: int, k: int, s: int, act: bool = True) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)]
    if act:
        layers.append(_act())
    return nn.Sequential(*layers)


def _spatial(feature_shape: Sequence[int], kind: str) -> Tuple[int, int, int]:
    if len(feature_shape) != 3:
        raise ValueError(f"{kind} decoder needs a spatial feature shape (C, H, W), got {tuple(feature_shape)}")
    c, h, w = (int(v) for v in feature_shape)
    if min(c, h, w) < 1:
        raise ValueError(f"invalid feature shape {tuple(feature_shape)}")
    return c, h, w


# --------------------------------------------------------------------------- decoders


class Decoder(nn.Module):
    """Base class: maps ``(N, *feature_shape)`` to ``(N, 3, output_size, output_size)``.

    Attributes: ``kind``, ``feature_shape``, ``image_size`` (the evaluation image size),
    ``output_size`` (the size predicted natively; equals ``image_size`` except for fc),
    ``width``, ``upsample``.
    """

    kind: str = ""

    def __init__(self, feature_shape: Sequence[int], image_size: int, width: float, upsample: str) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self.image_size = int(image_size)
        self.output_size = int(image_size)
        self.width = float(width)
        self.upsample = upsample
        self._table = _Table()

    def describe(self) -> str:
        """The layer table as built (same columns as the paper's supplementary tables)."""
        return self._table.render()

    def _check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.feature_shape:
            raise ValueError(f"{type(self).__name__} expects (N, {self.feature_shape}), got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, feature_shape={self.feature_shape}, image_size={self.image_size}, "
            f"output_size={self.output_size}, width={self.width}, upsample={self.upsample!r}"
        )


class TwoStreamDecoder(Decoder):
    """HOG / LBP decoder (supplementary Tables 3 and 5).

    Layers at width 1 (``R`` = feature resolution, ``s`` = image size):

    * Stream A (compress): strided convolutions ``convA1`` 5×5/2 → 256, ``convA2`` 5×5/2 →
      512, ``convA3…`` 3×3/2 → 1024 until the map is ≤ 4×4 (at least one), then ×2
      up-convolutions back to ``R×R`` with channels 512, 256, 128 (last one 128).
    * Stream B (keep resolution): ``convB1`` 3×3/1 → 256, ``convB2`` 3×3/1 → 128.
    * Join J: concatenate A and B (256 channels at ``R×R``), then ×2 up-convolutions with
      128, 64, 32, … (floor 32) channels, the last one to 3 channels, until ≥ ``s``; crop /
      resize to ``s``.

    HOG at 256 px (31×32×32): A 32→16→8→4→8→16→32, B at 32, J 32→64→128→256.
    LBP at 256 px (58×16×16): A 16→8→4→8→16, B at 16, J 16→32→64→128→256.
    """

    kind = "two_stream"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        c, h, w = _spatial(feature_shape, "two_stream")
        ch = lambda n: scale_channels(n, width)  # noqa: E731
        t = self._table

        # Stream A: compress to ≤ 4×4.
        down: List[nn.Module] = []
        self._a_sizes: List[Size2] = [(h, w)]
        a_ch: List[int] = []
        cin, size, prev = c, (h, w), "input"
        i = 0
        while i == 0 or max(size) > 4:
            k = 5 if i < 2 else 3
            cout = ch(min(256 * 2**i, 1024))
            nsize = (_conv_out(size[0], k, 2), _conv_out(size[1], k, 2))
            down.append(_conv(cin, cout, k, 2))
            t.add(f"convA{i + 1}", prev, (*size, cin), k, 2, (*nsize, cout))
            prev, cin, size = f"convA{i + 1}", cout, nsize
            self._a_sizes.append(size)
            a_ch.append(cout)
            i += 1
        self.stream_a_down = nn.ModuleList(down)
        up_ch = list(reversed(a_ch[:-1])) + [ch(128)]
        ups: List[nn.Module] = []
        for j, cout in enumerate(up_ch):
            target = self._a_sizes[-2 - j]
            ups.append(nn.Sequential(_Up(cin, cout, upsample), _act()))
            t.add(f"uconvA{j + 1}", prev, (*size, cin), ups[-1][0].kernel, 2, (*target, cout))
            prev, cin, size = f"uconvA{j + 1}", cout, target
        self.stream_a_up = nn.ModuleList(ups)
        a_out = cin

        # Stream B: keep the feature resolution.
        b1, b2 = ch(256), ch(128)
        self.stream_b = nn.Sequential(_conv(c, b1, 3, 1), _conv(b1, b2, 3, 1))
        t.add("convB1", "input", (h, w, c), 3, 1, (h, w, b1))
        t.add("convB2", "convB1", (h, w, b1), 3, 1, (h, w, b2))

        # Join and up-convolve to the image.
        cj = a_out + b2
        t.add("join", f"{prev}+convB2", (h, w, cj), "-", "-", (h, w, cj))
        n_up = _n_doublings(min(h, w), self.output_size)
        chans = _up_channels(128, n_up, width)
        self.join = _build_tail(self, cj, chans, (h, w), "join", "uconvJ")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        a = x
        for layer in self.stream_a_down:
            a = layer(a)
        for j, layer in enumerate(self.stream_a_up):
            a = _fit(layer(a), self._a_sizes[-2 - j])
        b = self.stream_b(x)
        y = self.join(torch.cat([a, b], dim=1))
        return _fit(y, (self.output_size, self.output_size))


class SiftDecoder(Decoder):
    """Dense-SIFT decoder (supplementary Table 4; analogue, see module docstring).

    Layers at width 1: strided convolutions ``conv1`` 5×5/2 → 256, ``conv2`` 5×5/2 → 512,
    ``conv3…`` 3×3/2 → 1024 until the map is ≤ 8×8 (at least one), ``conv_mid`` 3×3/1 with
    the same channels, then ×2 up-convolutions with halving channels (512, 256, 128, 64,
    floor 32), the last one to 3 channels, until ≥ image size; crop / resize.

    At 256 px (133×64×64): 64→32→16→8, conv at 8×8×1024, 8→16→32→64→128→256.
    """

    kind = "sift"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        c, h, w = _spatial(feature_shape, "sift")
        t = self._table
        layers: List[nn.Module] = []
        cin, size, prev, i = c, (h, w), "input", 0
        top = 256
        while i == 0 or max(size) > 8:
            k = 5 if i < 2 else 3
            top = min(256 * 2**i, 1024)
            cout = scale_channels(top, width)
            nsize = (_conv_out(size[0], k, 2), _conv_out(size[1], k, 2))
            layers.append(_conv(cin, cout, k, 2))
            t.add(f"conv{i + 1}", prev, (*size, cin), k, 2, (*nsize, cout))
            prev, cin, size = f"conv{i + 1}", cout, nsize
            i += 1
        layers.append(_conv(cin, cin, 3, 1))
        t.add("conv_mid", prev, (*size, cin), 3, 1, (*size, cin))
        self.encoder = nn.Sequential(*layers)
        n_up = _n_doublings(min(size), self.output_size)
        chans = _up_channels(top // 2, n_up, width)
        self.tail = _build_tail(self, cin, chans, size, "conv_mid", "uconv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return _fit(self.tail(self.encoder(x)), (self.output_size, self.output_size))


class ConvDecoder(Decoder):
    """Decoder for spatial CNN features: AlexNet conv1…conv5 (supplementary Table 6) and any
    spatial torchvision node.

    Layers at width 1: ``conv1``, ``conv2``, ``conv3`` 3×3/1 → 256 channels each at the
    feature resolution, a bilinear resize to the start size of :func:`_conv_plan`, then ×2
    up-convolutions with 256, 128, 64, 32 (floor 32) channels, the last one to 3 channels.

    AlexNet conv5 (256×6×6) at 256 px: resize 6→8, then 8→16→32→64→128→256 (five
    up-convolutions, as in the paper); conv1 (27×27) at 256 px: 27→32→…→256 (three).
    """

    kind = "conv"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        c, h, w = _spatial(feature_shape, "conv")
        t = self._table
        cc = scale_channels(256, width)
        self.convs = nn.Sequential(_conv(c, cc, 3, 1), _conv(cc, cc, 3, 1), _conv(cc, cc, 3, 1))
        t.add("conv1", "input", (h, w, c), 3, 1, (h, w, cc))
        t.add("conv2", "conv1", (h, w, cc), 3, 1, (h, w, cc))
        t.add("conv3", "conv2", (h, w, cc), 3, 1, (h, w, cc))
        n_up, start = _conv_plan(min(h, w), self.output_size)
        self.start_size = start
        if (h, w) != (start, start):
            t.add("resize", "conv3", (h, w, cc), "-", "-", (start, start, cc))
        chans = _up_channels(256, n_up, width)
        self.tail = _build_tail(self, cc, chans, (start, start), "conv3", "uconv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        z = self.convs(x)
        if z.shape[-2:] != (self.start_size, self.start_size):
            z = F.interpolate(z, size=(self.start_size, self.start_size), mode="bilinear", align_corners=False)
        return _fit(self.tail(z), (self.output_size, self.output_size))


class FCDecoder(Decoder):
    """Decoder for vector features: AlexNet fc6, fc7, fc8 (supplementary Table 7).

    Layers at width 1: ``fc1`` D → 4096, ``fc2`` 4096 → 4096, ``fc3`` 4096 → 4096,
    reshape to 256×4×4, then ×2 up-convolutions ``uconv1`` → 256, ``uconv2`` → 128,
    ``uconv3`` → 64, ``uconv4`` → 32, ``uconv5`` → 3 (4→8→16→32→64→128).  The native
    output size is :func:`fc_output_size` (128 for 256-px images, §5.1); evaluation
    upsamples bilinearly to ``image_size``.  Any input shape is flattened.
    """

    kind = "fc"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv", output_size: Optional[int] = None) -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        d = int(math.prod(self.feature_shape))
        if d < 1:
            raise ValueError(f"invalid feature shape {self.feature_shape}")
        self.output_size = int(output_size) if output_size is not None else fc_output_size(self.image_size)
        t = self._table
        hid = scale_channels(4096, width)
        self.seed_channels = scale_channels(256, width)
        seed = 16 * self.seed_channels
        self.fcs = nn.Sequential(
            nn.Linear(d, hid), _act(), nn.Linear(hid, hid), _act(), nn.Linear(hid, seed), _act()
        )
        t.add("fc1", "input", (d,), "-", "-", (hid,))
        t.add("fc2", "fc1", (hid,), "-", "-", (hid,))
        t.add("fc3", "fc2", (hid,), "-", "-", (seed,))
        t.add("reshape", "fc3", (seed,), "-", "-", (4, 4, self.seed_channels))
        n_up = _n_doublings(4, self.output_size)
        chans = _up_channels(256, n_up, width)
        self.tail = _build_tail(self, self.seed_channels, chans, (4, 4), "reshape", "uconv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        z = self.fcs(x.reshape(x.shape[0], -1)).reshape(x.shape[0], self.seed_channels, 4, 4)
        return _fit(self.tail(z), (self.output_size, self.output_size))


def _build_tail(dec: Decoder, cin: int, chans: List[int], size: Size2, prev: str, prefix: str) -> nn.Module:
    """Up-convolution chain to 3 channels (or a 3×3 conv when no upsampling is needed)."""
    t = dec._table
    if not chans:  # feature map already at least as large as the output
        t.add(f"{prefix}_out", prev, (*size, cin), 3, 1, (*size, 3))
        return nn.Conv2d(cin, 3, 3, padding=1)
    path = _UpPath(cin, chans, dec.upsample)
    k = 4 if dec.upsample == "deconv" else 3
    for j, cout in enumerate(chans):
        nsize = (size[0] * 2, size[1] * 2)
        t.add(f"{prefix}{j + 1}", prev, (*size, cin), k, 2, (*nsize, cout))
        prev, cin, size = f"{prefix}{j + 1}", cout, nsize
    if size != (dec.output_size, dec.output_size):
        t.add("resize", prev, (*size, 3), "-", "-", (dec.output_size, dec.output_size, 3))
    return path


# --------------------------------------------------------------------------- factory

_BUILDERS = {"two_stream": TwoStreamDecoder, "sift": SiftDecoder, "conv": ConvDecoder, "fc": FCDecoder}


def build_decoder(kind: str, feature_shape: Sequence[int], image_size: int, width: float = 1.0, **kwargs) -> Decoder:
    """Build the decoder ``kind`` ∈ {"two_stream", "sift", "conv", "fc"}.

    ``feature_shape`` is the per-image feature shape, ``(C, H, W)`` or ``(D,)``;
    ``image_size`` the side of the (square) training/evaluation images.  Keyword options:
    ``upsample`` ("deconv" — default, the paper's — or "nearest"), and for ``fc`` an
    explicit ``output_size``.  The result maps ``(N, *feature_shape)`` to
    ``(N, 3, d.output_size, d.output_size)``.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown decoder kind {kind!r}; expected one of {DECODER_KINDS}")
    if int(image_size) < 2:
        raise ValueError(f"image_size must be ≥ 2, got {image_size}")
    if kind != "fc" and "output_size" in kwargs:
        raise TypeError("output_size is only configurable for the fc decoder")
    return _BUILDERS[kind](tuple(feature_shape), int(image_size), width=width, **kwargs)


_FC_TOKENS = re.compile(r"^(fc\d*|prob|softmax|logits?|classifier.*|avgpool|flatten|head|pre_logits|pool)$")
_CONV_TOKENS = re.compile(r"^(conv\d*|pool\d+|norm\d+|relu\d+|features.*|layer\d*.*|stage\d*.*|block\d*.*|mixed.*)$")


def decoder_kind_for(representation_name: str, feature_shape: Optional[Sequence[int]] = None) -> str:
    """Decoder kind for a representation name (suffixes after ``-`` / ``_`` ignored).

    ``hog*``, ``lbp*`` → "two_stream"; ``sift*`` / ``dsift*`` → "sift"; ``conv1``…``conv5``
    (also ``pool*``, ``norm*``) and spatial graph nodes (``torchvision:<model>:<node>``,
    ``efficientnet_lite0:<node>``) → "conv"; ``fc6``…``fc8``, ``prob`` and vector nodes → "fc".
    Examples: ``fc6-random`` → fc, ``torchvision:resnet18:layer4`` → conv,
    ``torchvision:resnet18:fc`` → fc, ``efficientnet_lite0:stages.3`` → conv.

    When ``feature_shape`` is given it decides for CNN names and every ``<family>:<node>`` name:
    a vector (``(D,)`` or ``(C, 1, 1)``) → "fc", a map → "conv".  Without a shape, graph node
    names are judged by their last part (``fc``, ``classifier``, ``avgpool``, ``pool`` … → fc).
    Unknown names without a shape raise ``ValueError``.
    """
    name = representation_name.strip().lower()
    if not name:
        raise ValueError("empty representation name")
    is_vector = None
    if feature_shape is not None:
        fs = tuple(int(v) for v in feature_shape)
        is_vector = len(fs) == 1 or (len(fs) == 3 and fs[1] * fs[2] == 1)

    if ":" in name:  # <family>:<node> or torchvision:<model>:<node>: a graph node
        if is_vector is not None:
            return "fc" if is_vector else "conv"
        node = name.split(":")[-1]
        last = node.split(".")[0] if node.split(".")[0] in ("classifier", "head", "heads", "fc") else node
        leaf = node.split(".")[-1]
        if _FC_TOKENS.match(last) or _FC_TOKENS.match(node) or leaf in ("avgpool", "pool", "flatten", "fc", "logits"):
            return "fc"
        return "conv"

    base = re.split(r"[-_:/\s]", name, maxsplit=1)[0]
    if base.startswith(("hog", "lbp")):
        return "two_stream"
    if base in ("sift", "dsift", "densesift") or base.startswith("sift"):
        return "sift"
    if re.fullmatch(r"fc\d*|prob|softmax|logits?", base):
        return "fc"
    if _CONV_TOKENS.match(base):
        return "conv"
    if is_vector is not None:
        return "fc" if is_vector else "conv"
    raise ValueError(f"cannot infer a decoder kind for representation {representation_name!r}")

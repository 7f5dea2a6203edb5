"""Up-convolutional decoders that invert a feature representation (paper §3, supplementary Tables 3-7).

Dosovitskiy & Brox, "Inverting Visual Representations with Convolutional Networks", CVPR 2016,
train one decoder network per representation Φ to minimise ``Σ_i ‖x_i − f(Φ(x_i), w)‖²`` (§3,
eq. 2).  This module builds those networks.

What is the paper's
-------------------
* **The layer tables.**  At ``width=1.0`` and the paper's feature sizes the networks built here are,
  row for row (name, input, kernel K, stride S, output size and channels), the supplementary tables:

  - Table 3, HOG 32×32×31 (256-px image, 8-px cells): stream A ``convA1`` 5/2 → 256,
    ``convA2`` 5/2 → 512, ``convA3`` 3/2 → 1024 (4×4), ``upconvA1-3`` 4/2 → 512, 256, 128;
    stream B ``convB1`` 5/1 → 128, ``convB2`` 3/1 → 128; join ``convJ1`` on {upconvA3, convB2}
    (256 channels) 3/1 → 256, ``convJ2`` 3/1 → 128, ``upconvJ4-6`` 4/2 → 64, 32, 3 (256×256).
  - Table 5, LBP 16×16×58 (16-px cells): the same two streams, but ``convA3`` has stride 1 (the
    map is already 4×4), two up-convolutions in A (512, 256), so ``convJ1`` sees 384 channels, and
    four join up-convolutions ``upconvJ3-6`` → 128, 64, 32, 3.
  - Table 4, SIFT 64×64×133 (4-px cells): ``conv1`` 5/2 → 256, ``conv2-4`` 3/2 → 512, 1024, 2048
    (4×4), ``conv5`` 3/1 → 2048, ``conv6`` 3/1 → 1024, ``upconv1-6`` 4/2 → 512, 256, 128, 64, 32, 3.
  - Table 6, AlexNet conv5 6×6×256: ``conv1-3`` 3/1 → 256, ``upconv1-5`` 5/2 → 256, 128, 64, 32, 3
    (192×192).
  - Table 7, AlexNet fc8 (1000): ``fc1-3`` → 4096, ``reshape`` to 4×4×256, ``upconv1-5`` 5/2 →
    256, 128, 64, 32, 3 (128×128; §5.1: the fc networks predict a downsampled image).

  :attr:`Decoder.layers` holds the built network's rows as data (the feature input is called
  ``"input"``), :meth:`Decoder.describe` prints them (with ``pad``/``crop`` rows where the sizes
  below need them); the module names in the state dict are the tables' layer names.
* **Leaky ReLU** with negative slope 0.2 after every layer except the last (supplementary
  material); the last layer is linear, so the decoder predicts in the space of its targets (here
  images in [0, 1]; clamp only for display/evaluation).
* **Up-convolution** (§3): upsampling ×2 by placing each value in the top-left of a 2×2 block of
  zeros, followed by a convolution.  The tables' ``upconv`` with K=4, S=2 is
  ``ConvTranspose2d(k=4, s=2, p=1)``: exactly that unpooling followed by a 4×4 convolution (padded
  2 at the top/left, 1 at the bottom/right), doubling the size.  The K=5, S=2 up-convolutions of
  Tables 6 and 7 are ``ConvTranspose2d(k=5, s=2, p=2, output_padding=1)``: zero-unpooling followed
  by a 5×5 convolution, up to the kernel's alignment on the 2×2 blocks (here: centred, padding 2
  on every side), with the size exactly doubled.  Both identities are checked in the tests.
* **Strided convolutions** use padding ``K // 2`` (the tables' sizes: 32 → 16 with K=5, S=2;
  8 → 4 with K=3, S=2); stride-1 convolutions keep the size.

What is derived (ours)
----------------------
* **Other feature/image sizes for HOG, LBP, SIFT** (kinds ``"two_stream"`` and ``"sift"``).  With
  ``R`` the feature side (the larger of H, W) and ``s = image_size``:

  - ``n_up = max(1, round(log2(s / R)))`` is the cell size as a power of two — the number of
    join up-convolutions (two-stream) resp. the net upscaling (SIFT): HOG 3, LBP 4, SIFT 2 at the
    paper's sizes;
  - ``n_down = max(1, round(log2(R / 4)))`` strided convolutions compress to the tables' 4×4
    bottleneck (HOG 3, LBP 2, SIFT 4).  The tables' convolutions are kept with their kernels
    and channels; the first ``n_down`` of them have stride 2, the others stride 1 (Table 5's
    ``convA3`` is exactly such a stride-1 case of Table 3's layer).  When ``n_down`` exceeds the
    table's strided layers, extra 3×3 stride-2 convolutions with the deepest width are inserted;
  - two-stream: stream A has ``n_down`` up-convolutions with 512, 256, 128, … channels (floor
    32) back to ``R``; the join has ``n_up`` up-convolutions with the tables' channels counted from
    the end (…, 128, 64, 32, 3; more than four keep 128), numbered as in the tables so that the
    last is ``upconvJ6`` (``upconvJ3``, ``upconvJ4``, … when there are more than four);
  - SIFT: ``n_down + n_up`` up-convolutions with channels counted from the end (…, 512, 256, 128,
    64, 32, 3; doubling up to 1024 beyond six);
  - **padding/cropping**: the features are zero-padded at the bottom/right to the side
    ``R'`` = the smallest multiple of ``2^n_down`` with ``R' ≥ R`` and ``R'·2^n_up ≥ s``, the
    network predicts ``R'·2^n_up`` pixels and the output is cropped at the bottom/right to ``s``.
    Feature cell ``i`` thus stays aligned with pixels ``[i·c, (i+1)·c)`` for a power-of-two cell
    size ``c = 2^n_up`` (HOG of a 227-px image, 28×28 cells of 8 px: padded to 32, 256 px
    predicted, cropped to 227).  At the paper's sizes nothing is padded or cropped.
  ``output_size`` is always ``image_size`` for these kinds.
* **AlexNet conv1-conv4 and other spatial CNN features** (kind ``"conv"``).  The paper only
  says "three convolutional and several up-convolutional layers, the number depending on the
  layer".  We use Table 6's pattern for every layer: three 3×3 stride-1 convolutions with 256
  channels (Table 6's width, whatever the input channels: 64/192/384/256 for torchvision's
  AlexNet, 96/256/384/384 for CaffeNet), then ``n = max(1, round(log2(s / F)))`` K=5, S=2
  up-convolutions whose channels are the last ``n`` entries of Table 6's 256, 128, 64, 32, 3
  (more than five: leading 256s).  ``F`` is the feature side (a non-square map is zero-padded at
  the bottom/right to ``F×F``) and ``s = image_size`` the side of the target image (for AlexNet
  the 227-px crop it sees).  There is no resize inside the network: the native
  ``output_size = F·2^n`` (conv5 at 227: 6·2^5 = 192 as Table 6; conv1 27×27 → 216; conv2-4
  13×13 → 208).  Training targets are resized to ``output_size`` (``train.to_targets``) and
  predictions upsampled bilinearly to ``image_size`` for evaluation
  (:class:`preimage.decoding.TrainedDecoder` via :func:`preimage.metrics.upsample_to`).
* **fc output size** (kind ``"fc"``, also fc6/fc7 and any vector feature; input is flattened):
  :func:`fc_output_size` ``= 4·2^n`` with ``n = max(1, round(log2(image_size / 8)))``, the
  power-of-two multiple of the 4×4 seed nearest to half the image (256 → 128 and 227 → 128 as in
  the paper; 128 → 64, 96 → 64, 64 → 32).  Smaller outputs use fewer up-convolutions, the last
  ``n`` of Table 7's (64 px: 4×4×256 → 64, 32, 3 at 32 px).  An explicit ``output_size``
  (``4·2^n``) may be given.
* **Token sequences** (kind ``"tokens"``, vision transformers, which the paper predates): the
  ``g²`` patch tokens ``(T, D)`` are laid back on their ``g × g`` grid as a ``D``-channel map;
  a class token (``T = 1 + g²``) passes a linear layer ``cls_fc`` (D → 256, Table 6's width)
  and is broadcast over the grid as extra channels; then the ``"conv"`` decoder above
  (:class:`TokenDecoder`).
* **Width.**  ``width`` multiplies every hidden channel count and fc size of the same topology
  (:func:`scale_channels`: rounded, at least :data:`MIN_CHANNELS`); the input and the 3 output
  channels are never scaled.  ``width=1.0`` is the paper's scale; the embedded default uses 0.25
  with 64-px images (HOG/LBP with 4-px cells: 16×16 features, streams A and B as in Table 5,
  then ``upconvJ5-6``; SIFT 16×16×133: ``conv1-2`` strided, ``conv3-6`` at 4×4,
  ``upconv1-4``).
* ``upsample="nearest"`` (not the paper's): each up-convolution becomes nearest-neighbour ×2
  upsampling followed by a stride-1 convolution with kernel K (K−1 when K is even, 3 for the
  tables' 4), which avoids checkerboard artefacts.  The default ``"deconv"`` is the paper's.

Public API: :func:`build_decoder`, :func:`count_parameters`,
:func:`fc_output_size`, :func:`scale_channels`, :func:`token_grid`; :class:`Decoder` (``kind``, ``feature_shape``,
``image_size``, ``output_size``, ``width``, ``upsample``, ``layers``, ``describe()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DECODER_KINDS",
    "LEAKY_SLOPE",
    "MIN_CHANNELS",
    "Decoder",
    "Layer",
    "TwoStreamDecoder",
    "SiftDecoder",
    "ConvDecoder",
    "FCDecoder",
    "TokenDecoder",
    "build_decoder",
    "count_parameters",
    "fc_output_size",
    "scale_channels",
    "token_grid",
]

LEAKY_SLOPE = 0.2
MIN_CHANNELS = 8
DECODER_KINDS = ("two_stream", "sift", "conv", "fc", "tokens")
UPSAMPLE_MODES = ("deconv", "nearest")
BOTTLENECK = 4  # spatial side the HOG/LBP stream A and the SIFT encoder compress to (Tables 3-5)

# Channel counts transcribed from the tables (width 1).
_TWO_STREAM_A = [(5, 256), (5, 512), (3, 1024)]  # convA1-3 (K, channels), Tables 3 and 5
_TWO_STREAM_A_UP = 512  # upconvA1; halved per layer (Table 3: 512, 256, 128)
_TWO_STREAM_B = [(5, 128), (3, 128)]  # convB1-2
_TWO_STREAM_J = [(3, 256), (3, 128)]  # convJ1-2
_TWO_STREAM_J_UP = [128, 64, 32, 3]  # upconvJ3-6 (Table 5; Table 3 has J4-6)
_SIFT_DOWN = [(5, 256), (3, 512), (3, 1024), (3, 2048)]  # conv1-4, Table 4
_SIFT_MID = [(3, 2048), (3, 1024)]  # conv5-6
_SIFT_UP = [512, 256, 128, 64, 32, 3]  # upconv1-6
_CONV_CONVS = [(3, 256)] * 3  # conv1-3, Table 6
_CONV_UP = [256, 128, 64, 32, 3]  # upconv1-5, Tables 6 and 7
_FC_HIDDEN = 4096  # fc1-3, Table 7
_FC_SEED = (4, 256)  # reshape to 4×4×256


# --------------------------------------------------------------------------- helpers


def scale_channels(channels: int, width: float, minimum: int = MIN_CHANNELS) -> int:
    """``round(channels · width)``, at least ``minimum``."""
    return max(int(minimum), int(round(channels * float(width))))


def fc_output_size(image_size: int) -> int:
    """Native output size of the fc decoder for images of ``image_size`` pixels.

    ``4·2^n`` with ``n = max(1, round(log2(image_size / 8)))`` — the power-of-two multiple
    of the 4×4 seed nearest to half the image size (Table 7 and §5.1: 128 px for 256-px images).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    n = max(1, int(round(math.log2(image_size / 8.0))))
    return 4 * 2**n


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works for modules on the ``meta`` device too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _log2_round(x: float) -> int:
    return int(round(math.log2(x)))


def _last(channels: Sequence[int], n: int, pad_value: int) -> List[int]:
    """The last ``n`` entries of ``channels``, preceded by ``pad_value`` when ``n`` is larger."""
    if n <= len(channels):
        return list(channels[len(channels) - n:])
    return [pad_value] * (n - len(channels)) + list(channels)


@dataclass(frozen=True)
class Layer:
    """One row of a layer table (the supplementary tables' columns).

    ``in_shape``/``out_shape`` are ``(H, W, C)`` for maps and ``(D,)`` for vectors, as printed in
    the paper; ``kernel``/``stride`` are ``None`` for fully connected and reshape rows; ``inputs``
    names the rows (or ``"input"``) whose outputs are concatenated along channels ("J").
    """

    name: str
    inputs: Tuple[str, ...]
    in_shape: Tuple[int, ...]
    kernel: Optional[int]
    stride: Optional[int]
    out_shape: Tuple[int, ...]

    def row(self) -> Tuple[str, str, str, str, str, str]:
        fmt = lambda sh: "×".join(str(v) for v in sh)  # noqa: E731
        inp = self.inputs[0] if len(self.inputs) == 1 else "{" + ", ".join(self.inputs) + "}"
        dash = lambda v: "—" if v is None else str(v)  # noqa: E731
        return (self.name, inp, fmt(self.in_shape), dash(self.kernel), dash(self.stride), fmt(self.out_shape))


def _render(rows: Sequence[Tuple[str, ...]]) -> str:
    head = ("Layer", "Input", "InSize", "K", "S", "OutSize")
    rows = [head] + list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _spatial(feature_shape: Sequence[int], kind: str) -> Tuple[int, int, int]:
    if len(feature_shape) != 3:
        raise ValueError(f"{kind} decoder needs a spatial feature shape (C, H, W), got {tuple(feature_shape)}")
    c, h, w = (int(v) for v in feature_shape)
    if min(c, h, w) < 1:
        raise ValueError(f"invalid feature shape {tuple(feature_shape)}")
    return c, h, w


class _Reshape(nn.Module):
    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.shape = (channels, side, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


# --------------------------------------------------------------------------- decoders


class Decoder(nn.Module):
    """A layer graph built from table rows: maps ``(N, *feature_shape)`` to
    ``(N, 3, output_size, output_size)``.

    Attributes: ``kind``, ``feature_shape``, ``image_size`` (the evaluation image size),
    ``output_size`` (the size predicted natively), ``width``, ``upsample``, ``layers`` (the
    :class:`Layer` rows, in order), ``pad`` (bottom/right zero padding of the features, (H, W))
    and ``blocks`` (the modules, keyed by the rows' names; each an ``nn.Sequential`` of the layer
    and its leaky ReLU, without the activation for the last layer).
    """

    kind: str = ""

    def __init__(self, feature_shape: Sequence[int], image_size: int, width: float, upsample: str) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self.image_size = int(image_size)
        self.output_size = int(image_size)
        self.width = float(width)
        self.upsample = upsample
        self.pad: Tuple[int, int] = (0, 0)
        self.layers: List[Layer] = []
        self.blocks = nn.ModuleDict()
        self._shapes: Dict[str, Tuple[int, ...]] = {}

    # ---- construction helpers

    def _ch(self, channels: int) -> int:
        """Hidden channel count at this width (the 3 image channels are never scaled)."""
        return channels if channels == 3 else scale_channels(channels, self.width)

    def _add(self, name: str, inputs: Sequence[str], op: str, cout: int, k: Optional[int] = None,
             s: Optional[int] = None) -> str:
        """Append a row: ``op`` ∈ {"conv", "upconv", "fc", "reshape"}; returns ``name``."""
        inputs = tuple(inputs)
        shapes = [self._shapes[i] for i in inputs]
        if op == "fc":
            (din,) = shapes[0]
            module: nn.Module = nn.Linear(din, cout)
            in_shape, out_shape = (din,), (cout,)
        elif op == "reshape":
            (din,) = shapes[0]
            side = int(round(math.sqrt(din // cout)))
            assert side * side * cout == din
            module, in_shape, out_shape = _Reshape(cout, side), (din,), (side, side, cout)
        else:
            h, w = shapes[0][:2]
            if any(sh[:2] != (h, w) for sh in shapes):
                raise AssertionError(f"{name}: inputs of different sizes {shapes}")
            cin = sum(sh[2] for sh in shapes)
            in_shape = (h, w, cin)
            if op == "conv":
                module = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)
                out_shape = ((h + s - 1) // s, (w + s - 1) // s, cout)
            elif op == "upconv":
                if self.upsample == "deconv":
                    module = nn.ConvTranspose2d(cin, cout, k, stride=2, padding=(k - 1) // 2, output_padding=k % 2)
                else:
                    kk = k if k % 2 else k - 1
                    module = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                           nn.Conv2d(cin, cout, kk, padding=kk // 2))
                    k = kk
                out_shape = (2 * h, 2 * w, cout)
                s = 2
            else:
                raise ValueError(op)
        if op != "reshape":
            module = nn.Sequential(module, nn.LeakyReLU(LEAKY_SLOPE))
        self.blocks[name] = module
        self._shapes[name] = out_shape
        self.layers.append(Layer(name, inputs, in_shape, k, s, out_shape))
        return name

    def _finish(self) -> None:
        """Drop the activation after the last layer; plan when intermediate outputs can be freed."""
        last = self.layers[-1].name
        block = self.blocks[last]
        assert isinstance(block, nn.Sequential) and isinstance(block[-1], nn.LeakyReLU)
        self.blocks[last] = nn.Sequential(block[0])
        last_use: Dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            for name in layer.inputs:
                last_use[name] = i
        self._free = [[n for n in layer.inputs if last_use[n] == i] for i, layer in enumerate(self.layers)]
        out = self.layers[-1].out_shape
        if out[-1] != 3 or out[0] < self.output_size:
            raise AssertionError(f"{type(self).__name__}: last layer gives {out}, output_size {self.output_size}")

    def _pad_input(self, channels: int, h: int, w: int, side: int) -> None:
        self.pad = (side - h, side - w)
        self._shapes["input"] = (side, side, channels)

    def _plan_shallow(self) -> Tuple[int, int]:
        """``(n_down, n_up)`` of a HOG/LBP/SIFT decoder (:func:`_shallow_plan`), the input padded
        to the planned side."""
        c, h, w = _spatial(self.feature_shape, self.kind)
        n_down, n_up, side = _shallow_plan(h, w, self.image_size)
        self._pad_input(c, h, w, side)
        return n_down, n_up

    def _compress(self, prefix: str, table: Sequence[Tuple[int, int]], n_down: int,
                  after: Sequence[Tuple[int, int]] = ()) -> str:
        """The convolutions ``{prefix}1``, ``{prefix}2`` … of ``table`` ((K, channels) rows) from the
        input, the first ``n_down`` with stride 2 (down to the 4×4 bottleneck; the deepest row is
        repeated when the table has fewer), then the stride-1 rows ``after``. Returns the last name."""
        rows = list(table) + [table[-1]] * max(0, n_down - len(table)) + list(after)
        prev = "input"
        for i, (k, ch) in enumerate(rows):
            prev = self._add(f"{prefix}{i + 1}", [prev], "conv", self._ch(ch), k, 2 if i < n_down else 1)
        return prev

    # ---- use

    def describe(self) -> str:
        """The layer table as built (the supplementary tables' columns), with padding/cropping rows."""
        rows = [layer.row() for layer in self.layers]
        if any(self.pad):
            c, h, w = self.feature_shape
            side = self._shapes["input"][0]
            rows.insert(0, ("pad", "input", f"{h}×{w}×{c}", "—", "—", f"{side}×{side}×{c}"))
        out = self.layers[-1].out_shape
        if out[0] != self.output_size:
            rows.append(("crop", self.layers[-1].name, "×".join(map(str, out)), "—", "—",
                         f"{self.output_size}×{self.output_size}×3"))
        return _render(rows)

    def _check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.feature_shape:
            raise ValueError(f"{type(self).__name__} expects (N, {self.feature_shape}), got {tuple(x.shape)}")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, (0, self.pad[1], 0, self.pad[0]))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        outputs = {"input": self._prepare(x)}
        for layer, free in zip(self.layers, self._free):
            xs = [outputs[n] for n in layer.inputs]
            y = self.blocks[layer.name](xs[0] if len(xs) == 1 else torch.cat(xs, dim=1))
            for n in free:
                del outputs[n]
            outputs[layer.name] = y
        y = outputs[self.layers[-1].name]
        s = self.output_size
        y = y if y.shape[-1] == s and y.shape[-2] == s else y[..., :s, :s]
        return y + self.offset if self.residual else y

    # ---- the mean-image offset (ours; the paper's networks predict the image itself)

    @property
    def residual(self) -> bool:
        """Whether the network predicts the difference from a fixed image (:meth:`start_from`)."""
        return "offset" in self._buffers

    def start_from(self, image: Optional[torch.Tensor] = None) -> "Decoder":
        """Predict the difference from ``image`` (3, output_size, output_size), a fixed buffer saved
        with the weights, and zero the last layer, so that training starts from ``image`` itself.

        Given the mean training image, an untrained decoder already scores the mean-image reference
        row, and a decoder kept at its best validation loss can do no worse than it on held-out
        images: what a few hundred training images cannot teach is not unlearnt into noise. Adding a
        constant leaves the layer table (supplementary Tables 3-7) as it is. ``image=None`` only
        registers the buffer (zeros), for loading saved weights.
        """
        shape = (3, self.output_size, self.output_size)
        offset = torch.zeros(shape) if image is None else image.detach().float().reshape(shape).cpu()
        device = next(self.parameters()).device
        self.register_buffer("offset", offset.to(device))
        if image is not None:
            last = self.blocks[self.layers[-1].name][0]
            convs = [m for m in last.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
            with torch.no_grad():
                for module in convs[-1:]:
                    module.weight.zero_()
                    module.bias.zero_()
        return self

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, feature_shape={self.feature_shape}, image_size={self.image_size}, "
            f"output_size={self.output_size}, width={self.width}, upsample={self.upsample!r}"
        )


def _shallow_plan(h: int, w: int, image_size: int) -> Tuple[int, int, int]:
    """``(n_down, n_up, padded side)`` for HOG/LBP/SIFT features of ``h×w`` (module docstring)."""
    r = max(h, w)
    n_up = max(1, _log2_round(image_size / r))
    n_down = max(1, _log2_round(r / BOTTLENECK))
    step = 2**n_down
    need = max(r, -(-image_size // 2**n_up))
    side = -(-need // step) * step
    return n_down, n_up, side


class TwoStreamDecoder(Decoder):
    """HOG / LBP decoder (supplementary Tables 3 and 5; other sizes: module docstring).

    Stream A: ``convA1`` 5×5 → 256, ``convA2`` 5×5 → 512, ``convA3`` 3×3 → 1024 (the first
    ``n_down`` strided, compressing to 4×4), then ``n_down`` up-convolutions 4×4/2 with 512,
    256, 128, … channels.  Stream B: ``convB1`` 5×5/1 → 128, ``convB2`` 3×3/1 → 128.  Join:
    ``convJ1`` on {A, B} 3×3/1 → 256, ``convJ2`` → 128, then ``n_up`` up-convolutions ending
    with …, 128, 64, 32, 3 (``upconvJ6``).
    HOG at 256 px (32×32×31): A 32→16→8→4→8→16→32, J 32→64→128→256 (Table 3).
    LBP at 256 px (16×16×58): A 16→8→4→4→8→16, J 16→32→64→128→256 (Table 5).
    """

    kind = "two_stream"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        n_down, n_up = self._plan_shallow()
        prev = self._compress("convA", _TWO_STREAM_A, n_down)
        for j in range(n_down):
            ch = max(32, _TWO_STREAM_A_UP >> j)
            prev = self._add(f"upconvA{j + 1}", [prev], "upconv", self._ch(ch), 4)
        a_out = prev

        prev = [a_out, self._compress("convB", _TWO_STREAM_B, 0)]
        for i, (k, ch) in enumerate(_TWO_STREAM_J):
            prev = [self._add(f"convJ{i + 1}", prev, "conv", self._ch(ch), k, 1)]
        first = 3 + len(_TWO_STREAM_J_UP) - n_up if n_up <= len(_TWO_STREAM_J_UP) else 3
        for j, ch in enumerate(_last(_TWO_STREAM_J_UP, n_up, _TWO_STREAM_J_UP[0])):
            prev = [self._add(f"upconvJ{first + j}", prev, "upconv", self._ch(ch), 4)]
        self._finish()


class SiftDecoder(Decoder):
    """Dense-SIFT decoder (supplementary Table 4; other sizes: module docstring).

    ``conv1`` 5×5 → 256, ``conv2-4`` 3×3 → 512, 1024, 2048 (the first ``n_down`` strided,
    compressing to 4×4), ``conv5`` 3×3/1 → 2048, ``conv6`` 3×3/1 → 1024, then ``n_down + n_up``
    up-convolutions 4×4/2 ending with …, 512, 256, 128, 64, 32, 3.
    At 256 px (64×64×133): 64→32→16→8→4, 4→8→…→256 (Table 4).
    """

    kind = "sift"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        n_down, n_up = self._plan_shallow()
        prev = self._compress("conv", _SIFT_DOWN, n_down, after=_SIFT_MID)
        n = n_down + n_up
        ups = _last(_SIFT_UP, n, 0)
        ups = [u or min(1024, _SIFT_UP[0] << (n - len(_SIFT_UP) - j)) for j, u in enumerate(ups)]
        for j, ch in enumerate(ups):
            prev = self._add(f"upconv{j + 1}", [prev], "upconv", self._ch(ch), 4)
        self._finish()


class ConvDecoder(Decoder):
    """Decoder for spatial CNN features: AlexNet conv1…conv5 (supplementary Table 6) and any
    spatial torchvision node (derived parts: module docstring).

    ``conv1-3`` 3×3/1 → 256 at the feature resolution ``F``, then ``n`` up-convolutions 5×5/2
    with the last ``n`` of 256, 128, 64, 32, 3; ``output_size = F·2^n``,
    ``n = max(1, round(log2(image_size / F)))``.  conv5 (6×6×256) at 227: 6→…→192 (Table 6).
    """

    kind = "conv"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        self._conv_body(*_spatial(feature_shape, "conv"))

    def _conv_body(self, c: int, h: int, w: int) -> None:
        """Table 6's pattern on a ``c × h × w`` map: three convolutions, then the up-convolutions."""
        side = max(h, w)
        self._pad_input(c, h, w, side)
        n = max(1, _log2_round(self.image_size / side))
        self.output_size = side * 2**n
        prev = "input"
        for i, (k, ch) in enumerate(_CONV_CONVS):
            prev = self._add(f"conv{i + 1}", [prev], "conv", self._ch(ch), k, 1)
        for j, ch in enumerate(_last(_CONV_UP, n, _CONV_UP[0])):
            prev = self._add(f"upconv{j + 1}", [prev], "upconv", self._ch(ch), 5)
        self._finish()


def token_grid(feature_shape: Sequence[int]) -> Tuple[int, int, int]:
    """``(global tokens, grid side g, dim D)`` of token features ``(T, D)``: ``T = g²`` patch tokens,
    optionally preceded by one global (class) token (``T = 1 + g²``, torchvision's ViT). Any
    other token count is a ValueError: there is no square grid to put the tokens on."""
    if len(feature_shape) != 2:
        raise ValueError(f"tokens decoder needs token features (T, D), got {tuple(feature_shape)}")
    t, d = (int(v) for v in feature_shape)
    if min(t, d) < 1:
        raise ValueError(f"invalid feature shape {tuple(feature_shape)}")
    g = math.isqrt(t)
    if g * g == t:
        return 0, g, d
    g = math.isqrt(t - 1)
    if g >= 1 and g * g == t - 1:
        return 1, g, d
    raise ValueError(f"{t} tokens are neither g² patch tokens nor a class token and g² patch tokens; "
                     "a tokens decoder needs a square patch grid")


class TokenDecoder(ConvDecoder):
    """Decoder for token sequences ``(T, D)`` of vision transformers (torchvision's ViT encoder
    layers: a class token and ``g × g`` patch tokens). Not in the paper, which predates them.

    Our choice: the patch tokens are put back on their ``g × g`` grid (row-major, the order the
    patch embedding produced them) as a ``D``-channel feature map; the class token, which is a
    summary of the whole image rather than of one patch, enters as a global input: a linear
    layer ``cls_fc`` (D → 256·width, leaky ReLU) whose output is copied to every grid cell and
    concatenated to the patch channels. The map then goes through the convolutional decoder of
    spatial features (:class:`ConvDecoder`, Table 6's pattern): ``output_size = g·2^n``.
    Without a class token (``T = g²``) the grid alone is decoded.
    """

    kind = "tokens"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv") -> None:
        Decoder.__init__(self, feature_shape, image_size, width, upsample)
        self.global_tokens, self.grid, dim = token_grid(self.feature_shape)
        extra = 0
        if self.global_tokens:
            extra = self._ch(_CONV_CONVS[0][1])
            self.cls_fc = nn.Sequential(nn.Linear(dim, extra), nn.LeakyReLU(LEAKY_SLOPE))
        self._conv_body(dim + extra, self.grid, self.grid)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        n, g = x.shape[0], self.grid
        patches = x[:, self.global_tokens:].transpose(1, 2).reshape(n, x.shape[2], g, g)
        if not self.global_tokens:
            return patches
        cls = self.cls_fc(x[:, 0])
        return torch.cat([patches, cls[:, :, None, None].expand(-1, -1, g, g)], dim=1)

    def describe(self) -> str:
        t, d = self.feature_shape
        g = self.grid
        rows = [("grid", "input", f"{g * g}×{d}", "—", "—", f"{g}×{g}×{d}")]
        if self.global_tokens:
            c = self.cls_fc[0].out_features
            rows += [("cls_fc", "input[0]", f"{d}", "—", "—", f"{c}"),
                     ("broadcast", "{grid, cls_fc}", f"{g}×{g}×{d}", "—", "—", f"{g}×{g}×{d + c}")]
        body = [layer.row() for layer in self.layers]
        body[0] = (body[0][0], "broadcast" if self.global_tokens else "grid", *body[0][2:])
        rows += body
        out = self.layers[-1].out_shape
        if out[0] != self.output_size:
            rows.append(("crop", self.layers[-1].name, "×".join(map(str, out)), "—", "—",
                         f"{self.output_size}×{self.output_size}×3"))
        return _render(rows)


class FCDecoder(Decoder):
    """Decoder for vector features: AlexNet fc6, fc7, fc8 (supplementary Table 7).

    ``fc1`` D → 4096, ``fc2``, ``fc3`` → 4096, ``reshape`` to 4×4×256, then ``n`` up-convolutions
    5×5/2 with the last ``n`` of 256, 128, 64, 32, 3 to ``output_size = 4·2^n``
    (:func:`fc_output_size`: 128 for 227/256-px images, Table 7).  Any input shape is flattened.
    """

    kind = "fc"

    def __init__(self, feature_shape, image_size, width=1.0, upsample="deconv", output_size: Optional[int] = None) -> None:
        super().__init__(feature_shape, image_size, width, upsample)
        d = int(math.prod(self.feature_shape))
        if d < 1 or not self.feature_shape:
            raise ValueError(f"invalid feature shape {self.feature_shape}")
        seed_side, seed_ch = _FC_SEED
        out = int(output_size) if output_size is not None else fc_output_size(self.image_size)
        n = int(round(math.log2(max(out, 1) / seed_side)))
        if n < 1 or seed_side * 2**n != out:
            raise ValueError(f"fc output_size must be {seed_side}·2^n with n ≥ 1, got {output_size}")
        self.output_size = out
        self._shapes["input"] = (d,)
        seed = self._ch(seed_ch)
        prev = "input"
        for i in range(3):
            cout = self._ch(_FC_HIDDEN) if i < 2 else seed * seed_side**2
            prev = self._add(f"fc{i + 1}", [prev], "fc", cout)
        prev = self._add("reshape", [prev], "reshape", seed)
        for j, ch in enumerate(_last(_CONV_UP, n, _CONV_UP[0])):
            prev = self._add(f"upconv{j + 1}", [prev], "upconv", self._ch(ch), 5)
        self._finish()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------- factory

_BUILDERS = {"two_stream": TwoStreamDecoder, "sift": SiftDecoder, "conv": ConvDecoder, "fc": FCDecoder,
             "tokens": TokenDecoder}


def build_decoder(kind: str, feature_shape: Sequence[int], image_size: int, width: float = 1.0, **kwargs) -> Decoder:
    """Build the decoder ``kind`` ∈ {"two_stream", "sift", "conv", "fc", "tokens"}.

    ``feature_shape`` is the per-image feature shape, ``(C, H, W)``, ``(D,)`` or, for
    ``tokens``, ``(T, D)``;
    ``image_size`` the side of the (square) target images.  Keyword options: ``upsample``
    ("deconv" — default, the paper's — or "nearest"), and for ``fc`` an explicit ``output_size``
    (``4·2^n``).  The result maps ``(N, *feature_shape)`` to
    ``(N, 3, d.output_size, d.output_size)``.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown decoder kind {kind!r}; expected one of {DECODER_KINDS}")
    if int(image_size) < 2:
        raise ValueError(f"image_size must be ≥ 2, got {image_size}")
    if kind != "fc" and "output_size" in kwargs:
        raise TypeError("output_size is only configurable for the fc decoder")
    return _BUILDERS[kind](tuple(feature_shape), int(image_size), width=width, **kwargs)

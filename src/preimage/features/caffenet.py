"""CaffeNet, the network the paper inverts (§2, Table 1), in PyTorch: ``features.alexnet.arch: caffenet``.

The paper inverts "the AlexNet network trained on ImageNet, available at the Caffe website",
more precisely CaffeNet (§2, footnote 1): Caffe's ``bvlc_reference_caffenet``, AlexNet with
pooling before normalisation. :class:`CaffeNet` rebuilds that architecture module for module,
named after Caffe's layers, so that a converted ``.caffemodel`` loads by name.

Architecture (input 3 × 227 × 227)
----------------------------------
==========  =====================================================  ===============
module      definition                                             output at 227
==========  =====================================================  ===============
conv1       conv 96, 11×11, stride 4, no padding                   96 × 55 × 55
relu1       ReLU
pool1       max-pool 3×3, stride 2 (ceil mode, as Caffe)           96 × 27 × 27
norm1       LRN across channels, local size 5, α 1e-4, β 0.75, k 1
conv2       conv 256, 5×5, padding 2, 2 groups                     256 × 27 × 27
relu2, pool2, norm2                                                256 × 13 × 13
conv3       conv 384, 3×3, padding 1                               384 × 13 × 13
relu3
conv4       conv 384, 3×3, padding 1, 2 groups                     384 × 13 × 13
relu4
conv5       conv 256, 3×3, padding 1, 2 groups                     256 × 13 × 13
relu5, pool5                                                       256 × 6 × 6
flatten     (C, H, W) row-major, as Caffe's InnerProduct           9216
fc6, relu6, drop6      4096 (dropout: identity in eval)            4096
fc7, relu7, drop7      4096                                        4096
fc8         1000 logits                                            1000
==========  =====================================================  ===============

A layer's output is the last processing step of that layer (Table 1): ``conv1`` = norm1,
``conv2`` = norm2, ``conv3`` / ``conv4`` = after their ReLU, ``conv5`` = pool5, ``fc6`` /
``fc7`` = after their ReLU (drop6/drop7 follow in Table 1 but are the identity at evaluation,
so we stop at the ReLU and the output is the same), ``fc8`` = the logits before the softmax
(:data:`LAYER_ENDS`). Caffe's pooling rounds the output size up (``ceil``); at 227 every pool
divides evenly, so ceil and floor agree, but other crops differ (224 gives 27 × 27 after pool1
in Caffe, 26 × 26 with floor); the pools here use ``ceil_mode=True`` to match Caffe.

Local response normalisation. Caffe's ``LRN`` (``ACROSS_CHANNELS``) computes
``b_c = a_c / (k + α/n · Σ_{c'=c-2}^{c+2} a_{c'}²)^β`` with n = 5 (the window is zero-padded
at the first and last channels); α is divided by the local size n. ``torch.nn.LocalResponseNorm``
has the same convention (``tests/test_caffenet.py`` checks it against a direct implementation
of Caffe's formula).

Input (Caffe's reference preprocessing, :func:`caffe_preprocess`)
-----------------------------------------------------------------
Caffe's reference model was trained on images in BGR channel order with values in 0-255, the
ILSVRC 2012 mean image (256 × 256, cropped to the same 227 window) subtracted and no division
by a standard deviation. We subtract the per-channel average of that mean image, the mean
pixel ``B 104.007, G 116.669, R 122.679`` (:data:`CAFFE_MEAN_BGR`; Caffe's own classification
example does the same), not the mean image itself: our choice, the mean image is close to
flat. Images are centre-cropped to ``crop`` (227) exactly as for the torchvision architecture
(:func:`preimage.features.torchvision_net.fit_crop`).

Weights (:func:`load_caffenet`)
-------------------------------
``weights`` is one of

a path
    A state dict (``torch.save(state_dict, path)``), loaded with
    ``torch.load(path, map_location="cpu", weights_only=True)`` (no code in the file is run;
    :func:`preimage.torch_files.load_torch`), with
    exactly these keys (strict: a missing or unexpected key is an error that names it)::

        conv1.weight (96, 3, 11, 11)     conv1.bias (96,)
        conv2.weight (256, 48, 5, 5)     conv2.bias (256,)
        conv3.weight (384, 256, 3, 3)    conv3.bias (384,)
        conv4.weight (384, 192, 3, 3)    conv4.bias (384,)
        conv5.weight (256, 192, 3, 3)    conv5.bias (256,)
        fc6.weight (4096, 9216)          fc6.bias (4096,)
        fc7.weight (4096, 4096)          fc7.bias (4096,)
        fc8.weight (1000, 4096)          fc8.bias (1000,)

    (:data:`STATE_DICT_SHAPES`). To convert ``bvlc_reference_caffenet.caffemodel`` with a tool of
    your choice: each Caffe layer's first blob is ``<layer>.weight``, its second ``<layer>.bias``.
    Convolution filters have the same layout in both, (out, in / groups, kh, kw); conv1's input
    channels are in BGR order, as Caffe's, so do not flip them. Fully connected weights are
    (out, in); fc6's 9216 inputs are pool5 flattened in (C, H, W) order, as in Caffe, so its blob
    reshaped to (4096, 9216) is used as it is. The file's sha256 is the weights' identity.
``"random"``
    The untrained control, labelled "untrained": Gaussian weights (std 0.01 for convolutions and
    fc8, 0.005 for fc6 and fc7) and constant biases (0 for conv1, conv3, fc8; 1 for the others),
    the initialisation in the ``train_val.prototxt`` of Caffe's ``bvlc_reference_caffenet``, drawn under
    ``torch.manual_seed(seed)`` in a forked RNG (the global RNG is left alone). Identity
    ``random:<seed>``.
``"imagenet"``
    Not available: there is no downloadable PyTorch copy of CaffeNet's weights to fetch, so this
    is a :class:`~preimage.weights.WeightsUnavailableError` saying to convert the caffemodel and
    give its path. Never a silent fallback to random weights.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from preimage import torch_files
from preimage.weights import LoadedModel, WeightsUnavailableError, sha256_file

__all__ = [
    "CaffeNet",
    "LAYER_ENDS",
    "CAFFE_MEAN_BGR",
    "STATE_DICT_SHAPES",
    "caffe_preprocess",
    "caffenet_sizes",
    "fc_crops",
    "load_caffenet",
    "truncated_caffenet",
]

#: Per-channel average of Caffe's ILSVRC 2012 mean image (``ilsvrc_2012_mean.npy``), B, G, R, 0-255.
CAFFE_MEAN_BGR: Tuple[float, float, float] = (104.0069879317889, 116.66876761696767, 122.6789143406786)

#: The module whose output is each layer's output (Table 1: the layer's last processing step).
LAYER_ENDS: Dict[str, str] = {
    "conv1": "norm1",
    "conv2": "norm2",
    "conv3": "relu3",
    "conv4": "relu4",
    "conv5": "pool5",
    "fc6": "relu6",
    "fc7": "relu7",
    "fc8": "fc8",
}

#: The state dict a weights file must hold (key → shape).
STATE_DICT_SHAPES: Dict[str, Tuple[int, ...]] = {
    "conv1.weight": (96, 3, 11, 11), "conv1.bias": (96,),
    "conv2.weight": (256, 48, 5, 5), "conv2.bias": (256,),
    "conv3.weight": (384, 256, 3, 3), "conv3.bias": (384,),
    "conv4.weight": (384, 192, 3, 3), "conv4.bias": (384,),
    "conv5.weight": (256, 192, 3, 3), "conv5.bias": (256,),
    "fc6.weight": (4096, 9216), "fc6.bias": (4096,),
    "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
    "fc8.weight": (1000, 4096), "fc8.bias": (1000,),
}

# Caffe's reference initialisation (weight std, bias), used for ``weights: random``.
_INIT: Dict[str, Tuple[float, float]] = {
    "conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.01, 0.0), "conv4": (0.01, 1.0),
    "conv5": (0.01, 1.0), "fc6": (0.005, 1.0), "fc7": (0.005, 1.0), "fc8": (0.01, 0.0),
}


class CaffeNet(nn.Sequential):
    """CaffeNet (``bvlc_reference_caffenet``) as an ``nn.Sequential`` of Caffe-named modules.

    :func:`truncated_caffenet` cuts it at a layer (a plain ``nn.Sequential`` sharing the modules).
    Construction uses PyTorch's default initialisation; :func:`load_caffenet` sets the weights.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

        def lrn() -> nn.LocalResponseNorm:
            return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)

        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),
            ("relu1", nn.ReLU()),
            ("pool1", pool()),
            ("norm1", lrn()),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),
            ("relu2", nn.ReLU()),
            ("pool2", pool()),
            ("norm2", lrn()),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
            ("relu4", nn.ReLU()),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),
            ("relu5", nn.ReLU()),
            ("pool5", pool()),
            ("flatten", nn.Flatten(1)),
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU()),
            ("drop6", nn.Dropout(0.5)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU()),
            ("drop7", nn.Dropout(0.5)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))

    def caffe_init_(self) -> "CaffeNet":
        """Caffe's reference initialisation in place (Gaussian weights, constant biases; see module doc)."""
        with torch.no_grad():
            for name, (std, bias) in _INIT.items():
                layer = getattr(self, name)
                layer.weight.normal_(0.0, std)
                layer.bias.fill_(bias)
        return self


def truncated_caffenet(model: CaffeNet, layer: str) -> nn.Sequential:
    """The part of ``model`` that computes ``layer`` (``conv1`` … ``fc8``), modules shared, not copied."""
    if layer not in LAYER_ENDS:
        raise ValueError(f"unknown CaffeNet layer {layer!r}; known: {', '.join(LAYER_ENDS)}")
    children = list(model.named_children())
    end = [n for n, _ in children].index(LAYER_ENDS[layer])
    return nn.Sequential(OrderedDict(children[: end + 1]))


def caffenet_sizes(crop: int) -> Dict[str, int]:
    """Spatial size after conv1, pool1, pool2 and pool5 for a ``crop × crop`` input, with Caffe's
    arithmetic (convolutions round down, pools round up); fc6 needs pool5 = 6."""
    conv1 = (crop - 11) // 4 + 1

    def pool(n: int) -> int:
        return -(-(n - 3) // 2) + 1  # ceil((n - 3) / 2) + 1

    if conv1 < 3:
        raise ValueError(f"crop {crop} is too small for CaffeNet (conv1 would be {conv1}×{conv1})")
    p1 = pool(conv1)
    p2 = pool(p1)  # conv2 keeps p1 (pad 2, 5×5)
    if p2 < 3:
        raise ValueError(f"crop {crop} is too small for CaffeNet (conv5 would be {p2}×{p2}, pool5 needs 3)")
    return {"conv1": conv1, "pool1": p1, "pool2": p2, "pool5": pool(p2)}


def fc_crops() -> Tuple[int, int]:
    """The smallest and largest crop for which pool5 is 6 × 6, as fc6 needs (227 is the paper's)."""
    ok = [c for c in range(55, 400) if caffenet_sizes(c)["pool5"] == 6]
    return ok[0], ok[-1]


def caffe_preprocess(crops: torch.Tensor, mean_bgr: torch.Tensor) -> torch.Tensor:
    """RGB crops in [0, 1] (N, 3, H, W) → Caffe's input: BGR, 0-255, minus ``mean_bgr`` (1, 3, 1, 1)."""
    return crops.flip(1) * 255.0 - mean_bgr


def _expected_keys_text() -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in STATE_DICT_SHAPES.items())


def _load_state(path: Path) -> Dict[str, torch.Tensor]:
    # a file holding pickled objects is refused unread (torch_files.UnsafeFile), an unreadable one named (DamagedFile)
    state = torch_files.load_torch(path, advice="CaffeNet weights must be a state dict saved with torch.save(state_dict, "
                                          "path), keys in preimage.features.caffenet")
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of CaffeNet")
    missing = [k for k in STATE_DICT_SHAPES if k not in state]
    unexpected = [k for k in state if k not in STATE_DICT_SHAPES]
    wrong = [
        f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__} (expected {STATE_DICT_SHAPES[k]})"
        for k, v in state.items()
        if k in STATE_DICT_SHAPES and (not isinstance(v, torch.Tensor) or tuple(v.shape) != STATE_DICT_SHAPES[k])
    ]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if wrong:
            problems.append(f"wrong shapes: {', '.join(wrong)}")
        raise ValueError(
            f"{path} is not a CaffeNet state dict ({'; '.join(problems)}). Expected exactly: {_expected_keys_text()}"
        )
    return state


def _empty_caffenet() -> CaffeNet:
    """A CaffeNet on the CPU with uninitialised parameters (built on the meta device, so
    PyTorch's default initialisation is skipped: the caller sets every parameter)."""
    with torch.device("meta"):
        model = CaffeNet()
    return model.to_empty(device="cpu")


def load_caffenet(weights: str | os.PathLike = "random", seed: int = 0) -> LoadedModel:
    """CaffeNet with ``weights`` (a path or ``"random"``; ``"imagenet"`` is an error, see the
    module doc), in eval mode on the CPU with frozen parameters. ``mean`` of the result is
    :data:`CAFFE_MEAN_BGR` (B, G, R, 0-255) and ``std`` is 1 (Caffe divides by nothing)."""
    spec = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(spec, str):
        raise TypeError(f"weights must be 'random' or a path, not {weights!r}")
    ones = (1.0, 1.0, 1.0)
    if spec == "imagenet" or spec.startswith("imagenet:"):
        raise WeightsUnavailableError(
            f"features.alexnet.arch: caffenet has no downloadable ImageNet weights (weights: {spec!r}). "
            "Convert Caffe's bvlc_reference_caffenet.caffemodel to a PyTorch state dict with the keys "
            f"{_expected_keys_text()} and set features.alexnet.weights to its path "
            "(layout in preimage.features.caffenet). Random weights are never used as a fallback; "
            "use weights: random explicitly for the untrained control."
        )
    if spec == "random":
        seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _empty_caffenet().caffe_init_()
        loaded = LoadedModel(model, f"random:{seed}", "random", f"CaffeNet (untrained, random:{seed})", None,
                             CAFFE_MEAN_BGR, ones)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"CaffeNet weights file not found at {path} (weights: {spec!r}). weights must be 'random' or the "
                "path of a CaffeNet state dict (keys in preimage.features.caffenet). "
                "Random weights are never used as a fallback; use weights: random explicitly for the untrained control."
            )
        state = _load_state(path)
        model = _empty_caffenet()
        model.load_state_dict(state, strict=True)  # every parameter is set from the file
        digest = sha256_file(path)
        loaded = LoadedModel(model, digest, "path", f"CaffeNet (weights {path.name}, sha256 {digest[:12]})", None,
                             CAFFE_MEAN_BGR, ones, os.fspath(path))
    loaded.model.eval()
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return loaded

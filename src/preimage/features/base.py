"""Representation registry (paper §2: the feature representations Φ that are inverted).

Every representation is one module in this package that subclasses :class:`Representation`
and decorates itself with :func:`register`. The workflow only ever calls :func:`create`
with a name from the config (``hog``, ``hogb``, ``dsift``, ``lbp``, ``sift``, ``conv1`` … ``fc8``,
``torchvision:<model>:<node>``, ``efficientnet_lite0:<node>``, ``timm:<model>:<node>``) and the
parameters from ``params:``.

Conventions shared by all representations
-----------------------------------------
* Input: a float tensor of shape ``(N, 3, H, W)``, RGB, values in ``[0, 1]``
  (``preimage.image_store.to_float`` turns the uint8 image store into this).
* Output of :meth:`Representation.compute`: a float tensor ``(N, C, h, w)`` (spatial
  features) or ``(N, D)`` (vectors), on the same device as the input.
* :meth:`Representation.output_shape` gives the per-image output shape for an image size
  without computing anything (decoders are built from it).
* ``identity()`` returns a dict of strings that is written to the HDF5 attrs (weights sha256,
  parameters), so that a cache records exactly what produced it.
* ``differentiable`` says whether gradients reach the image (Mahendran & Vedaldi baseline).
* ``sparse`` representations (sift) additionally implement ``compute_sparse(uint8 images,
  workers) -> (table, offsets)`` (``table`` has ``sparse_width`` columns; rows of image ``i`` are
  ``offsets[i]:offsets[i+1]``) and ``densify(table, offsets, index_range, height, width)``.
* A network's layers are nodes of one network (:meth:`Representation.network_of`): a
  :class:`NodeSet` creates several of them sharing one copy of the weights and computes them all
  in one forward pass (the feature stage extracts every requested layer of a network at once).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from preimage.deferred import torch

_REGISTRY: Dict[str, Type["Representation"]] = {}
_PREFIX_REGISTRY: Dict[str, Type["Representation"]] = {}


class Representation:
    """Base class of a feature representation Φ."""

    name: str = ""
    #: the section under ``features:`` in the config that holds this representation's parameters
    family: str = ""
    differentiable: bool = False
    sparse: bool = False
    sparse_width: int = 0

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)

    def output_shape(self, height: int, width: int) -> Tuple[int, ...]:
        raise NotImplementedError

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def decoder_kind(cls, feature_shape: Tuple[int, ...]) -> str:
        """The decoder (:mod:`preimage.decoders`) that inverts features of ``feature_shape``: feature
        maps get the convolutional decoder (supplementary Table 6), vectors and 1×1 maps the fully
        connected one (Table 7). HOG, LBP and SIFT declare their own (Tables 3-5)."""
        shape = tuple(int(v) for v in feature_shape)
        if len(shape) == 1 or (len(shape) == 3 and shape[1] * shape[2] == 1):
            return "fc"
        if len(shape) == 3:
            return "conv"
        raise ValueError(f"{cls.__name__}: no decoder for features of per-image shape {shape}")

    def target_size(self, image_size: int) -> int:
        """Side of the centre square of an ``image_size`` image that Φ sees: the part a decoder
        can be asked to reconstruct (its training target and the region its error is computed
        on). The whole image for HOG, SIFT and LBP; networks that centre-crop their input
        override it (paper Table 1: AlexNet sees a 227-px crop)."""
        return int(image_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.compute(images)

    def to(self, device: torch.device | str) -> "Representation":
        return self

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """Why ``name`` (registered for this class) cannot be computed, or None. Classes registered
        under a prefix (``torchvision:<model>:<node>``) check the rest of the name here."""
        return None

    def identity(self) -> Dict[str, str]:
        return {"representation": self.name, **{k: str(v) for k, v in sorted(self.params.items())}}

    # -- several nodes of one network --------------------------------------------------------

    @classmethod
    def network_of(cls, name: str) -> Optional[str]:
        """The network whose node the representation ``name`` is (``alexnet`` for ``fc6``,
        ``resnet50`` for ``torchvision:resnet50:layer4``), or None when it is no network's node
        (HOG, SIFT, LBP): nodes of one network with the same parameters can be computed in one
        forward pass (:class:`NodeSet`)."""
        return None

    def at_node(self, name: str) -> "Representation":
        """The representation ``name`` with this one's parameters. Networks override it to share
        their loaded weights (:class:`preimage.features.torchvision_net.CNNRepresentation`)."""
        return create(name, **self.params)

    def compute_nodes(self, images: torch.Tensor, nodes: Sequence["Representation"]) -> List[torch.Tensor]:
        """The features of every representation of ``nodes`` (this one's :meth:`at_node` copies),
        each equal to its own :meth:`compute`. Here one after the other; networks run one forward
        pass up to the deepest node."""
        return [node.compute(images) for node in nodes]


def register(*names: str, prefix: bool = False) -> Callable[[Type[Representation]], Type[Representation]]:
    """Class decorator: make a representation available under ``names``.

    With ``prefix=True`` a name matches every representation name that starts with
    ``"<name>:"`` (used by ``torchvision:<model>:<node>``).
    """

    def decorate(cls: Type[Representation]) -> Type[Representation]:
        for n in names:
            table = _PREFIX_REGISTRY if prefix else _REGISTRY
            if n in table and table[n] is not cls:
                raise ValueError(f"representation {n!r} registered twice ({table[n].__name__}, {cls.__name__})")
            table[n] = cls
        return cls

    return decorate


def lookup(name: str) -> Type[Representation]:
    """The class registered for ``name`` (a clear error listing the known names otherwise)."""
    _load_builtin_modules()
    if name in _REGISTRY:
        return _REGISTRY[name]
    head = name.split(":", 1)[0]
    if ":" in name and head in _PREFIX_REGISTRY:
        return _PREFIX_REGISTRY[head]
    raise KeyError(
        f"unknown representation {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        + (", " + ", ".join(f"{p}:<...>" for p in sorted(_PREFIX_REGISTRY)) if _PREFIX_REGISTRY else "")
    )


def create(name: str, **params: Any) -> Representation:
    """Instantiate the representation ``name`` with ``params``."""
    cls = lookup(name)
    return cls(name=name, **params) if getattr(cls, "takes_name", False) else cls(**params)


class NodeSet:
    """Several nodes of one network with the same parameters (``conv1``, ``conv5`` and ``fc6`` of
    one AlexNet), made once: the network's weights are loaded once and shared, and
    :meth:`compute` gives every node's features from one forward pass, each equal to what the
    node's own representation computes. ``representations`` holds the per-node objects (shapes,
    identity, label: what a cache records about each)."""

    def __init__(self, names: Sequence[str], **params: Any) -> None:
        names = list(names)
        if not names:
            raise ValueError("a node set needs at least one representation")
        cls = lookup(names[0])
        network = cls.network_of(names[0])
        for name in names[1:]:
            if lookup(name) is not cls or network is None or cls.network_of(name) != network:
                raise ValueError(f"{name} is not a node of the network of {names[0]} "
                                 f"({network or 'no network'}): one forward pass cannot compute both")
        first = create(names[0], **params)
        self.names = names
        self.representations: List[Representation] = [first] + [first.at_node(name) for name in names[1:]]

    def to(self, device: torch.device | str) -> "NodeSet":
        self.representations = [r.to(device) for r in self.representations]
        return self

    def compute(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Every node's features of ``images`` (N, 3, H, W) in [0, 1], in the order of ``names``."""
        return self.representations[0].compute_nodes(images, self.representations)


def categories_of(name: str, weights: Any = "imagenet") -> Optional[list]:
    """Class names of representation ``name``'s classifier outputs under ``weights`` (e.g. the
    1000 ImageNet classes for ``fc8`` with ``weights: imagenet``), without loading the network;
    None when the weights carry no class names (``random``, a state-dict file) or the
    representation is no classifier."""
    fn = getattr(lookup(name), "categories_for", None)
    return fn(name, weights) if fn is not None else None


def known_names() -> list[str]:
    """The names registered whole (``hog``, ``fc6`` …), sorted."""
    _load_builtin_modules()
    return sorted(_REGISTRY)


def prefixes() -> list[str]:
    """The prefixes whose names take a node after a colon (``torchvision``, ``efficientnet_lite0``), sorted."""
    _load_builtin_modules()
    return sorted(_PREFIX_REGISTRY)


def families() -> list[str]:
    """The ``features:`` sections of the registered representations (``alexnet``, ``hog`` …), sorted."""
    _load_builtin_modules()
    return sorted({cls.family for cls in list(_REGISTRY.values()) + list(_PREFIX_REGISTRY.values())})


def name_problem(name: str) -> Optional[str]:
    """Why the representation ``name`` cannot be computed (an unknown name, or a network node that
    the network does not have), or None; checked when the configuration is validated."""
    try:
        cls = lookup(name)
    except KeyError as err:
        return str(err.args[0])
    return cls.name_problem(name)


def _load_builtin_modules() -> None:
    # Importing the modules runs their @register decorators.
    import importlib

    for module in ("hog", "hogb", "dsift", "lbp", "sift", "alexnet", "torchvision_net", "efficientnet_lite", "timm_net"):
        try:
            importlib.import_module(f"preimage.features.{module}")
        except ModuleNotFoundError as err:  # a module not written yet must not hide others
            if err.name != f"preimage.features.{module}":
                raise

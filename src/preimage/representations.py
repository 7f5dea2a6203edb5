"""What each representation of a configuration is, resolved in one place.

A configured name (``hog``, ``fc6``, ``torchvision:resnet50:layer4``) and the variants the
workflow derives from it (``fc6-ae``: the autoencoder of §5.2, ``fc6-random``: the same layer of
an untrained network, ``fc6-feature`` and ``fc6-gan``: its decoder trained with the feature-space
and the adversarial losses of Appendix A, on the same features) each become one
:class:`RepresentationSpec`: its file-system slug, the name
to show in tables, its family (the ``features:`` section that parameterises it), the base
representation it derives from, its variant, the parameters that create it and whether its
features are computed on a GPU. What a representation *is* (decoder kind, crop, differentiability)
is declared by its class in :mod:`preimage.features`; this module only asks.

:class:`Catalog` holds the specs of one configuration and answers what each representation is
(its variants, its network group, its decoder's loss and training parameters). What the workflow
makes of them (jobs, per-analysis layer lists, paths under ``results/``) is
:class:`preimage.plan.Plan`'s. The naming functions here (:func:`slug_of`, :func:`split_variant`,
:func:`name_of_slug`, :func:`node_label`) are the only place outside :mod:`preimage.features`
that reads a representation's name; they import nothing heavy, so that table and figure jobs
start without torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from preimage.alexnet_layers import LAYERS as _ALEXNET_MODULES

__all__ = ["ALEXNET_LAYERS", "ALEXNET_VECTOR_LAYERS", "LOSS_VARIANTS", "SHALLOW", "VARIANTS", "Catalog",
           "RepresentationSpec", "name_of_slug", "node_label", "per_rep", "slug_of", "split_variant", "variant_of"]

#: The layers of AlexNet in depth order (paper Table 1), as :mod:`preimage.features.alexnet` defines them.
ALEXNET_LAYERS: Tuple[str, ...] = tuple(_ALEXNET_MODULES)
#: AlexNet's layers whose features are vectors (fc6-fc8: the classifier's), those single units are read from.
ALEXNET_VECTOR_LAYERS: Tuple[str, ...] = tuple(l for l, (part, _) in _ALEXNET_MODULES.items() if part == "classifier")
#: The shallow representations of paper §2, in the order of Table 2, then Mahendran & Vedaldi's
#: HOG with bilinear orientations and dense SIFT.
SHALLOW: Tuple[str, ...] = ("hog", "sift", "lbp", "hogb", "dsift")
#: Variant suffixes: the autoencoder of §5.2, the untrained-network control and the decoders trained
#: with the losses of Appendix A (:mod:`preimage.objectives`).
VARIANTS: Dict[str, str] = {"ae": "autoencoder", "random": "untrained network",
                            "feature": "feature-space loss", "gan": "feature + adversarial loss"}
#: Variants that differ from their base representation only in the decoder's loss (``decoder.loss``):
#: they share its feature cache.
LOSS_VARIANTS: Tuple[str, ...] = ("feature", "gan")


def slug_of(name: str) -> str:
    """File-system name of a configured representation: ``torchvision:resnet50:layer4`` →
    ``resnet50@layer4``, ``family:node`` → ``family@node``; plain names are their own slug."""
    parts = name.split(":")
    if parts[0] == "torchvision" and len(parts) == 3:
        return f"{parts[1]}@{parts[2]}"
    return "@".join(parts)


def name_of_slug(slug: str) -> str:
    """The configured name a slug stands for (the inverse of :func:`slug_of`): ``resnet50@layer4``
    → ``torchvision:resnet50:layer4``, ``efficientnet_lite0@pool`` → ``efficientnet_lite0:pool``
    (a prefix that :mod:`preimage.features` registers); names without ``@`` are returned as given."""
    if "@" not in slug:
        return slug
    from preimage.features import prefixes

    head, node = slug.split("@", 1)
    return f"{head}:{node}" if head in prefixes() else f"torchvision:{head}:{node}"


def split_variant(name: str) -> Tuple[str, Optional[str]]:
    """(base, variant) of a representation's name, slug or display name: ``fc6-ae`` → (``fc6``,
    ``ae``), ``efficientnet_lite0:pool-gan`` → (``efficientnet_lite0:pool``, ``gan``), ``fc6`` →
    (``fc6``, None). Variants are the keys of :data:`VARIANTS`."""
    for variant in VARIANTS:
        if name.endswith(f"-{variant}"):
            return name[: -len(variant) - 1], variant
    return name, None


def variant_of(name: str) -> Optional[str]:
    """The variant a representation's name or slug ends with (a key of :data:`VARIANTS`), or None."""
    return split_variant(name)[1]


def node_label(name: str) -> str:
    """The short label of a network node in plots: the node of ``torchvision:resnet50:layer4``
    (``layer4``) or of ``efficientnet_lite0:stages.3`` (``stages.3``); other names as they are."""
    return name.split(":")[-1]


@dataclasses.dataclass(frozen=True)
class RepresentationSpec:
    """One representation of a configuration (a configured name or a variant of one)."""

    slug: str  #: file-system name: ``hog``, ``fc6-ae``, ``resnet50@layer4``
    name: str  #: the configured name of the base representation: ``fc6``, ``torchvision:resnet50:layer4``
    family: str  #: the ``features:`` section holding its parameters: ``hog``, ``alexnet``, ``torchvision``
    variant: Optional[str]  #: None, or a key of :data:`VARIANTS`
    params: Mapping[str, Any]  #: keyword arguments of ``preimage.features.create(name, **params)``
    uses_gpu: bool  #: a network: its features, decoder and analyses are GPU jobs

    @property
    def base(self) -> str:
        """Slug of the representation this one derives from (itself when not a variant)."""
        return self.slug[: -len(self.variant) - 1] if self.variant else self.slug

    @property
    def display(self) -> str:
        """The name in tables and figures: the configured name, with a variant's suffix
        (``fc6-ae``, ``efficientnet_lite0:fc-random``)."""
        return f"{self.name}-{self.variant}" if self.variant else self.name


def per_rep(value: Any, spec: RepresentationSpec) -> Any:
    """A config value that is one value for all, or a mapping ``{default: v, <name>: v}``: the
    entry of the slug (``fc6-ae``), else of the base representation (``fc6``), else ``default``."""
    if isinstance(value, Mapping):
        for key in (spec.slug, spec.display, spec.base, spec.name):
            if key in value:
                return value[key]
        return value.get("default")
    return value


class Catalog:
    """The representations of one validated configuration, variants included, in a fixed order:
    the configured names, then the autoencoders, the untrained controls, the ``-feature`` and the
    ``-gan`` variants."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from preimage.features.base import lookup

        self.config = config
        features = config["features"]
        self._notes: Dict[str, str] = {}
        specs: Dict[str, RepresentationSpec] = {}
        for name in config["representations"]:
            cls = lookup(name)
            if not cls.family:
                raise ValueError(f"representation class {cls.__name__} does not declare its family")
            family = cls.family
            spec = RepresentationSpec(slug_of(name), name, family, None, dict(features.get(family, {})),
                                      uses_gpu=bool(getattr(cls, "has_weights", False)))
            specs[spec.slug] = spec
        self._base = dict(specs)
        variants = config["variants"]
        for layer in self.configured(variants["autoencoder"], "variants.autoencoder"):
            base = specs[slug_of(layer)]
            if base.family != "alexnet":
                raise ValueError(f"variants.autoencoder: {layer} is not an AlexNet layer; autoencoders fine-tune "
                                 f"AlexNet ({', '.join(ALEXNET_LAYERS)})")
            specs[f"{base.slug}-ae"] = dataclasses.replace(base, slug=f"{base.slug}-ae", variant="ae")
        for base in self._controlled(variants["untrained_control"]):
            params = {**base.params, "weights": "random"}
            specs[f"{base.slug}-random"] = dataclasses.replace(base, slug=f"{base.slug}-random", variant="random",
                                                               params=params)
        for variant in LOSS_VARIANTS:
            for slug in self.configured(variants.get(variant), f"variants.{variant}"):
                base = specs[slug]
                if not getattr(lookup(base.name), "differentiable", False):
                    raise ValueError(f"variants.{variant}: {base.name} is not differentiable; the {variant} loss "
                                     "needs the gradient of its features with respect to the image")
                specs[f"{slug}-{variant}"] = dataclasses.replace(base, slug=f"{slug}-{variant}", variant=variant)
        self.specs = specs
        for slug in specs:  # every decoder's loss and start, checked now rather than inside a job
            self.loss(slug)
            self.starts_from(slug)

    @property
    def notes(self) -> List[str]:
        """What the configuration names but does not run (a list naming a representation that is
        not in ``representations``, as resolved by :meth:`configured`), one line each."""
        return list(self._notes.values())

    def _controlled(self, mode: str) -> List[RepresentationSpec]:
        """Networks that get an untrained control: ``always``, or ``auto`` where the configured
        weights are trained ones (never for ``never``)."""
        if mode == "never":
            return []
        return [s for s in self._base.values()
                if s.uses_gpu and (mode == "always" or str(s.params.get("weights", "random")) != "random")]

    # -- lookups --------------------------------------------------------------------------

    def __getitem__(self, slug: str) -> RepresentationSpec:
        return self.specs[slug]

    def __contains__(self, slug: str) -> bool:
        return slug in self.specs

    def __iter__(self):
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def slugs(self) -> List[str]:
        return list(self.specs)

    @property
    def base_slugs(self) -> List[str]:
        """The configured representations (no variants)."""
        return list(self._base)

    def configured(self, names: Optional[Iterable[str]], key: str) -> List[str]:
        """Slugs of ``names`` (a list from the config under ``key``) that are configured
        representations; the others are skipped with a note, so that a shorter
        ``representations`` list never makes the rest of a config invalid."""
        if names is None:
            return []
        kept, skipped = [], []
        for name in dict.fromkeys(names):
            slug = slug_of(name)
            (kept if slug in self._base else skipped).append(slug if slug in self._base else name)
        if skipped:
            self._notes[key] = f"{key} skips {', '.join(skipped)} (not in representations)"
        return kept

    def with_variant(self, variant: Optional[str]) -> List[str]:
        return [slug for slug, spec in self.specs.items() if spec.variant == variant]

    def alexnet_layers(self) -> List[str]:
        """The configured AlexNet layers (no variants), in depth order."""
        return [layer for layer in ALEXNET_LAYERS if layer in self._base and self._base[layer].family == "alexnet"]

    def shallow(self) -> List[str]:
        return [slug for slug in SHALLOW if slug in self._base]

    def network_layers(self) -> Dict[str, List[str]]:
        """Networks other than AlexNet with two or more configured nodes: family → the nodes'
        display names in configured order (their Figure 7 curve runs from shallow to deep)."""
        found: Dict[str, List[str]] = {}
        for spec in self._base.values():
            if spec.uses_gpu and spec.family != "alexnet":
                found.setdefault(spec.family, []).append(spec.display)
        return {family: names for family, names in found.items() if len(names) >= 2}

    def feature_slugs(self, gpu: bool) -> List[str]:
        """Feature caches computed on a GPU (networks) or on the CPU (HOG, SIFT, LBP); the loss
        variants have none of their own (:meth:`features_of`)."""
        return [slug for slug, spec in self.specs.items()
                if spec.uses_gpu == gpu and spec.variant not in LOSS_VARIANTS]

    def features_of(self, slug: str) -> str:
        """Slug of the feature cache a representation's decoder is trained and evaluated on: its
        own, or its base's for the ``-feature`` / ``-gan`` variants (same features, other loss)."""
        spec = self.specs[slug]
        return spec.base if spec.variant in LOSS_VARIANTS else slug

    def network_groups(self, store: Optional[str] = None) -> Dict[str, List[str]]:
        """The networks' feature caches that one forward pass computes together: the slugs of
        :meth:`feature_slugs` (``gpu=True``) grouped by network, variant and every parameter that
        creates them except the node (weights, seed, crop, arch; an autoencoder's fine-tuned encoder), each
        group under a name that says which network it runs: ``alexnet``, ``alexnet-random`` (the
        untrained control), ``alexnet-fc6-ae`` (an autoencoder's own fine-tuned encoder),
        ``resnet50``, ``efficientnet_lite0``; a torchvision model that shares its name with
        another family's network is prefixed with its family (``torchvision-alexnet``). The name
        depends on the network and variant only, not on which nodes are configured.

        ``store`` keeps only the slugs whose ``features.store`` it is (``cache``: those an
        extraction job computes). Groups and their slugs keep the configured order."""
        import json

        from preimage.features.base import lookup

        groups: Dict[Tuple[str, ...], List[str]] = {}
        names: Dict[Tuple[str, ...], str] = {}
        for slug in self.feature_slugs(True):
            if store is not None and self.feature_store(slug) != store:
                continue
            spec = self.specs[slug]
            network = lookup(spec.name).network_of(spec.name)
            # an autoencoder computes with its own fine-tuned encoder: a network of its own
            own = slug if spec.variant == "ae" else None
            options = json.dumps([dict(spec.params), own], sort_keys=True, default=str)
            key = (spec.family, network or slug, spec.variant or "", options)
            if key not in groups:
                base = network or spec.base
                names[key] = {"random": f"{base}-random", "ae": f"{base}-{slug}"}.get(spec.variant, base)
            groups.setdefault(key, []).append(slug)
        taken: Dict[str, List[Tuple[str, ...]]] = {}
        for key, name in names.items():
            taken.setdefault(name, []).append(key)
        for name, keys in taken.items():
            if len(keys) > 1:
                for key in keys:
                    if key[0] != key[1]:  # the family is not the network's own name (torchvision:alexnet)
                        names[key] = f"{key[0]}-{name}"
        if len(set(names.values())) != len(names):
            raise ValueError(f"network groups with one name: {sorted(names.values())}")
        return {names[key]: slugs for key, slugs in groups.items()}

    # -- the losses of Appendix A ------------------------------------------------------------

    def loss(self, slug: str) -> str:
        """The decoder's loss (:data:`preimage.objectives.LOSSES`): fixed by a loss variant,
        ``pixel`` for the autoencoder (§5.2), else ``decoder.loss`` (per representation). A
        feature-space loss for a representation that is not differentiable is an error."""
        from preimage.features.base import lookup

        spec = self.specs[slug]
        if spec.variant in LOSS_VARIANTS:
            return spec.variant
        if spec.variant == "ae":
            return "pixel"
        loss = per_rep(self.config["decoder"].get("loss", "pixel"), spec) or "pixel"
        if loss != "pixel" and not getattr(lookup(spec.name), "differentiable", False):
            raise ValueError(f"decoder.loss: {spec.display} is not differentiable; the {loss} loss needs the "
                             "gradient of its features with respect to the image (use pixel)")
        return loss

    def starts_from(self, slug: str) -> Optional[str]:
        """The slug of the pixel decoder a ``-feature`` / ``-gan`` variant starts from
        (``decoder.init: pixel``: its base's), else None."""
        spec = self.specs[slug]
        if spec.variant not in LOSS_VARIANTS:
            return None
        if per_rep(self.config["decoder"].get("init", "scratch"), spec) != "pixel":
            return None
        if self.loss(spec.base) != "pixel":
            raise ValueError(f"decoder.init: {spec.display} is to start from the pixel decoder of {spec.name}, "
                             f"but that one is trained with the {self.loss(spec.base)} loss")
        return spec.base

    def loss_bases(self) -> List[str]:
        """Representations with a ``-feature`` or ``-gan`` variant, in configured order (each gets
        the Figure 12-13 comparison)."""
        variants = {self.specs[s].base for s in self.specs if self.specs[s].variant in LOSS_VARIANTS}
        return [slug for slug in self._base if slug in variants]

    def loss_family(self, base: str) -> List[str]:
        """The decoders compared in Figures 12-13 for ``base``: its ``-gan``, its ``-feature`` (where
        configured) and its own decoder."""
        return [s for s in (f"{base}-gan", f"{base}-feature", base) if s in self.specs]

    def has_feature_error(self, slug: str) -> bool:
        """Whether the evaluation scores a decoder's feature error ‖Φ(x̂) − Φ(x)‖/‖Φ(x)‖ too: one
        compared under Appendix A (the loss variants, their base, and any decoder trained with a
        feature-space loss)."""
        spec = self.specs[slug]
        return spec.variant in LOSS_VARIANTS or slug in self.loss_bases() or self.loss(slug) != "pixel"

    # -- parameters -----------------------------------------------------------------------

    def feature_store(self, slug: str) -> str:
        """``features.store`` of one representation: ``cache`` (its features are computed once and
        stored) or ``recompute`` (the jobs that read them compute them from the stored pixels).
        The setting is one value for all, or a mapping whose keys are representations (``fc6-ae``,
        ``fc6``) or families (``alexnet``, ``torchvision``, ``hog``) or ``default``; the most
        specific key wins (slug, configured name, base representation, family, default)."""
        spec = self.specs[slug]
        value = self.config["features"].get("store", "cache")
        if isinstance(value, Mapping):
            for key in (spec.slug, spec.display, spec.base, spec.name, spec.family, "default"):
                if key in value:
                    return str(value[key])
            return "cache"
        return str(value)

    def train_params(self, slug: str) -> Dict[str, Any]:
        """Training and decoder parameters of one representation (only its own epochs/width)."""
        spec = self.specs[slug]
        cfg = {k: v for k, v in self.config["train"].items() if k != "threads"}
        cfg["epochs"] = per_rep(cfg["epochs"], spec)
        cfg["width"] = per_rep(self.config["decoder"]["width"], spec)
        cfg["upsample"] = self.config["decoder"]["upsample"]
        return cfg

    def networks(self) -> List[str]:
        """Slugs of the CNN representations (every variant included): those M&V's "≤ 20 %" is about."""
        return [slug for slug, spec in self.specs.items() if spec.uses_gpu]

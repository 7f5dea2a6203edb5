"""Any timm model as a representation: ``timm:<model>:<node>`` (beyond the paper).

The paper inverts AlexNet (§2, Table 1); today's questions are about today's backbones: DINOv2,
CLIP, ConvNeXt and the other models of `timm <https://github.com/huggingface/pytorch-image-models>`_.
``<model>`` is a timm model name, with or without a pretrained tag
(``vit_small_patch14_dinov2``, ``vit_base_patch16_clip_224.openai``, ``convnext_tiny``);
``<node>`` is a graph node of timm's FX feature extraction (``timm.models.get_graph_node_names``
in eval mode, which treats timm's own layers as leaves), or a module name that contains nodes
(``blocks.11``, ``stages.3``: its last node). An unknown model or node is a clear error that lists
valid names, at config-check time (:func:`name_problem`) and when the representation is made.
Nodes of one model are computed in one forward pass (:meth:`CNNRepresentation.compute_nodes`).

Outputs are feature maps ``(N, C, h, w)`` (the conv decoder), vectors ``(N, D)`` (the fc decoder)
or ViT token sequences ``(N, T, D)`` (the ``tokens`` decoder, :class:`preimage.decoders.TokenDecoder`:
the class token as a global input, the patch tokens on their ``g × g`` grid in row-major order).
Our choices for the tokens: a ViT's extra prefix tokens that are neither the class token nor a
patch (DINOv2's register tokens in the ``_reg4`` variants, DeiT's distillation token) are dropped,
so that a node gives ``[class token] + g²`` patch tokens (``T = 1 + g²``, or ``g²`` for models
without a class token); :meth:`TimmRepresentation.token_layout` says what was kept. Models whose
maps are channels-last (``model.output_fmt == "NHWC"``: timm's Swin family) have their 4-D
outputs permuted to ``(N, C, h, w)``.

Parameters (``features.timm`` in the config)

``weights``
    ``"pretrained"`` (default): the model's pretrained weights (the tag in ``<model>``, else timm's
    default tag), read from timm's Hugging Face cache (``$HF_HUB_CACHE``, default
    ``~/.cache/huggingface/hub``) and downloaded there once if absent and the hub is reachable;
    ``HF_HUB_OFFLINE=1`` (or no network) with no cached file is a :class:`WeightsUnavailableError`
    that names the cache folder, the command that fills it and the config key for a file.
    ``"random"``: the seeded untrained control (timm's own initialisation under
    ``torch.manual_seed(seed)``). A path: a state dict (``.safetensors``, or ``torch.save`` read
    with ``torch.load(weights_only=True)`` through :func:`preimage.torch_files.load_torch`: a file holding
    pickled objects is refused). Random weights are never a fallback.
``seed``
    seed of ``weights: random``.
``crop``
    the network's input size (default: the ``input_size`` of timm's pretrained config). A ViT is
    built for it (``img_size``, a multiple of its patch size); pretrained position embeddings
    are resampled to that grid by the model's own checkpoint filter, as timm does when a model
    is created at another size.

Preprocessing is timm's evaluation transform from the pretrained config
(``timm.models.get_pretrained_cfg``, part of the package: offline): the image's shorter side is
resized to ``floor(crop / crop_pct)`` with the config's interpolation (antialiased, clamped to
[0, 1] as an 8-bit image would be), then the centre ``crop × crop`` is taken (``crop_mode:
squash``: the whole image is resized to ``crop × crop``), and normalised with the config's
mean/std. All of it is recorded in each cache's attributes, with the sha256 of the weights file.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from preimage.deferred import F, torch
from preimage.features.base import register
from preimage.features.torchvision_net import CNNRepresentation, _sample, _without_asserts, has_node
from preimage.weights import LoadedModel, WeightsUnavailableError, sha256_file

__all__ = ["TimmRepresentation", "Preprocessing", "graph_nodes", "load_timm_model", "name_problem",
           "preprocessing", "pretrained_weights_path", "weights_problem"]

#: The names of ``weights`` that are no file.
NAMED_WEIGHTS = ("pretrained", "random")
#: The config key of a weights file (named in error messages).
WEIGHTS_KEY = "features.timm.weights"
_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "area": "area"}


def _timm():
    try:
        import timm
    except ModuleNotFoundError:  # a dependency in pyproject.toml and environment.yml
        raise ModuleNotFoundError("timm:<model>:<node> representations need the package timm: pip install timm") from None
    return timm


# ------------------------------------------------------------------------------ configuration


def pretrained_cfg(model_name: str) -> Dict[str, Any]:
    """timm's pretrained config of ``model_name`` (``arch`` or ``arch.tag``) as a dict; a
    ValueError naming close model names when timm has no such model. Offline (in the package)."""
    timm = _timm()
    arch = model_name.split(".", 1)[0]
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"timm has no model {model_name!r}{hint}; all: timm.list_models()")
    cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=False)
    if cfg is None:
        tags = timm.list_pretrained(f"{arch}.*")
        raise ValueError(f"timm has no pretrained config {model_name!r}; tags of {arch}: {', '.join(tags) or 'none'}")
    return cfg.to_dict()


class Preprocessing:
    """timm's evaluation transform of one model at ``crop`` (module docstring)."""

    def __init__(self, cfg: Dict[str, Any], crop: Optional[int] = None) -> None:
        size = cfg.get("input_size") or (3, 224, 224)
        if crop is None:
            if int(size[-1]) != int(size[-2]):
                raise ValueError(f"timm's input size {tuple(size)} is not square; set features.timm.crop")
            crop = int(size[-1])
        if int(crop) < 1:
            raise ValueError(f"crop must be a positive image size, not {crop!r}")
        self.crop = int(crop)
        self.input_size = tuple(int(v) for v in size)
        self.mean = tuple(float(v) for v in cfg.get("mean") or (0.485, 0.456, 0.406))
        self.std = tuple(float(v) for v in cfg.get("std") or (0.229, 0.224, 0.225))
        interpolation = cfg.get("interpolation") or "bicubic"
        if interpolation not in _INTERPOLATION:
            interpolation = "bicubic"  # timm maps 'random' and others to bicubic for evaluation
        self.interpolation = interpolation
        self.crop_pct = float(cfg.get("crop_pct") or 0.875)
        self.crop_mode = cfg.get("crop_mode") or "center"
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(f"timm's crop_mode {self.crop_mode!r} is not supported here (center, squash)")
        #: the shorter side images are resized to before the centre crop (timm's ``scale_size``)
        self.scale_size = self.crop if self.crop_mode == "squash" else math.floor(self.crop / self.crop_pct)
        #: the pretrained config these come from: ``architecture.tag``
        self.source = ".".join(str(v) for v in (cfg.get("architecture"), cfg.get("tag")) if v)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] → the resized centre crop (N, 3, crop, crop), not normalised."""
        h, w = images.shape[-2:]
        if self.crop_mode == "squash":
            size = (self.crop, self.crop)
        else:
            short = min(h, w)
            size = (max(self.scale_size, round(h * self.scale_size / short)),
                    max(self.scale_size, round(w * self.scale_size / short)))
        if size != (h, w):
            mode = _INTERPOLATION[self.interpolation]
            kwargs = {} if mode in ("nearest", "area") else {"align_corners": False, "antialias": size[0] < h}
            images = F.interpolate(images, size=size, mode=mode, **kwargs).clamp_(0.0, 1.0)
            h, w = size
        top, left = (h - self.crop) // 2, (w - self.crop) // 2
        return images[..., top : top + self.crop, left : left + self.crop]

    def target_size(self, image_size: int) -> int:
        """Side of the centre square of an ``image_size`` image that the crop covers."""
        if self.crop_mode == "squash":
            return int(image_size)
        return min(int(image_size), round(int(image_size) * self.crop / self.scale_size))

    def record(self) -> Dict[str, str]:
        """The transform as cache attributes."""
        return {"pretrained_cfg": self.source, "input_size": "x".join(str(v) for v in self.input_size[1:]),
                "crop": str(self.crop),
                "interpolation": self.interpolation, "crop_pct": f"{self.crop_pct:g}", "crop_mode": self.crop_mode,
                "scale_size": str(self.scale_size),
                "normalize_mean": ",".join(f"{v:g}" for v in self.mean),
                "normalize_std": ",".join(f"{v:g}" for v in self.std)}


def preprocessing(model_name: str, crop: Optional[int] = None) -> Preprocessing:
    """timm's evaluation transform of ``model_name`` at ``crop`` (default: its input size)."""
    return Preprocessing(pretrained_cfg(model_name), crop)


# ------------------------------------------------------------------------------ weights


def _hub_files(cfg: Dict[str, Any]) -> Tuple[str, Optional[str], List[str]]:
    """(repository id, revision, candidate file names) of the pretrained weights on the HF hub."""
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise WeightsUnavailableError(
            f"timm's {cfg.get('architecture')}.{cfg.get('tag')} has no weights on the Hugging Face hub; give a "
            f"state dict file ({WEIGHTS_KEY}: /path/to/weights.safetensors) or use weights: random explicitly")
    repo, _, revision = hub_id.partition("@")
    name = cfg.get("hf_hub_filename")
    return repo, revision or None, [name] if name else ["model.safetensors", "pytorch_model.bin"]


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.fspath(constants.HF_HUB_CACHE)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _missing_weights(model_name: str, repo: str, files: List[str], reason: str) -> WeightsUnavailableError:
    cache = _hub_cache()
    folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
    return WeightsUnavailableError(
        f"timm weights of {model_name} ({repo}, {' or '.join(files)}) are not in timm's Hugging Face cache "
        f"{cache} ({reason}).\n"
        f"Either fill the cache on a machine with internet: python -c \"import timm; timm.create_model("
        f"'{model_name}', pretrained=True)\" (or: hf download {repo} {files[0]}), then copy {folder} to {folder} "
        "here (HF_HOME / HF_HUB_CACHE choose the cache folder);\n"
        f"or put the weights file anywhere and set {WEIGHTS_KEY}: /path/to/{files[0]} "
        "(a state dict: .safetensors, or saved with torch.save).\n"
        "Random weights are never used as a fallback; use weights: random explicitly for the untrained control.")


def pretrained_weights_path(model_name: str, download: bool = True) -> Path:
    """The cached file of ``model_name``'s pretrained weights in timm's Hugging Face cache. If absent
    and ``download`` and the hub is not switched off (``HF_HUB_OFFLINE``), it is downloaded once;
    otherwise (or when that fails) :class:`WeightsUnavailableError` says where to put the file."""
    cfg = pretrained_cfg(model_name)
    if cfg.get("custom_load"):
        raise WeightsUnavailableError(
            f"timm's {model_name} loads its pretrained weights with a custom loader; give a timm-format state dict "
            f"({WEIGHTS_KEY}: /path/to/file) or use weights: random")
    repo, revision, files = _hub_files(cfg)
    from huggingface_hub import try_to_load_from_cache

    for name in files:
        found = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    if not download or _offline():
        raise _missing_weights(model_name, repo, files, "HF_HUB_OFFLINE is set" if _offline() else "not cached")
    from huggingface_hub import hf_hub_download

    errors = []
    for name in files:
        try:
            return Path(hf_hub_download(repo, name, revision=revision))
        except Exception as err:  # noqa: BLE001 - offline, DNS, HTTP 404 for the other file name ...
            errors.append(f"{name}: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
    raise _missing_weights(model_name, repo, files, "download failed: " + "; ".join(errors))


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict file: safetensors (no code can run), or ``torch.save`` output read with
    ``torch.load(weights_only=True)`` (:func:`preimage.torch_files.load_torch`: pickled objects are refused,
    :class:`preimage.torch_files.UnsafeFile`). A checkpoint that wraps the state dict under
    ``state_dict`` or ``model`` (as training scripts save them) is unwrapped."""
    from preimage.atomic_files import DamagedFile
    from preimage.torch_files import load_torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(os.fspath(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on bad headers
            raise DamagedFile(path, " ".join(str(err).split())[:300], "replace it with a state dict file") from None
    else:
        state = load_torch(path, advice="timm weights files must hold a state dict (.safetensors, or "
                                              "torch.save(model.state_dict(), path))")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and not any(
                isinstance(v, torch.Tensor) for v in state.values()):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return state


def _create(model_name: str, crop: int, cfg: Dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` built for ``crop``-px inputs where the model takes an ``img_size``."""
    timm = _timm()
    size = (cfg.get("input_size") or (3, 224, 224))[-1]
    if crop != size:
        try:
            return timm.create_model(model_name, img_size=crop, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(model_name, **kwargs)


def _classes_in(state: Dict[str, torch.Tensor], cfg: Dict[str, Any]) -> Optional[int]:
    """Output size of the classifier (``cfg['classifier']``) in ``state``, 0 if it has none."""
    classifier = cfg.get("classifier")
    names = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in names:
        weight = state.get(f"{name}.weight")
        if isinstance(weight, torch.Tensor):
            return int(weight.shape[0])
    return 0 if names else None  # a file without the classifier: the model is built without one


def load_timm_model(model_name: str, weights: str | os.PathLike = "pretrained", seed: int = 0,
                    crop: Optional[int] = None, download: bool = True) -> Tuple[LoadedModel, Preprocessing]:
    """timm's ``model_name`` with ``weights`` ("pretrained", "random" or a path), in eval mode on
    the CPU with frozen parameters, built for ``crop``; and its preprocessing."""
    spec = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"weights must be 'pretrained', 'random' or a path, not {weights!r}")
    if spec.startswith("imagenet"):
        raise ValueError(f"timm:{model_name}: weights {spec!r}: timm models take 'pretrained' (the weights of the "
                         "model's pretrained tag), 'random' or a path")
    cfg = pretrained_cfg(model_name)
    prep = Preprocessing(cfg, crop)
    tag = prep.source
    if spec == "random":
        seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _create(model_name, prep.crop, cfg, pretrained=False)
        loaded = LoadedModel(model, f"random:{seed}", "random", f"{tag} (untrained, random:{seed})", None,
                             prep.mean, prep.std)
    else:
        if spec == "pretrained":
            path, source = pretrained_weights_path(model_name, download=download), "pretrained"
        else:
            path, source = Path(spec).expanduser(), "path"
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"weights file for timm:{model_name} ({WEIGHTS_KEY}: {spec!r}) not found at {path}; weights must be "
                    "'pretrained' (timm's Hugging Face cache), 'random' or the path of a state dict file. "
                    "Random weights are never used as a fallback.")
        state = read_state_dict(path)
        classes = _classes_in(state, cfg)
        # the config's class count is the file's too: timm loads non-strictly (keeping the random
        # classifier) when they differ, and a partly loaded network must never pass for a loaded one
        overlay = {"state_dict": state, "file": None, "hf_hub_id": None, "url": None}
        kwargs = {}
        if classes is not None and classes != cfg.get("num_classes"):
            overlay["num_classes"], kwargs["num_classes"] = classes, classes
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)  # every parameter is overwritten; keep construction deterministic
            try:
                # timm's own loading path (checkpoint filter: key conversion, position-embedding
                # resampling to the crop's grid), fed the state dict read here
                model = _create(model_name, prep.crop, cfg, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            except RuntimeError as err:
                raise ValueError(f"{path} is not a state dict of timm's {model_name}: "
                                 f"{' '.join(str(err).split())[:500]}") from None
        digest = sha256_file(path)
        label = f"{tag} (pretrained)" if source == "pretrained" else f"{tag} (weights {path.name}, sha256 {digest[:12]})"
        loaded = LoadedModel(model, digest, source, label, None, prep.mean, prep.std, os.fspath(path), tag)
    loaded.model.eval()
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return loaded, prep


# ------------------------------------------------------------------------------ representation


def _parse(name: str) -> Tuple[str, str]:
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "timm" or not parts[1] or not parts[2]:
        raise ValueError(f"representation name {name!r} must be timm:<model>:<node>, e.g. "
                         "timm:vit_small_patch14_dinov2:blocks.11 or timm:convnext_tiny:stages.2")
    return parts[1], parts[2]


@register("timm", prefix=True)
class TimmRepresentation(CNNRepresentation):
    """``timm:<model>:<node>`` — the output of graph node ``<node>`` of timm's ``<model>``."""

    family = "timm"
    emits_tokens = True  # any model, ViTs included

    def __init__(self, name: str, weights: str = "pretrained", seed: int = 0, crop: Optional[int] = None,
                 **extra: Any) -> None:
        if extra:
            raise TypeError(f"{name}: unknown parameter(s) {', '.join(sorted(extra))}; known: weights, seed, crop")
        self.model_name, _ = _parse(name)
        params: Dict[str, Any] = {"weights": weights, "seed": seed}
        if crop is not None:
            params["crop"] = crop
        super().__init__(**params)
        loaded, self.preprocessing = load_timm_model(self.model_name, weights, int(seed), crop)
        self._adopt(loaded, self.preprocessing.crop)
        self.model = loaded.model
        self.prefix_tokens, self.class_tokens, self.grid = _token_layout(self.model, self.preprocessing.crop)
        self.channels_last = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self._cut(name)

    @classmethod
    def network_of(cls, name: str) -> Optional[str]:
        """The timm model: ``convnext_tiny`` for ``timm:convnext_tiny:stages.2``."""
        return _parse(name)[0]

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """Why ``name`` cannot be computed (a malformed name, an unknown model or node), or None: the
        module's :func:`name_problem`."""
        return name_problem(name)

    def _cut(self, name: str) -> None:
        model_name, node = _parse(name)
        if model_name != self.model_name:
            raise ValueError(f"{name!r} is no node of timm:{self.model_name}")
        self.name, self.node = name, node
        self.net = _extractor(self.model, {node: "out"}, self.model_name)
        shape = self.output_shape(self.crop, self.crop)
        if len(shape) not in (1, 2, 3):
            raise ValueError(f"{name}: node output has per-image shape {shape}; representations must be (C, h, w), "
                             "(D,) or tokens (T, D)")
        if len(shape) == 2:
            self.decoder_kind(shape)  # a token sequence without a square patch grid is refused here

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] → timm's evaluation transform, normalised (module docstring)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = self.preprocessing(images.to(self.device, torch.float32))
        return (x - self._mean) / self._std

    def target_size(self, image_size: int) -> int:
        """The centre square of an ``image_size`` image that timm's centre crop keeps."""
        return self.preprocessing.target_size(image_size)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._node_output(self.net(x)["out"])

    def _forward_nodes(self, x: torch.Tensor, nodes: Sequence[CNNRepresentation]) -> List[torch.Tensor]:
        names = [node.node for node in nodes]
        key = tuple(names)
        if key not in self._node_passes:
            outputs = {node: f"node{k}" for k, node in enumerate(dict.fromkeys(names))}
            self._node_passes[key] = (_extractor(self.model, outputs, self.model_name), [outputs[n] for n in names])
        net, keys = self._node_passes[key]
        out = net(x)
        return [node._node_output(out[k]) for node, k in zip(nodes, keys)]

    def to(self, device: torch.device | str) -> "TimmRepresentation":
        super().to(device)
        self.model.to(device)
        return self

    def _node_output(self, out: Any) -> torch.Tensor:
        """The node's value as features: channels-last maps permuted to (N, C, h, w); a ViT's token
        sequence without its non-class prefix tokens (registers, distillation token)."""
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.name}: node output is a {type(out).__name__}, not a tensor")
        if self.channels_last and out.dim() == 4:
            return out.permute(0, 3, 1, 2)
        extra = self.prefix_tokens - self.class_tokens
        if out.dim() == 3 and extra and self.grid and out.shape[1] == self.prefix_tokens + self.grid ** 2:
            return torch.cat([out[:, : self.class_tokens], out[:, self.prefix_tokens :]], dim=1)
        return out

    def token_layout(self) -> str:
        """What a token node keeps: class token, patch grid, dropped prefix tokens."""
        if not self.grid:
            return "no tokens"
        dropped = self.prefix_tokens - self.class_tokens
        text = f"{'class token + ' if self.class_tokens else ''}{self.grid}x{self.grid} patch tokens (row-major)"
        return text + (f"; {dropped} other prefix token(s) dropped (registers / distillation)" if dropped else "")

    @staticmethod
    def categories_for(name: str, weights: Any = "pretrained") -> Optional[list]:
        """timm's configs carry no class names offline: None."""
        return None

    def identity(self) -> Dict[str, str]:
        timm = _timm()
        ident = super().identity()
        ident.pop("torchvision", None)
        ident.update({"timm": timm.__version__, "model": self.model_name, "node": self.node,
                      "tokens": self.token_layout()})
        ident.update(self.preprocessing.record())
        return ident


def _token_layout(model: torch.nn.Module, crop: int) -> Tuple[int, int, int]:
    """(prefix tokens, class tokens, patch grid side) of a ViT-like timm model at ``crop``; zeros
    for models without a patch embedding. A crop that is no multiple of the patch size is refused."""
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if patch is None or not hasattr(model, "num_prefix_tokens"):
        return 0, 0, 0
    p = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    if crop % p:
        raise ValueError(f"crop {crop} is not a multiple of the patch size {p}")
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    classes = 1 if getattr(model, "cls_token", None) is not None else 0
    return prefix, classes, crop // p


def _extractor(model: torch.nn.Module, outputs: Dict[str, str], model_name: str) -> torch.nn.Module:
    """timm's FX feature extractor for ``outputs`` (node → key), eval mode, pruned to the deepest
    node; a node the model does not have is a ValueError listing valid names (the graph's node
    names are traced only then)."""
    from timm.models import create_feature_extractor, get_graph_node_names

    model.eval()
    try:
        extractor = create_feature_extractor(model, return_nodes=dict(outputs))
    except ValueError:
        _, nodes = get_graph_node_names(model)
        for node in outputs:
            if not has_node(nodes, node):
                raise ValueError(_unknown_node(model_name, node, nodes)) from None
        raise
    return _without_asserts(extractor.eval())


def _unknown_node(model_name: str, node: str, nodes: Sequence[str]) -> str:
    modules = [n for n in dict.fromkeys(".".join(n.split(".")[:2]) for n in nodes) if "." in n]
    head = node.split(".")[0]
    candidates = [n for n in modules if n.split(".")[0] == head] or list(dict.fromkeys(n.split(".")[0] for n in nodes))
    return (f"timm's {model_name} has no graph node {node!r}; e.g. {', '.join(_sample(candidates, 12))} "
            "(all: timm.models.get_graph_node_names(timm.create_model(model))[1])")


@functools.lru_cache(maxsize=None)
def graph_nodes(model_name: str) -> Tuple[str, ...]:
    """The eval-mode graph nodes of timm's ``model_name``, found without weights (built on the
    ``meta`` device where the model allows it, else on the CPU). Cached per process."""
    timm = _timm()
    from timm.models import get_graph_node_names

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                model = timm.create_model(model_name, pretrained=False)
            nodes = get_graph_node_names(model.eval())[1]
        except Exception:  # noqa: BLE001 - a model whose construction or trace needs real tensors
            with torch.random.fork_rng(devices=[]):
                model = timm.create_model(model_name, pretrained=False)
            nodes = get_graph_node_names(model.eval())[1]
    return tuple(nodes)


def name_problem(name: str) -> Optional[str]:
    """Why ``timm:<model>:<node>`` cannot be computed (a malformed name, an unknown model or node),
    or None. Checked when the configuration is validated, before any job runs."""
    try:
        model_name, node = _parse(name)
        pretrained_cfg(model_name)
    except (ValueError, ModuleNotFoundError) as err:
        return f"{name!r}: {err}"
    nodes = graph_nodes(model_name)
    if not has_node(nodes, node):
        return f"{name!r}: {_unknown_node(model_name, node, nodes)}"
    return None


def weights_problem(name: str, weights: Any) -> Optional[str]:
    """Why ``weights`` of ``timm:<model>:<node>`` cannot be had without a download, or None:
    ``pretrained`` weights that are not in timm's cache (checked when the configuration is
    validated; the job would try a download, so this is a problem only when the hub is off)."""
    if weights != "pretrained":
        return None
    try:
        model_name, _ = _parse(name)
        pretrained_weights_path(model_name, download=False)
    except ValueError:
        return None  # name_problem's business
    except WeightsUnavailableError as err:
        if not _offline():
            return None  # the feature job downloads them
        return (f"{name}: {str(err).splitlines()[0]} Put them there, or set {WEIGHTS_KEY} to a state dict file "
                "(docs/timm.md)")
    return None

"""The ``weights`` option shared by every CNN representation (AlexNet ``conv1`` … ``fc8`` and
``torchvision:<model>:<node>``).

Three choices, never a silent fallback from one to another:

``"imagenet"``
    torchvision's official ImageNet weights through torchvision's own weights API
    (``torchvision.models.get_model_weights(model)``). ``IMAGENET1K_V1`` is preferred for
    every model that has it (for AlexNet it is the only one): it is the original recipe, it
    never changes, and for most models it is what ``pretrained=True`` meant for years, so
    numbers stay comparable across torchvision versions. ``DEFAULT`` can move to a newer
    recipe between releases, so it is used only for models without ``IMAGENET1K_V1``. Another
    enum member can be named explicitly: ``"imagenet:IMAGENET1K_V2"``.

    The state dict lives where torch.hub keeps it: ``$TORCH_HOME/hub/checkpoints/<file name
    of the weights' URL>`` (``torch.hub.get_dir()``, which honours ``TORCH_HOME`` and
    ``XDG_CACHE_HOME``). If the file is not there we try to download it once; if that fails
    (offline compute node) :class:`WeightsUnavailableError` names the exact path to put the
    file at and the URL to get it from. Once the file is cached, torchvision's builder loads it
    from the cache: ``check_hash`` in ``torch.hub.load_state_dict_from_url`` only applies to a
    download, so a cached file is never re-verified or re-fetched. We compare the file's
    sha256 with the hash prefix in the official file name ourselves and warn on a mismatch
    (the recorded identity is the file's real sha256 either way). torch.hub would unpickle the
    cached file with ``weights_only=False``; we make that load weights-only, so a cached file
    holding pickled objects is refused before any of its code runs.

``"random"``
    The untrained control: torchvision's own initialisation under ``torch.manual_seed(seed)``
    (in a forked RNG, so the global RNG is left alone). Identity ``random:<seed>``.

a filesystem path
    A state dict saved with ``torch.save(model.state_dict(), path)``, loaded with
    ``torch.load(path, map_location="cpu", weights_only=True)`` into the untrained
    architecture (strict key matching). A missing file raises :class:`WeightsUnavailableError`;
    a file holding pickled objects (which could run code) raises
    :class:`preimage.torch_files.UnsafeFile`, an unreadable one :class:`preimage.atomic_files.DamagedFile`.

The identity of ``imagenet`` and path weights is the sha256 of the state-dict file, computed
once per process (an in-memory cache keyed by path, size and mtime; nothing is written next
to the file). Normalisation (mean/std) comes from the weights' transforms; ``random`` and path
weights use the same ImageNet statistics, so all three see identically preprocessed inputs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from preimage.deferred import torch

__all__ = [
    "WeightsUnavailableError",
    "LoadedModel",
    "load_model",
    "resolve_imagenet_weights",
    "cached_weights_path",
    "sha256_file",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# ImageNet statistics, as in every torchvision ImageNet ``transforms()`` (checked in tests).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


class WeightsUnavailableError(RuntimeError):
    """Weights that were asked for cannot be found or fetched (never replaced by random ones)."""


@dataclass
class LoadedModel:
    """A torchvision model with its weights and everything a representation records about them."""

    model: torch.nn.Module
    identity: str  # sha256 of the state-dict file, or "random:<seed>"
    source: str  # "imagenet", "random" or "path"
    label: str  # human label for figures, e.g. "AlexNet (ImageNet)"
    categories: Optional[List[str]]  # ImageNet class names for "imagenet", else None
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    path: Optional[str] = None  # the state-dict file (imagenet and path)
    weights_name: Optional[str] = None  # e.g. "AlexNet_Weights.IMAGENET1K_V1"


# --------------------------------------------------------------------------------------
# hashing


_SHA_CACHE: Dict[Tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (:func:`preimage.atomic_files.file_sha256`), cached in memory per (path, size,
    mtime): a weights file is hashed once per process."""
    from preimage import atomic_files

    p = os.path.realpath(os.fspath(path))
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = atomic_files.file_sha256(p, chunk)
    return _SHA_CACHE[key]


# --------------------------------------------------------------------------------------
# imagenet (torchvision weights API)


def resolve_imagenet_weights(model_name: str, member: Optional[str] = None):
    """The torchvision weights enum member for ``model_name``: ``member`` if given, else
    ``IMAGENET1K_V1`` when the model has it, else ``DEFAULT``."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(model_name)
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"torchvision has no weights for model {model_name!r}: {err}"
        ) from None
    names = [w.name for w in enum]
    if member is not None:
        if member == "DEFAULT":
            return enum.DEFAULT
        if member not in names:
            raise ValueError(f"{enum.__name__} has no member {member!r}; available: {', '.join(names)}")
        return enum[member]
    return enum["IMAGENET1K_V1"] if "IMAGENET1K_V1" in names else enum.DEFAULT


def cached_weights_path(weights: Any) -> Path:
    """Where torch.hub caches (and torchvision's builders look for) ``weights``' state dict."""
    file_name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _download(url: str, dst: Path) -> None:
    """Fetch ``url`` to ``dst`` (atomically: torch.hub writes a temp file and renames).
    A module-level function so tests can replace it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    m = _HASH_IN_NAME.search(dst.name)
    torch.hub.download_url_to_file(url, os.fspath(dst), hash_prefix=m.group(1) if m else None, progress=False)


def _missing_message(what: str, path: Path, url: Optional[str], reason: str = "") -> str:
    lines = [f"{what}: file not found at {path}" + (f" ({reason})" if reason else "")]
    if url:
        lines.append(f"Download {url}")
        lines.append(f"and put it at {path}")
        lines.append(
            f"(e.g. on a machine with internet: wget -O {path.name} {url}; then copy it there; "
            "the directory is $TORCH_HOME/hub/checkpoints, TORCH_HOME defaults to ~/.cache/torch)."
        )
    lines.append("Random weights are never used as a fallback; use weights: random explicitly for the untrained control.")
    return "\n".join(lines)


def _ensure_cached(weights: Any) -> Path:
    path = cached_weights_path(weights)
    if path.is_file():
        return path
    try:
        _download(weights.url, path)
    except Exception as err:  # offline, DNS, HTTP error, hash mismatch, disk ...
        raise WeightsUnavailableError(
            _missing_message(
                f"torchvision weights {type(weights).__name__}.{weights.name} are not cached and could not be downloaded",
                path,
                weights.url,
                reason=f"{type(err).__name__}: {err}",
            )
        ) from err
    if not path.is_file():
        raise WeightsUnavailableError(_missing_message("download produced no file", path, weights.url))
    return path


# --------------------------------------------------------------------------------------
# the entry point


@contextlib.contextmanager
def _weights_only_loads(path: Path):
    """Make every ``torch.load`` in the block weights-only (torch.hub passes ``weights_only=False``
    for cached state dicts); errors name ``path``."""
    from preimage import atomic_files, torch_files

    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    except pickle.UnpicklingError:
        raise torch_files.UnsafeFile(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors and plain values, and "
            "loading them could run code; delete it (the official file is fetched again, or copy it there)"
        ) from None
    except (RuntimeError, EOFError) as err:
        damaged = ("PytorchStreamReader", "zip archive", "Ran out of input", "truncated")
        if not isinstance(err, EOFError) and not any(sign in str(err) for sign in damaged):
            raise
        raise atomic_files.DamagedFile(path, " ".join(str(err).split())[:300],
                                "delete it (the official file is fetched again, or copy it there)") from None
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def _display(model_name: str) -> str:
    return {"alexnet": "AlexNet", "vgg16": "VGG-16", "vgg19": "VGG-19"}.get(model_name, model_name)


def load_model(model_name: str, weights: str | os.PathLike = "imagenet", seed: int = 0) -> LoadedModel:
    """Build torchvision model ``model_name`` with ``weights`` ("imagenet", "imagenet:<MEMBER>",
    "random" or a path); the model is returned in eval mode on the CPU with frozen parameters."""
    import torchvision

    if model_name not in torchvision.models.list_models():
        known = ", ".join(torchvision.models.list_models(module=torchvision.models))
        raise ValueError(f"unknown torchvision model {model_name!r}; classification models: {known}")

    spec = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(spec, str):
        raise TypeError(f"weights must be 'imagenet', 'random' or a path, not {weights!r}")

    display = _display(model_name)
    if spec == "imagenet" or spec.startswith("imagenet:"):
        member = spec.split(":", 1)[1] if ":" in spec else None
        w = resolve_imagenet_weights(model_name, member)
        path = _ensure_cached(w)
        digest = sha256_file(path)
        m = _HASH_IN_NAME.search(path.name)
        if m and not digest.startswith(m.group(1)):
            warnings.warn(
                f"{path} has sha256 {digest[:12]}…, not the {m.group(1)} in torchvision's file name: "
                "it is not the official file; features are recorded under its real sha256",
                stacklevel=2,
            )
        # The builder finds the cached file via torch.hub and loads it (no download, no hash
        # check); it also applies model-specific details (num_classes from the categories,
        # key remapping for old checkpoints, transform_input for inception ...).
        with _weights_only_loads(path):
            model = torchvision.models.get_model(model_name, weights=w)
        tf = w.transforms()
        mean = tuple(float(v) for v in tf.mean)
        std = tuple(float(v) for v in tf.std)
        label = f"{display} (ImageNet)" if w.name == "IMAGENET1K_V1" else f"{display} (ImageNet {w.name})"
        loaded = LoadedModel(
            model, digest, "imagenet", label, list(w.meta["categories"]), mean, std, os.fspath(path),
            f"{type(w).__name__}.{w.name}",
        )
    elif spec == "random":
        seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(model_name, weights=None)
        loaded = LoadedModel(
            model, f"random:{seed}", "random", f"{display} (untrained, random:{seed})", None, IMAGENET_MEAN, IMAGENET_STD
        )
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                _missing_message(f"weights file for {model_name} (weights: {spec!r})", path, None)
                + "\nweights must be 'imagenet', 'random' or the path of a state dict saved with torch.save(model.state_dict(), path)."
            )
        from preimage import torch_files

        state = torch_files.load_torch(path, advice="weights files must hold a state dict saved with "
                                               "torch.save(model.state_dict(), path)")
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
        num_classes = _num_classes(state)
        kwargs = {"num_classes": num_classes} if num_classes not in (None, 1000) else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # parameters are all overwritten; keep construction deterministic
            model = torchvision.models.get_model(model_name, weights=None, **kwargs)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a state dict of torchvision's {model_name}: {err}") from None
        digest = sha256_file(path)
        loaded = LoadedModel(
            model, digest, "path", f"{display} (weights {path.name}, sha256 {digest[:12]})", None,
            IMAGENET_MEAN, IMAGENET_STD, os.fspath(path),
        )

    loaded.model.eval()
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return loaded


def categories_of(model_name: str, weights: str | os.PathLike) -> Optional[List[str]]:
    """Class names of ``weights`` without loading them: torchvision's metadata for "imagenet",
    None for "random" and for state-dict files (which carry no names)."""
    spec = os.fspath(weights)
    if spec == "imagenet" or spec.startswith("imagenet:"):
        member = spec.split(":", 1)[1] if ":" in spec else None
        return list(resolve_imagenet_weights(model_name, member).meta["categories"])
    return None


def _num_classes(state: Dict[str, Any]) -> Optional[int]:
    """Classes of a classification state dict (the output size of its last weight), if evident."""
    last = [k for k in state if k.endswith(".weight") and isinstance(state[k], torch.Tensor) and state[k].dim() == 2]
    return int(state[last[-1]].shape[0]) if last else None

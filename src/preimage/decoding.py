"""A trained decoder as a function from features to images: the one inference path (paper §3, §5.1).

:func:`load_decoder` rebuilds the network of ``decoder.pt`` (written by :mod:`preimage.train`);
:class:`TrainedDecoder` runs it the way every later stage needs it: features multiplied by the
decoder's stored ``feature_scale`` (the 1 / RMS of its training features), decoded in batches,
predictions smaller than the region the representation sees upsampled bilinearly to it (§5.1:
the fc decoders predict a downsampled image, Table 7), and clamped to the valid range [0, 1].
Evaluation (:mod:`preimage.evaluate`), the analyses (:mod:`preimage.analyses`), the
Mahendran & Vedaldi comparison (:mod:`preimage.baselines`) and ``preimage invert``
(:mod:`preimage.invert`) all decode through it.

Provenance
----------
A decoder inverts one representation Φ computed in one way; to apply it to new images, Φ must be
computed exactly as for its training features. ``decoder.pt`` therefore records, under
``meta["provenance"]`` (:func:`feature_provenance`, written by :mod:`preimage.train`):

``version``
    :data:`PROVENANCE_VERSION` (1).
``representation``, ``params``
    the name and parameters of ``preimage.features.create`` that computed the training features.
``identity``
    the representation's identity as its feature cache recorded it (weights, crop, normalisation,
    library versions).
``weights``
    the weights' identity: the sha256 of the state-dict file, or ``random:<seed>``; None for
    representations without weights (HOG, SIFT, LBP).
``weights_file``
    for an autoencoder (§5.2), the file of its fine-tuned encoder, relative to the decoder's folder
    (``encoder.pt``); None otherwise. A name leading out of that folder is never read.
``image_size``, ``target_size``
    S of the data stage (every image resized to a shorter side of S and centre-cropped to S×S,
    :func:`preimage.data.resize_center_crop`) and the side of the centre region Φ sees, which the
    decoder reconstructs.
``feature_dtype``
    the storage type of the training features (``float16`` caches round them; new features are
    rounded the same way before decoding).
``images_sha256``
    the sha256 of the training image store (for the record).

:meth:`TrainedDecoder.representation` recreates Φ from it and refuses weights whose identity
differs from the recorded one (:class:`WeightsMismatch`); a file without a provenance record is
no decoder (:class:`NotADecoder`), one whose record is of a newer version than this preimage reads
is refused (:class:`NoProvenance`).

A decoder file is input like any other: it never decides alone which file is read or how much
memory is allocated. :func:`load_decoder` checks the metadata's types and ranges and compares the
network it describes, built on the ``meta`` device, with the file's tensors before building it;
:attr:`TrainedDecoder.provenance` checks the provenance (a known representation, image sizes and
``crop`` within :func:`largest_image_side`, a feature type a cache stores); a weights file's sha256
is compared with the recorded one before the file is loaded. Each failure is one
:class:`NotADecoder` (or :class:`WeightsMismatch`) line naming the file.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np
import torch

from preimage import atomic_files, image_store, metrics, torch_files
from preimage.decoders import DECODER_KINDS, UPSAMPLE_MODES, Decoder, build_decoder
from preimage.devices import resolve_device
from preimage.features.cache import FeatureStore

__all__ = ["PROVENANCE_VERSION", "NoProvenance", "NotADecoder", "TrainedDecoder", "WeightsMismatch",
           "feature_provenance", "load_decoder"]

#: Version of ``meta["provenance"]`` in ``decoder.pt`` (module docstring).
PROVENANCE_VERSION = 1
_META_KEYS = ("kind", "feature_shape", "image_size", "output_size", "width", "upsample", "feature_scale",
              "representation", "provenance")


class NotADecoder(atomic_files.DamagedFile):
    """A readable file that is not a decoder written by :mod:`preimage.train`."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        OSError.__init__(self, f"{self.path} is not a preimage decoder ({reason})")


class NoProvenance(ValueError):
    """The decoder records how its features were computed in a version newer than this preimage reads."""


class WeightsMismatch(ValueError):
    """The weights in use are not those the decoder's training features were computed with."""


def feature_provenance(attrs: Mapping[str, Any], **overrides: Any) -> Dict[str, Any]:
    """``meta["provenance"]`` of a decoder trained on the feature cache whose attributes are
    ``attrs`` (:func:`preimage.features.cache.compute_cache`); ``overrides`` replace entries."""
    identity = attrs.get("identity")
    identity = dict(identity) if isinstance(identity, Mapping) else {}
    record = {
        "version": PROVENANCE_VERSION,
        "representation": str(attrs["representation"]),
        "params": dict(attrs.get("params") or {}),
        "identity": {str(k): str(v) for k, v in identity.items()},
        "weights": identity.get("weights"),
        "weights_file": None,
        "image_size": int(attrs["image_size"]),
        "target_size": int(attrs["target_size"]),
        "feature_dtype": str(attrs.get("dtype", "float32")),
        "images_sha256": attrs.get("images_sha256"),
    }
    record.update(overrides)
    return record


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Tuple[Decoder, Dict[str, Any]]:
    """Rebuild a trained decoder from ``decoder.pt``: returns (model in eval mode, metadata dict).

    Read with ``weights_only=True``: a file holding anything but tensors and plain values is
    refused (:class:`preimage.torch_files.UnsafeFile`), a damaged one named (``DamagedFile``), a
    readable file that holds no decoder (another network's state dict, a checkpoint) named as
    such (:class:`NotADecoder`, a ``DamagedFile``). A missing file is a ``FileNotFoundError``
    naming it.

    The file never decides alone how much memory is allocated: its metadata is checked for type
    and range (:func:`_check_meta`), the network it describes is first built on PyTorch's
    ``meta`` device (no storage), and only when every tensor of the file has the shape of that
    network's parameter of the same name, so that the network is no larger than the tensors the
    file really holds, is it built and loaded.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"cannot read decoder {path}: no such file")
    if not source.is_file():
        raise NotADecoder(path, "not a file")
    if not torch_files.is_torch_file(source):
        raise NotADecoder(path, "not a file torch.save writes")
    payload = torch_files.load_torch(path)
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise NotADecoder(path, "no 'meta' and 'state_dict'")
    meta, state = payload["meta"], payload["state_dict"]
    missing = [key for key in _META_KEYS if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise NotADecoder(path, f"its metadata lacks {', '.join(missing)}")
    _check_meta(path, meta)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise NotADecoder(path, "its state_dict is not a mapping of names to tensors")
    try:
        with torch.device("meta"):
            skeleton = _network(meta)
    except (ValueError, TypeError, OverflowError) as err:
        raise NotADecoder(path, " ".join(str(err).split())[:300]) from None
    _check_tensors(path, meta, skeleton, state)
    try:
        model = _network(meta)
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as err:
        raise NotADecoder(path, " ".join(str(err).split())[:300]) from None
    return model.to(device).eval(), meta


def _network(meta: Mapping[str, Any]) -> Decoder:
    """The untrained network ``meta`` describes (on the default device: ``meta`` for a skeleton)."""
    model = build_decoder(meta["kind"], tuple(int(v) for v in meta["feature_shape"]), int(meta["image_size"]),
                          width=float(meta["width"]), upsample=meta["upsample"])
    if meta.get("residual"):
        model.start_from()  # the mean-image offset's buffer, filled by the state dict
    return model


def _whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value) \
        and value > 0


@functools.lru_cache(maxsize=None)
def largest_image_side() -> int:
    """The largest image side the workflow works at: the maximum of ``data.size`` in the
    configuration schema. No decoder reconstructs, and no representation it records sees,
    larger images."""
    from preimage.config import load_schema

    return int(load_schema()["properties"]["data"]["properties"]["size"]["maximum"])


@functools.lru_cache(maxsize=None)
def feature_dtypes() -> Tuple[str, ...]:
    """The storage types of feature caches: ``features.dtype``'s choices in the configuration schema."""
    from preimage.config import load_schema

    return tuple(load_schema()["properties"]["features"]["properties"]["dtype"]["enum"])


#: At most this many feature values per image (64 MiB of float32; the paper's largest, SIFT
#: 64×64×133, has 0.5 M).
MAX_FEATURES_PER_IMAGE = 1 << 24


def _check_meta(path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """:class:`NotADecoder` unless the values that size the network are of the types and in the
    ranges :mod:`preimage.train` writes."""
    side = largest_image_side()
    shape = meta["feature_shape"]
    problems = []
    if meta["kind"] not in DECODER_KINDS:
        problems.append(f"kind {meta['kind']!r} is not one of {', '.join(DECODER_KINDS)}")
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 3 or not all(_whole(v) and v > 0 for v in shape):
        problems.append(f"feature_shape {shape!r} is not 1 to 3 positive whole numbers")
    elif math.prod(int(v) for v in shape) > MAX_FEATURES_PER_IMAGE:
        problems.append(f"feature_shape {tuple(shape)} has more than {MAX_FEATURES_PER_IMAGE} values")
    for key in ("image_size", "output_size"):
        if not _whole(meta[key]) or not 2 <= meta[key] <= 2 * side:
            problems.append(f"{key} {meta[key]!r} is not a whole number from 2 to {2 * side}")
    if _whole(meta["image_size"]) and meta["image_size"] > side:
        problems.append(f"image_size {meta['image_size']} exceeds the largest image side, {side} px")
    for key in ("width", "feature_scale"):
        if not _finite_positive(meta[key]):
            problems.append(f"{key} {meta[key]!r} is not a positive number")
    if meta.get("residual") not in (None, False, True):
        problems.append(f"residual {meta['residual']!r} is not true or false")
    if meta["upsample"] not in UPSAMPLE_MODES:
        problems.append(f"upsample {meta['upsample']!r} is not one of {', '.join(UPSAMPLE_MODES)}")
    if problems:
        raise NotADecoder(path, "its metadata is invalid: " + "; ".join(problems))


def _check_tensors(path: str | os.PathLike, meta: Mapping[str, Any], skeleton: Decoder,
                   state: Mapping[str, torch.Tensor]) -> None:
    """:class:`NotADecoder` unless ``state`` holds exactly the parameters of ``skeleton`` (the
    network ``meta`` describes, built on the ``meta`` device), each of its shape, and the network
    predicts the recorded ``output_size``."""
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    problems = []
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    wrong = [f"{name} {found[name]} (expected {expected[name]})" for name in expected
             if name in found and found[name] != expected[name]]
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    if not problems and int(skeleton.output_size) != int(meta["output_size"]):
        problems.append(f"it predicts {skeleton.output_size} px, not the recorded output_size {meta['output_size']}")
    if problems:
        parameters = sum(math.prod(s) for s in expected.values())
        raise NotADecoder(path, f"its tensors are not those of the {meta['kind']} network its metadata describes "
                                f"(width {meta['width']}: {parameters} parameters): " + "; ".join(problems))


class TrainedDecoder:
    """The decoder of ``decoder_path`` as a function from features to images (float [0, 1] CPU
    tensors at ``image_size``).

    ``image_size`` is the side of the region the decoder reconstructs (the centre crop its
    representation sees, paper Table 1), ``output_size`` the side it predicts natively;
    :meth:`images` opens an image store cropped to that region, the decoder's targets.
    ``device`` is a name for :func:`preimage.devices.resolve_device` (``auto``, ``cpu``,
    ``cuda:N``) or a ``torch.device``.
    """

    def __init__(self, decoder_path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.path = Path(decoder_path)
        self.model, self.meta = load_decoder(decoder_path, self.device)
        self.feature_scale = float(self.meta["feature_scale"])
        self.image_size = int(self.meta["image_size"])
        self.output_size = int(self.meta["output_size"])
        self.representation_name = str(self.meta["representation"])
        self.label = str(self.meta.get("label") or self.representation_name)
        self._provenance: Optional[Dict[str, Any]] = None

    @torch.no_grad()
    def decode(self, features) -> torch.Tensor:
        """One batch: features ``(n, *feature_shape)`` (tensor or array) → images ``(n, 3, S, S)``."""
        f = torch.as_tensor(features, dtype=torch.float32).to(self.device)
        x = self.model(f * self.feature_scale).float()
        if x.shape[-1] != self.image_size:
            x = metrics.upsample_to(x, self.image_size)
        return x.clamp_(0, 1).cpu()

    def __call__(self, features, batch_size: int = 64) -> torch.Tensor:
        """All of ``features`` in batches of ``batch_size``."""
        out = [self.decode(features[start:start + batch_size]) for start in range(0, len(features), batch_size)]
        return torch.cat(out) if out else torch.empty(0, 3, self.image_size, self.image_size)

    def reconstruct(self, features: FeatureStore, batch_size: int = 64) -> Iterator[Tuple[int, torch.Tensor]]:
        """Stream a feature store: ``(offset, reconstructions)`` per batch of ``batch_size`` rows."""
        for offset, f in features.batches(batch_size):
            yield offset, self.decode(f)

    def images(self, path: str | os.PathLike) -> image_store.ImageStore:
        """The image store at ``path`` as this decoder's targets: centre-cropped to its region."""
        return image_store.ImageStore(path, crop=self.image_size)

    # ---- new images (``preimage invert``)

    @property
    def feature_shape(self) -> Tuple[int, ...]:
        return tuple(int(v) for v in self.meta["feature_shape"])

    @property
    def provenance(self) -> Dict[str, Any]:
        """``meta["provenance"]`` (module docstring), checked once (:meth:`_check_provenance`);
        :class:`NoProvenance` for a record of a newer version than this preimage reads."""
        if self._provenance is None:
            record = self.meta["provenance"]
            if not isinstance(record, dict):
                raise NotADecoder(self.path, f"its provenance {record!r} is not a record")
            version = record.get("version")
            if _whole(version) and version > PROVENANCE_VERSION:
                raise NoProvenance(f"{self.path} records its provenance in version {version}, newer than this "
                                   f"preimage reads ({PROVENANCE_VERSION}); update preimage")
            self._check_provenance(record)
            self._provenance = record
        return self._provenance

    def _check_provenance(self, record: Mapping[str, Any]) -> None:
        """:class:`NotADecoder` unless every value of the provenance that decides which files are
        read and how large the images are is of the type and in the range :mod:`preimage.train`
        writes: a known representation, images of at most :func:`largest_image_side` px, a
        network ``crop`` no larger, a ``weights_file`` with the sha256 it must have (where it may
        lie: :meth:`_beside`), a feature type a cache stores."""
        from preimage.features.base import lookup

        side = largest_image_side()
        problems = []
        version, name, params = record.get("version"), record.get("representation"), record.get("params")
        if not _whole(version) or version < 0:
            problems.append(f"version {version!r} is not a whole number")
        if not isinstance(name, str):
            problems.append(f"representation {name!r} is not a name")
        else:
            try:
                lookup(name)
            except KeyError as err:
                problems.append(str(err.args[0]) if err.args else f"unknown representation {name!r}")
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            problems.append(f"params {params!r} is not a mapping of names to values")
        elif "crop" in params and (not _whole(params["crop"]) or not 1 <= params["crop"] <= side):
            problems.append(f"params.crop {params['crop']!r} is not a whole number from 1 to {side}")
        size, target = record.get("image_size"), record.get("target_size")
        if not _whole(size) or not 2 <= size <= side:
            problems.append(f"image_size {size!r} is not a whole number from 2 to {side}")
        elif target != self.image_size or not _whole(target) or target > size:
            problems.append(f"target_size {target!r} is not the {self.image_size} px the decoder reconstructs "
                            f"(at most image_size {size})")
        dtype = record.get("feature_dtype")
        if dtype not in feature_dtypes():
            problems.append(f"feature_dtype {dtype!r} is not one of {', '.join(feature_dtypes())}")
        weights, weights_file = record.get("weights"), record.get("weights_file")
        if weights is not None and not isinstance(weights, str):
            problems.append(f"weights {weights!r} is not an identity")
        if weights_file is not None:
            if not isinstance(weights_file, str) or not weights_file:
                problems.append(f"weights_file {weights_file!r} is not a file name")
            elif not _is_sha256(weights):
                problems.append(f"weights_file {weights_file!r} comes without the sha256 of its weights")
        if problems:
            raise NotADecoder(self.path, "its provenance is invalid: " + "; ".join(problems))

    def representation(self, weights: Optional[str | os.PathLike] = None):
        """Φ as it computed the decoder's training features, on the decoder's device.

        ``weights`` replaces the recorded weights' location (a state-dict file elsewhere); an
        autoencoder's fine-tuned encoder is looked for beside the decoder. Either way the weights'
        identity (sha256, or ``random:<seed>``) must be the recorded one, else
        :class:`WeightsMismatch`; a weights file's sha256 is compared before the file is loaded.
        A representation without weights ignores ``weights``.
        """
        from preimage.features import create

        record = self.provenance
        name, params, expected = record["representation"], dict(record["params"]), record.get("weights")
        if expected is not None or record.get("weights_file") or "weights" in params:
            if weights is not None:
                params["weights"] = os.fspath(weights)
            elif record.get("weights_file"):
                params["weights"] = os.fspath(self._beside(record["weights_file"]))
        self._check_weights_file(params.get("weights"), expected)
        try:
            representation = create(name, **params)
        except TypeError as err:  # parameters the representation does not take
            raise NotADecoder(self.path, f"its provenance's parameters for {name} are invalid: {err}") from None
        found = representation.identity().get("weights") if expected is not None else None
        if expected is not None and found != expected:
            raise self._mismatch(params.get("weights"), found)
        size = int(record["image_size"])
        self.shape_check(tuple(representation.output_shape(size, size)), f"{name} computes")
        return representation.to(self.device)

    def _beside(self, weights_file: str) -> Path:
        """The recorded ``weights_file`` in the decoder's folder; a name that leads elsewhere
        (absolute, or through ``..``) is never read: ``--weights`` must name the file then."""
        from preimage.weights import WeightsUnavailableError

        name = Path(weights_file)
        if name.is_absolute() or ".." in name.parts:
            raise WeightsUnavailableError(f"{self.path} records its weights file as {weights_file!r}, outside its "
                                          "folder: it is not read")
        return self.path.parent / name

    def _check_weights_file(self, spec: Any, expected: Optional[str]) -> None:
        """:class:`WeightsMismatch` before a weights file is loaded when its sha256 is not the
        recorded ``expected`` one (every weights file's identity is its sha256)."""
        if expected is None or not isinstance(spec, (str, os.PathLike)):
            return
        text = os.fspath(spec)
        if text == "random" or text == "imagenet" or text.startswith("imagenet:"):
            return  # torchvision's own file, or none
        path = Path(text).expanduser()
        if path.is_file():  # else the representation names the missing file (WeightsUnavailableError)
            from preimage.weights import sha256_file

            found = sha256_file(path)  # kept in memory: the loader does not hash the file again
            if found != expected:
                raise self._mismatch(text, found)

    def _mismatch(self, spec: Any, found: Optional[str]) -> WeightsMismatch:
        record = self.provenance
        return WeightsMismatch(
            f"{self.path} was trained on {record['representation']} features computed with weights "
            f"{_short(record.get('weights'))}, but the weights in use ({spec}) are {_short(found)}; "
            "use the weights it was trained with (--weights PATH)")

    def shape_check(self, shape: Tuple[int, ...], what: str) -> None:
        """ValueError unless per-image features of ``shape`` are what the decoder takes."""
        if tuple(int(v) for v in shape) != self.feature_shape:
            raise ValueError(f"{what} features of shape {tuple(shape)}, but {self.path} decodes features of shape "
                             f"{self.feature_shape}")

    @torch.no_grad()
    def features(self, representation, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images ``(n, 3, S, S)`` (prepared as the data stage does) as the feature
        stage stores them: dense float32, rounded to the cache's ``feature_dtype``."""
        size = int(images.shape[-1])
        if getattr(representation, "sparse", False):
            table, offsets = representation.compute_sparse(images, workers=1)
            dense = np.asarray(representation.densify(table, offsets, None, size, size), dtype=np.float32)
        else:
            x = image_store.to_float(images).to(self.device)
            dense = representation.compute(x).float().cpu().numpy()
        dtype = self.provenance["feature_dtype"]
        return dense.astype(dtype).astype(np.float32)

    def targets(self, images: np.ndarray) -> torch.Tensor:
        """The part of uint8 images ``(n, 3, S, S)`` the decoder reconstructs (the centre
        ``image_size`` crop Φ sees), as float [0, 1]: what its errors compare with."""
        return image_store.to_float(np.ascontiguousarray(image_store.centre_crop(images, self.image_size)))


def _is_sha256(text: Any) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _short(identity: Optional[str]) -> str:
    if identity is None:
        return "none"
    text = str(identity)
    return f"sha256 {text[:16]}…" if len(text) == 64 else text

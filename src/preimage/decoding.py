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
    (``encoder.pt``); None otherwise.
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
differs from the recorded one (:class:`WeightsMismatch`); a decoder written before the provenance
was recorded can still decode stored features, but not images (:class:`NoProvenance`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np
import torch

from preimage import metrics, store
from preimage.decoders import Decoder, build_decoder
from preimage.devices import resolve_device

__all__ = ["PROVENANCE_VERSION", "NoProvenance", "NotADecoder", "TrainedDecoder", "WeightsMismatch",
           "feature_provenance", "load_decoder"]

#: Version of ``meta["provenance"]`` in ``decoder.pt`` (module docstring).
PROVENANCE_VERSION = 1
_META_KEYS = ("kind", "feature_shape", "image_size", "output_size", "width", "upsample", "feature_scale",
              "representation")


class NotADecoder(store.DamagedFile):
    """A readable file that is not a decoder written by :mod:`preimage.train`."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        OSError.__init__(self, f"{self.path} is not a preimage decoder ({reason})")


class NoProvenance(ValueError):
    """The decoder does not record how its features were computed (written by an older preimage)."""


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
    refused (:class:`preimage.store.UnsafeFile`), a damaged one named (``DamagedFile``), a
    readable file that holds no decoder (another network's state dict, a checkpoint) named as
    such (:class:`NotADecoder`, a ``DamagedFile``).
    """
    try:
        payload = store.load_torch(path)
    except store.UnsafeFile:
        if _torch_file(path):
            raise
        raise NotADecoder(path, "not a file torch.save writes") from None
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise NotADecoder(path, "no 'meta' and 'state_dict'")
    meta = payload["meta"]
    missing = [key for key in _META_KEYS if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise NotADecoder(path, f"its metadata lacks {', '.join(missing)}")
    try:
        model = build_decoder(meta["kind"], tuple(meta["feature_shape"]), meta["image_size"],
                              width=meta["width"], upsample=meta["upsample"])
        if meta.get("residual"):
            model.start_from()  # the mean-image offset's buffer, filled by the state dict
        model.load_state_dict(payload["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:
        raise NotADecoder(path, " ".join(str(err).split())[:300]) from None
    return model.to(device).eval(), meta


def _torch_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a file ``torch.save`` writes: a zip archive, or a pickle (the
    legacy format) from protocol 2 on."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


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

    def reconstruct(self, features: store.FeatureStore, batch_size: int = 64) -> Iterator[Tuple[int, torch.Tensor]]:
        """Stream a feature store: ``(offset, reconstructions)`` per batch of ``batch_size`` rows."""
        for offset, f in features.batches(batch_size):
            yield offset, self.decode(f)

    def images(self, path: str | os.PathLike) -> store.ImageStore:
        """The image store at ``path`` as this decoder's targets: centre-cropped to its region."""
        return store.ImageStore(path, crop=self.image_size)

    # ---- new images (``preimage invert``)

    @property
    def feature_shape(self) -> Tuple[int, ...]:
        return tuple(int(v) for v in self.meta["feature_shape"])

    @property
    def provenance(self) -> Dict[str, Any]:
        """``meta["provenance"]`` (module docstring); :class:`NoProvenance` for an older decoder."""
        record = self.meta.get("provenance")
        if not isinstance(record, dict):
            raise NoProvenance(
                f"{self.path} does not record how its features were computed (it was trained by an older preimage): "
                "retrain it (delete it and rerun the workflow) to invert images, or decode stored features with "
                "--features")
        if int(record.get("version", 0)) > PROVENANCE_VERSION:
            raise NoProvenance(f"{self.path} records its provenance in version {record.get('version')}, newer than "
                               f"this preimage reads ({PROVENANCE_VERSION}); update preimage")
        return record

    def representation(self, weights: Optional[str | os.PathLike] = None):
        """Φ as it computed the decoder's training features, on the decoder's device.

        ``weights`` replaces the recorded weights' location (a state-dict file elsewhere); an
        autoencoder's fine-tuned encoder is looked for beside the decoder. Either way the weights'
        identity (sha256, or ``random:<seed>``) must be the recorded one, else
        :class:`WeightsMismatch`. A representation without weights ignores ``weights``.
        """
        from preimage.features import create

        record = self.provenance
        params = dict(record["params"])
        if record.get("weights") is not None or record.get("weights_file") or "weights" in params:
            if weights is not None:
                params["weights"] = os.fspath(weights)
            elif record.get("weights_file"):
                params["weights"] = os.fspath(self.path.parent / record["weights_file"])
        representation = create(record["representation"], **params)
        expected = record.get("weights")
        found = representation.identity().get("weights") if expected is not None else None
        if expected is not None and found != expected:
            raise WeightsMismatch(
                f"{self.path} was trained on {record['representation']} features computed with weights "
                f"{_short(expected)}, but the weights in use ({params.get('weights')}) are {_short(found)}; "
                "use the weights it was trained with (--weights PATH)")
        size = int(record["image_size"])
        self.shape_check(tuple(representation.output_shape(size, size)), f"{record['representation']} computes")
        return representation.to(self.device)

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
            x = store.to_float(images).to(self.device)
            dense = representation.compute(x).float().cpu().numpy()
        dtype = self.provenance.get("feature_dtype", "float32")
        return dense.astype(dtype).astype(np.float32)

    def targets(self, images: np.ndarray) -> torch.Tensor:
        """The part of uint8 images ``(n, 3, S, S)`` the decoder reconstructs (the centre
        ``image_size`` crop Φ sees), as float [0, 1]: what its errors compare with."""
        return store.to_float(np.ascontiguousarray(store.centre_crop(images, self.image_size)))


def _short(identity: Optional[str]) -> str:
    if identity is None:
        return "none"
    text = str(identity)
    return f"sha256 {text[:16]}…" if len(text) == 64 else text

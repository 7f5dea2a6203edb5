"""A trained decoder as a function from features to images: the one inference path (paper §3, §5.1).

:func:`load_decoder` rebuilds the network of ``decoder.pt`` (written by :mod:`preimage.train`);
:class:`TrainedDecoder` runs it the way every later stage needs it: features multiplied by the
decoder's stored ``feature_scale`` (the 1 / RMS of its training features), decoded in batches,
predictions smaller than the region the representation sees upsampled bilinearly to it (§5.1:
the fc decoders predict a downsampled image, Table 7), and clamped to the valid range [0, 1].
Evaluation (:mod:`preimage.evaluate`), the analyses (:mod:`preimage.analyses`) and the
Mahendran & Vedaldi comparison (:mod:`preimage.baselines`) all decode through it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Tuple

import torch

from preimage import metrics, store
from preimage.decoders import Decoder, build_decoder
from preimage.devices import resolve_device

__all__ = ["TrainedDecoder", "load_decoder"]


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Tuple[Decoder, Dict[str, Any]]:
    """Rebuild a trained decoder from ``decoder.pt``: returns (model in eval mode, metadata dict).

    Read with ``weights_only=True``: a file holding anything but tensors and plain values is
    refused (:class:`preimage.store.UnsafeFile`), a damaged one named (``DamagedFile``).
    """
    payload = store.load_torch(path)
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise store.DamagedFile(path, "not a decoder file: no 'meta' and 'state_dict'")
    meta = payload["meta"]
    model = build_decoder(meta["kind"], tuple(meta["feature_shape"]), meta["image_size"],
                          width=meta["width"], upsample=meta["upsample"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), meta


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

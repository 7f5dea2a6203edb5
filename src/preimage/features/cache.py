"""The HDF5 feature cache: ``results/features/{rep}/{split}.h5`` (stage ``features``: ``rules/features.smk``).

:func:`compute_cache` runs one representation over an image store in batches (memory flat in
N), on the GPU when there is one, and writes dense features (``float16`` by default) or, for
sparse representations (sift), a keypoint table plus per-image offsets. The attributes record the
representation, every parameter, the representation's identity (weights sha256 or
``random:<seed>``), the package version and the sha256 of the image store it was computed from.
Read it back with :class:`preimage.store.FeatureStore`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Dict, Mapping

import torch

from preimage import store
from preimage.devices import resolve_device
from preimage.features.base import create

log = logging.getLogger("preimage.features")


def compute_cache(
    representation_name: str,
    params: Mapping[str, Any],
    images_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 64,
    dtype: str = "float16",
    device: str = "auto",
    workers: int = 1,
    log_every: int = 500,
) -> Dict[str, Any]:
    """Compute the representation named ``representation_name`` (a configured name: ``hog``,
    ``fc6``, ``torchvision:resnet50:layer4``; with ``params``) for every image in ``images_path``."""
    from tqdm import tqdm

    started = time.perf_counter()
    target = resolve_device(device)
    representation = create(representation_name, **params)
    representation = representation.to(target)
    images = store.ImageStore(images_path)
    count, size = len(images), images.size
    attrs = {
        "representation": representation_name,
        "params": dict(params),
        "identity": representation.identity(),
        "label": getattr(representation, "label", representation_name),
        "dtype": dtype if not representation.sparse else "float32",
        "images": os.path.abspath(images_path),
        "images_sha256": store.file_sha256(images_path),
        "image_size": size,
        # the centre window of each image that Φ sees: decoders reconstruct and are scored on it
        "target_size": int(representation.target_size(size)),
        "device": str(target),
    }
    shape = tuple(int(s) for s in representation.output_shape(size, size))
    attrs["decoder_kind"] = representation.decoder_kind(shape)  # declared by the representation
    log.info("%s on %d images of %d px → %s per image (%s, %s, device %s)", representation_name, count, size, shape,
             "sparse" if representation.sparse else "dense", attrs["dtype"], target)
    bar = tqdm(total=count, desc=representation_name, unit="img", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    done = 0
    with bar, images, store.write_feature_store(
        out_path, count, shape, attrs["dtype"], attrs,
        sparse_width=representation.sparse_width if representation.sparse else None,
    ) as writer:
        for offset, batch in images.batches(batch_size):
            if representation.sparse:
                table, offsets = representation.compute_sparse(batch, workers=workers)
                writer.append_sparse(table, offsets)
            else:
                with torch.no_grad():
                    features = representation.compute(store.to_float(batch).to(target))
                writer.append(features.float().cpu().numpy())
            done += len(batch)
            bar.update(len(batch))
            if done % log_every < len(batch) or done == count:
                log.info("%d/%d images (%.0f img/s)", done, count, done / (time.perf_counter() - started))
    seconds = time.perf_counter() - started
    log.info("done in %.1f s", seconds)
    return {"images": count, "shape": shape, "seconds": seconds}

"""The HDF5 feature cache: ``results/features/{rep}/{split}.h5`` (design.md, stage 2).

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
from typing import Any, Dict, Mapping, Optional

import torch

from preimage import store
from preimage.devices import resolve_device
from preimage.features.base import create

log = logging.getLogger("preimage.features")


def compute_cache(
    representation: str,
    params: Mapping[str, Any],
    images_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 64,
    dtype: str = "float16",
    device: str = "auto",
    workers: int = 1,
    log_every: int = 500,
) -> Dict[str, Any]:
    """Compute ``representation`` (with ``params``) for every image in ``images_path``."""
    from tqdm import tqdm

    started = time.perf_counter()
    target = resolve_device(device)
    rep = create(representation, **params)
    rep = rep.to(target)
    images = store.ImageStore(images_path)
    count, size = len(images), images.size
    attrs = {
        "representation": representation,
        "params": dict(params),
        "identity": rep.identity(),
        "label": getattr(rep, "label", representation),
        "dtype": dtype if not rep.sparse else "float32",
        "images": os.path.abspath(images_path),
        "images_sha256": store.file_sha256(images_path),
        "image_size": size,
        # the centre window of each image that Φ sees: decoders reconstruct and are scored on it
        "target_size": int(rep.target_size(size)),
        "device": str(target),
    }
    shape = tuple(int(s) for s in rep.output_shape(size, size))
    attrs["decoder_kind"] = rep.decoder_kind(shape)  # declared by the representation
    log.info("%s on %d images of %d px → %s per image (%s, %s, device %s)", representation, count, size, shape,
             "sparse" if rep.sparse else "dense", attrs["dtype"], target)
    bar = tqdm(total=count, desc=representation, unit="img", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    done = 0
    with bar, images, store.write_feature_store(
        out_path, count, shape, attrs["dtype"], attrs,
        sparse_width=rep.sparse_width if rep.sparse else None,
    ) as writer:
        for offset, batch in images.batches(batch_size):
            if rep.sparse:
                table, offsets = rep.compute_sparse(batch, workers=workers)
                writer.append_sparse(table, offsets)
            else:
                with torch.no_grad():
                    features = rep.compute(store.to_float(batch).to(target))
                writer.append(features.float().cpu().numpy())
            done += len(batch)
            bar.update(len(batch))
            if done % log_every < len(batch) or done == count:
                log.info("%d/%d images (%.0f img/s)", done, count, done / (time.perf_counter() - started))
    seconds = time.perf_counter() - started
    log.info("done in %.1f s", seconds)
    return {"images": count, "shape": shape, "seconds": seconds}

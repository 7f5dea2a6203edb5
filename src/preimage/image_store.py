"""The image store ``results/data/{split}.h5`` and the conventions of images in memory.

The store holds ``images`` uint8 (N, 3, S, S) RGB, ``labels`` int64 (N,), ``paths`` (N,) strings
and ``classes`` (K,) strings, written atomically through :mod:`preimage.hdf5` (every dataset
checksummed) by :func:`write_image_store` and read in batches by :class:`ImageStore`; nothing here
loads a whole dataset unless asked to. :func:`to_float` and :func:`to_uint8` convert between the
stored uint8 images and the float tensors in [0, 1] every representation and decoder works on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from preimage.atomic_files import DamagedFile, atomic_path, file_sha256
from preimage.hdf5 import (STRING_DTYPE, _strings_digest, create_dataset, create_h5, open_h5, provenance, read_attrs,
                           read_strings, reading, write_attrs)


class ImageStoreWriter:
    """Append images to ``images``/``labels``/``paths`` in chunks (memory flat in N).

    Use through :func:`write_image_store`, which handles the atomic rename.
    """

    def __init__(self, handle: h5py.File, size: int, expected: int) -> None:
        self.handle = handle
        self.size = size
        self.count = 0
        self.images = create_dataset(handle, "images", shape=(0, 3, size, size), maxshape=(None, 3, size, size),
                                     dtype=np.uint8, chunks=(1, 3, size, size))
        self.labels = create_dataset(handle, "labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        self.paths = create_dataset(handle, "paths", shape=(0,), maxshape=(None,), dtype=STRING_DTYPE, chunks=(4096,))
        self.expected = expected
        self._digests = {name: hashlib.sha256() for name in ("images", "labels", "paths")}

    def append(self, images: np.ndarray, labels: Sequence[int], paths: Sequence[str]) -> None:
        n = len(images)
        if n == 0:
            return
        if images.dtype != np.uint8 or images.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"expected uint8 (n, 3, {self.size}, {self.size}), got {images.dtype} {images.shape}")
        start, stop = self.count, self.count + n
        for dataset in (self.images, self.labels, self.paths):
            dataset.resize(stop, axis=0)
        labels = np.asarray(labels, dtype=np.int64)
        self.images[start:stop] = images
        self.labels[start:stop] = labels
        self.paths[start:stop] = list(paths)
        self.count = stop
        self._digests["images"].update(np.ascontiguousarray(images).tobytes())
        self._digests["labels"].update(labels.astype("<i8").tobytes())
        _strings_digest(paths, self._digests["paths"])

    def content_sha256(self, classes: Sequence[str]) -> str:
        """sha256 of what was appended (images, labels, paths, in order) and of ``classes``: the
        identity of the store's content, whatever chunks it was appended in and however the file's
        bytes are laid out (:func:`image_store_digest`)."""
        total = hashlib.sha256()
        for name in ("images", "labels", "paths"):
            total.update(self._digests[name].digest())
        total.update("\0".join(map(str, classes)).encode())
        return total.hexdigest()


@contextlib.contextmanager
def write_image_store(
    path: str | os.PathLike, size: int, classes: Sequence[str], attrs: Mapping[str, Any], expected: int = 0
) -> Iterator[ImageStoreWriter]:
    """Create an image store atomically; yields an :class:`ImageStoreWriter`.

    ``attrs`` may be updated by the caller (e.g. the ``skipped`` list) through
    ``writer.handle.attrs`` before the block ends.
    """
    with atomic_path(path) as tmp:
        with create_h5(tmp) as handle:
            create_dataset(handle, "classes", data=np.array(list(classes), dtype=object), dtype=STRING_DTYPE)
            write_attrs(handle, provenance(**attrs))
            writer = ImageStoreWriter(handle, size, expected)
            yield writer
            handle.attrs["content_sha256"] = writer.content_sha256(classes)


def image_store_digest(path: str | os.PathLike) -> str:
    """The identity of an image store's content: ``content-sha256:<hex>`` from the digest its
    writer recorded (:meth:`ImageStoreWriter.content_sha256`; read from one attribute, so a
    1.28 M-image store is not read again by every job that needs its identity, and a store joined
    from shards has the digest of the unsharded one), or the file's sha256 for stores written
    without it."""
    with reading(path) as handle:
        digest = handle.attrs.get("content_sha256")
    if isinstance(digest, bytes):
        digest = digest.decode()
    return f"content-sha256:{digest}" if digest else file_sha256(path)


def centre_crop(images, side: int):
    """The centre ``side × side`` window of images ``(..., S, S)`` (numpy or torch; a view, no copy).

    This is the part of a stored image that a representation which centre-crops its input sees
    (AlexNet's 227-px crop of a 256-px image, paper Table 1), and so the part a decoder can be
    asked to reconstruct. ``side`` equal to the image size returns ``images`` itself."""
    h, w = images.shape[-2:]
    side = int(side)
    if side == h and side == w:
        return images
    if side < 1 or side > min(h, w):
        raise ValueError(f"cannot take a centre crop of {side} px from {h}×{w} images")
    top, left = (h - side) // 2, (w - side) // 2
    return images[..., top:top + side, left:left + side]


class ImageStore:
    """Read-only access to an image store; iterates in batches without loading everything.

    With ``crop`` every image read is the centre ``crop × crop`` window (:func:`centre_crop`) and
    :attr:`size` is ``crop``: the view of the images that a decoder's targets and errors use when
    its representation sees only a centre crop.
    """

    def __init__(self, path: str | os.PathLike, crop: Optional[int] = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"image store {self.path} does not exist (run the data stage first)")
        self.handle = open_h5(self.path)
        try:
            with reading(self.path, self.handle):
                self.images = self.handle["images"]
        except DamagedFile:
            self.handle.close()
            raise
        stored = int(self.images.shape[-1])
        self.crop = stored if crop is None else int(crop)
        if not 1 <= self.crop <= stored:
            self.handle.close()
            raise ValueError(f"{self.path}: cannot crop {self.crop} px from {stored}-px images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def stored_size(self) -> int:
        """Side of the images as stored."""
        return int(self.images.shape[-1])

    @property
    def size(self) -> int:
        """Side of the images as read (the crop, when one is set)."""
        return self.crop

    def float_view(self) -> "FloatView":
        """The (cropped) images as float in [0, 1], read lazily in slices (for pairwise distances)."""
        return FloatView(self)

    @property
    def attrs(self) -> Dict[str, Any]:
        with reading(self.path, self.handle):
            return read_attrs(self.handle)

    @property
    def labels(self) -> np.ndarray:
        with reading(self.path, self.handle):
            return self.handle["labels"][:]

    @property
    def paths(self) -> list[str]:
        return read_strings(self.path, self.handle, "paths")

    @property
    def classes(self) -> list[str]:
        return read_strings(self.path, self.handle, "classes")

    def read(self, start: int, stop: int) -> np.ndarray:
        """uint8 images ``start:stop`` as (n, 3, S, S) (S = :attr:`size`)."""
        with reading(self.path, self.handle):
            return np.ascontiguousarray(centre_crop(self.images[start:stop], self.crop))

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 images at arbitrary ``indices`` (any order)."""
        indices = np.asarray(indices)
        order = np.argsort(indices)
        out = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
        with reading(self.path, self.handle):
            rows = self.images[np.sort(indices)] if len(np.unique(indices)) == len(indices) else np.stack(
                [self.images[i] for i in np.sort(indices)]
            )
        out[order] = centre_crop(rows, self.crop)
        return out

    def batches(self, batch_size: int, start: int = 0, stop: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(offset, uint8 batch)`` in order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for offset in range(start, stop, batch_size):
            yield offset, self.read(offset, min(offset + batch_size, stop))

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "ImageStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FloatView:
    """An :class:`ImageStore` seen as a float array in [0, 1] of shape (N, 3, S, S), read lazily
    by slices (what :func:`preimage.metrics.mean_pairwise_distance` iterates over)."""

    def __init__(self, images: ImageStore) -> None:
        self.images = images
        self.shape = (len(images), 3, images.size, images.size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.images.read(start, stop).astype(np.float64) / 255.0
        return self.images.take(np.arange(len(self))[key]).astype(np.float64) / 255.0


def to_float(images: np.ndarray):
    """uint8 (n, 3, S, S) → float32 torch tensor in [0, 1] (the convention of every representation)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


def to_uint8(images) -> np.ndarray:
    """float torch tensor in [0, 1] → uint8 numpy array (the inverse of :func:`to_float`, values
    outside [0, 1] clipped, rounded to the nearest level): how reconstructions are stored and shown."""
    import torch

    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

"""HDF5 stores: atomic writes, provenance attributes, streaming readers.

Two kinds of file share these helpers (design.md, "Data flow"):

* the image store ``results/data/{split}.h5``: ``images`` uint8 (N, 3, S, S) RGB, ``labels``
  int64 (N,), ``paths`` (N,) strings, ``classes`` (K,) strings;
* the feature cache ``results/features/{rep}/{split}.h5``: ``features`` float16/float32
  (N, C, H, W) or (N, D), or for sparse representations a keypoint ``table`` plus ``offsets``.

Every file is written under a temporary name in the same folder and renamed when complete
(:func:`atomic_path`), so a killed job never leaves a file that looks finished. Attributes hold
the parameters (as JSON), the package version and whatever identity the writer adds.
Readers stream in batches; nothing here loads a whole dataset unless asked to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from preimage import __version__

#: Compression used for image and feature datasets: lzf is fast to write and read (gzip-1 is the
#: alternative for smaller files); images are chunked one per chunk so random access stays cheap.
COMPRESSION = "lzf"

STRING_DTYPE = h5py.string_dtype(encoding="utf-8")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    On an exception (or a kill) the temporary file is removed (or left with a ``.tmp-`` name
    that no rule declares), never mistaken for a finished output.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` onto an HDF5 object; dicts and lists are stored as JSON strings."""
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) or value is None:
            obj.attrs[key] = json.dumps(value, sort_keys=True, default=str)
        else:
            obj.attrs[key] = value


def read_attrs(obj: h5py.HLObject) -> Dict[str, Any]:
    """Read attributes back, decoding the JSON strings that :func:`write_attrs` wrote."""
    out: Dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def provenance(**extra: Any) -> Dict[str, Any]:
    """Attributes every store carries: the package version plus ``extra``."""
    return {"preimage_version": __version__, **extra}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- image store


class ImageStoreWriter:
    """Append images to ``images``/``labels``/``paths`` in chunks (memory flat in N).

    Use through :func:`write_image_store`, which handles the atomic rename.
    """

    def __init__(self, handle: h5py.File, size: int, expected: int) -> None:
        self.handle = handle
        self.size = size
        self.count = 0
        self.images = handle.create_dataset(
            "images",
            shape=(0, 3, size, size),
            maxshape=(None, 3, size, size),
            dtype=np.uint8,
            chunks=(1, 3, size, size),
            compression=COMPRESSION,
        )
        self.labels = handle.create_dataset("labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        self.paths = handle.create_dataset("paths", shape=(0,), maxshape=(None,), dtype=STRING_DTYPE, chunks=(4096,))
        self.expected = expected

    def append(self, images: np.ndarray, labels: Sequence[int], paths: Sequence[str]) -> None:
        n = len(images)
        if n == 0:
            return
        if images.dtype != np.uint8 or images.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"expected uint8 (n, 3, {self.size}, {self.size}), got {images.dtype} {images.shape}")
        start, stop = self.count, self.count + n
        for dataset in (self.images, self.labels, self.paths):
            dataset.resize(stop, axis=0)
        self.images[start:stop] = images
        self.labels[start:stop] = np.asarray(labels, dtype=np.int64)
        self.paths[start:stop] = list(paths)
        self.count = stop


@contextlib.contextmanager
def write_image_store(
    path: str | os.PathLike, size: int, classes: Sequence[str], attrs: Mapping[str, Any], expected: int = 0
) -> Iterator[ImageStoreWriter]:
    """Create an image store atomically; yields an :class:`ImageStoreWriter`.

    ``attrs`` may be updated by the caller (e.g. the ``skipped`` list) through
    ``writer.handle.attrs`` before the block ends.
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("classes", data=np.array(list(classes), dtype=object), dtype=STRING_DTYPE)
            write_attrs(handle, provenance(**attrs))
            yield ImageStoreWriter(handle, size, expected)


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
        self.handle = h5py.File(self.path, "r")
        self.images = self.handle["images"]
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
        return read_attrs(self.handle)

    @property
    def labels(self) -> np.ndarray:
        return self.handle["labels"][:]

    @property
    def paths(self) -> list[str]:
        return [p.decode() if isinstance(p, bytes) else p for p in self.handle["paths"][:]]

    @property
    def classes(self) -> list[str]:
        return [c.decode() if isinstance(c, bytes) else c for c in self.handle["classes"][:]]

    def read(self, start: int, stop: int) -> np.ndarray:
        """uint8 images ``start:stop`` as (n, 3, S, S) (S = :attr:`size`)."""
        return np.ascontiguousarray(centre_crop(self.images[start:stop], self.crop))

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 images at arbitrary ``indices`` (any order)."""
        indices = np.asarray(indices)
        order = np.argsort(indices)
        out = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
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


# --------------------------------------------------------------------------- feature cache


def feature_chunk(shape: Sequence[int], itemsize: int, target_bytes: int = 1 << 18) -> int:
    """Images per HDF5 chunk: one image when features are large, a small batch (≤64) when small."""
    per_image = int(np.prod(shape)) * itemsize
    return int(max(1, min(64, target_bytes // max(per_image, 1))))


class FeatureStoreWriter:
    """Append dense features (``features``) or sparse keypoints (``table`` + ``offsets``)."""

    def __init__(self, handle: h5py.File, count: int, shape: Optional[Tuple[int, ...]], dtype: str,
                 sparse_width: Optional[int] = None) -> None:
        self.handle, self.count, self.written = handle, count, 0
        self.dtype = np.dtype(dtype)
        if sparse_width is None:
            assert shape is not None
            self.features = handle.create_dataset(
                "features", shape=(count, *shape), dtype=self.dtype,
                chunks=(min(count, feature_chunk(shape, self.dtype.itemsize)), *shape) if count else None,
                compression=COMPRESSION,
            )
            self.table = None
        else:
            self.features = None
            self.table = handle.create_dataset(
                "table", shape=(0, sparse_width), maxshape=(None, sparse_width), dtype=np.float32,
                chunks=(4096, sparse_width), compression=COMPRESSION,
            )
            self.offsets = [0]

    def append(self, features: np.ndarray) -> None:
        """Dense features for the next images, in image order."""
        n = len(features)
        stop = self.written + n
        if stop > self.count:
            raise ValueError(f"more features than images ({stop} > {self.count})")
        array = np.asarray(features)
        if self.dtype == np.float16 and np.isfinite(array).all():
            converted = array.astype(np.float16)
            if not np.isfinite(converted).all():
                raise OverflowError("features overflow float16 (|x| > 65504): set features.dtype to float32")
            array = converted
        elif not np.isfinite(array).all():
            raise ValueError("features contain NaN or inf")
        self.features[self.written:stop] = array
        self.written = stop

    def append_sparse(self, table: np.ndarray, offsets: np.ndarray) -> None:
        """Keypoint rows of the next images: ``offsets`` (n+1,) index ``table`` (rows, width)."""
        rows = len(table)
        start = self.table.shape[0]
        self.table.resize(start + rows, axis=0)
        if rows:
            self.table[start:] = table
        base = self.offsets[-1]
        self.offsets.extend(int(base + o) for o in np.asarray(offsets)[1:])
        self.written += len(offsets) - 1

    def finish(self) -> None:
        if self.written != self.count:
            raise RuntimeError(f"wrote features for {self.written} of {self.count} images")
        if self.table is not None:
            self.handle.create_dataset("offsets", data=np.asarray(self.offsets, dtype=np.int64))


@contextlib.contextmanager
def write_feature_store(path: str | os.PathLike, count: int, shape: Optional[Tuple[int, ...]], dtype: str,
                        attrs: Mapping[str, Any], sparse_width: Optional[int] = None) -> Iterator[FeatureStoreWriter]:
    """Create a feature cache atomically (dense ``shape`` per image, or sparse rows of ``sparse_width``)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            write_attrs(handle, provenance(**attrs, shape=list(shape) if shape else None,
                                           storage="sparse" if sparse_width else "dense"))
            writer = FeatureStoreWriter(handle, count, shape, dtype, sparse_width)
            yield writer
            writer.finish()


class FeatureStore:
    """Read a feature cache in batches; sparse caches are densified on the fly.

    ``read(start, stop)`` and ``take(indices)`` return float32 numpy arrays (N, *shape);
    nothing is loaded beyond the rows asked for.
    """

    def __init__(self, path: str | os.PathLike, densify=None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"feature cache {self.path} does not exist (run the feature stage first)")
        self.handle = h5py.File(self.path, "r")
        self.attrs = read_attrs(self.handle)
        self.sparse = self.attrs.get("storage") == "sparse"
        self.shape = tuple(self.attrs["shape"])
        if self.sparse:
            self.offsets = self.handle["offsets"][:]
            self.table = self.handle["table"]
            if densify is None:
                from preimage.features import create

                representation = create(self.attrs["representation"], **self.attrs.get("params", {}))
                densify = representation.densify
            self._densify = densify
        else:
            self.features = self.handle["features"]

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.sparse else int(self.features.shape[0])

    @property
    def chunk(self) -> int:
        """Images per storage chunk (readers shuffle whole chunks for speed)."""
        if self.sparse:
            return 64
        return int(self.features.chunks[0]) if self.features.chunks else len(self)

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self.sparse:
            return self.features[start:stop].astype(np.float32)
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        rows = self.table[lo:hi]
        offsets = self.offsets[start:stop + 1] - lo
        size = int(self.attrs["image_size"])
        return np.asarray(self._densify(rows, offsets, None, size, size), dtype=np.float32)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices)
        return np.stack([self.read(int(i), int(i) + 1)[0] for i in indices]) if len(indices) else np.empty((0, *self.shape), np.float32)

    def batches(self, batch_size: int) -> Iterator[Tuple[int, np.ndarray]]:
        for offset in range(0, len(self), batch_size):
            yield offset, self.read(offset, min(offset + batch_size, len(self)))

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

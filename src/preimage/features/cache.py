"""The HDF5 feature cache: ``results/features/{rep}/{split}.h5`` (stage ``features``: ``rules/features.smk``).

:func:`compute_cache` runs one representation over an image store in batches (memory flat in
N), on the GPU when there is one, and writes dense features (``float16`` by default) or, for
sparse representations (sift), a keypoint table plus per-image offsets. The attributes record the
representation, every parameter, the representation's identity (weights sha256 or
``random:<seed>``), the package version and the identity of the image store it was computed from
(:func:`preimage.image_store.image_store_digest`). Read it back with :class:`FeatureStore`.
:func:`compute_network_caches` writes the same caches for several nodes of one network (every
requested AlexNet layer) from one forward pass per batch.

Two things here serve the paper's scale (the whole ImageNet training set, §3), both our choices:

* **Shards** (``data.shards: N``): :func:`compute_cache` with ``shard=(i, N)`` computes only the
  rows :func:`shard_rows` gives shard ``i`` (contiguous, their boundaries multiples of the batch
  size, so every batch holds the same images as in the unsharded job and the features are the
  same numbers), and :func:`join_caches` writes the one cache every later stage reads, equal to
  the unsharded one in its datasets and attributes.
* **Recompute instead of cache** (``features.store: recompute``): :func:`write_recipe` writes a
  cache file holding the attributes only (``storage = "recompute"``); whoever opens it with
  :class:`FeatureStore` gets the rows it asks for computed from the stored pixels
  by a :class:`Recomputer`, on the GPU when there is one, rounded to the configured dtype exactly
  as a cache would have stored them. For a CNN layer the forward pass costs less than reading its
  cached features back (conv1 in float16 is larger than the uint8 image it comes from).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch

from preimage import atomic_files, hdf5, image_store
from preimage.devices import resolve_device
from preimage.features.base import create

log = logging.getLogger("preimage.features")

#: Attributes of a shard that differ from the joined cache's (and between shards).
SHARD_KEYS = ("shard", "rows", "count", "device")
#: Attributes that :func:`write_feature_store` writes itself.
_WRITER_KEYS = ("shape", "storage", "preimage_version")


def shard_rows(count: int, index: int, shards: int, align: int = 1) -> Tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index`` of ``shards`` over ``count`` images: contiguous,
    as equal as boundaries at multiples of ``align`` (the batch size) allow; together they cover
    every row once. Shards past the data are empty."""
    if not 0 <= index < shards:
        raise ValueError(f"shard {index} of {shards}")
    align = max(1, int(align))
    blocks = -(-count // align)

    def boundary(k: int) -> int:
        return min(count, (blocks * k // shards) * align)

    return boundary(index), boundary(index + 1)


def cache_attrs(representation_name: str, params: Mapping[str, Any], representation, images_path, size: int,
                dtype: str, device: str) -> Dict[str, Any]:
    """The attributes of a feature cache (and of a recompute recipe) of ``images_path``.

    Parameters
    ----------
    representation_name : str
        A configured name (``hog``, ``fc6``, ``torchvision:resnet50:layer4``), created with ``params``.
    params : mapping
        The representation's parameters (``features.<family>`` of the config: cells, weights, crop …).
    representation : preimage.features.base.Representation
        The created Φ: its identity (weights' sha256), label, target size and decoder kind are recorded.
    images_path : str or os.PathLike
        The image store the features are computed from (its absolute path and content digest are recorded).
    size : int
        Side in pixels of the stored images.
    dtype : str
        Storage type of dense features (``features.dtype``: ``float16`` or ``float32``; sparse: float32).
    device : str
        The device the features are computed on (for the record; a recipe: where readers compute).
    """
    attrs = {
        "representation": representation_name,
        "params": dict(params),
        "identity": representation.identity(),
        "label": getattr(representation, "label", representation_name),
        "dtype": dtype if not representation.sparse else "float32",
        "images": os.path.abspath(images_path),
        "images_sha256": image_store.image_store_digest(images_path),
        "image_size": size,
        # the centre window of each image that Φ sees: decoders reconstruct and are scored on it
        "target_size": int(representation.target_size(size)),
        "device": device,
    }
    shape = tuple(int(s) for s in representation.output_shape(size, size))
    attrs["decoder_kind"] = representation.decoder_kind(shape)  # declared by the representation
    return attrs


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
    shard: Optional[Tuple[int, int]] = None,
) -> Dict[str, Any]:
    """Compute the representation named ``representation_name`` (a configured name: ``hog``,
    ``fc6``, ``torchvision:resnet50:layer4``; with ``params``) for every image in ``images_path``,
    or with ``shard = (i, N)`` for the rows of shard ``i`` (:func:`shard_rows`; attributes
    ``shard``, ``rows`` and ``count``, the rows of the whole store).

    Parameters
    ----------
    representation_name : str
        A configured name (``hog``, ``fc6``, ``torchvision:resnet50:layer4``), created with ``params``.
    params : mapping
        The representation's parameters (``features.<family>`` of the config: cells, weights, crop …).
    images_path : str or os.PathLike
        The image store (``results/data/{split}.h5``).
    out_path : str or os.PathLike
        The cache to write (written under a temporary name, then renamed).
    batch_size : int, default 64
        Images per batch (``features.batch_size``; shard boundaries fall on batch boundaries).
    dtype : str, default "float16"
        Storage type of dense features (``features.dtype``).
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    workers : int, default 1
        Worker processes of sparse representations (SIFT's OpenCV workers, ``features.threads``).
    log_every : int, default 500
        A progress line in the log every this many images.
    shard : tuple of int, optional
        ``(i, N)``: only the rows of shard ``i`` of ``N``; None: every image.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    target = resolve_device(device)
    representation = create(representation_name, **params)
    representation = representation.to(target)
    images = image_store.ImageStore(images_path)
    total, size = len(images), images.size
    start, stop = shard_rows(total, shard[0], shard[1], batch_size) if shard else (0, total)
    count = stop - start
    attrs = cache_attrs(representation_name, params, representation, images_path, size, dtype, str(target))
    if shard:
        attrs.update(shard=list(shard), rows=[start, stop], count=total)
    shape = tuple(int(s) for s in representation.output_shape(size, size))
    log.info("%s on %d images of %d px%s → %s per image (%s, %s, device %s)", representation_name, count, size,
             f" (shard {shard[0] + 1} of {shard[1]}: rows {start}:{stop} of {total})" if shard else "", shape,
             "sparse" if representation.sparse else "dense", attrs["dtype"], target)
    bar = tqdm(total=count, desc=representation_name, unit="img", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    done = 0
    with bar, images, write_feature_store(
        out_path, count, shape, attrs["dtype"], attrs,
        sparse_width=representation.sparse_width if representation.sparse else None,
    ) as writer:
        for offset, batch in images.batches(batch_size, start, stop):
            if representation.sparse:
                table, offsets = representation.compute_sparse(batch, workers=workers)
                writer.append_sparse(table, offsets)
            else:
                with torch.no_grad():
                    features = representation.compute(image_store.to_float(batch).to(target))
                writer.append(features.float().cpu().numpy())
            done += len(batch)
            bar.update(len(batch))
            if done % log_every < len(batch) or done == count:
                log.info("%d/%d images (%.0f img/s)", done, count, done / (time.perf_counter() - started))
    seconds = time.perf_counter() - started
    log.info("done in %.1f s", seconds)
    return {"images": count, "shape": shape, "seconds": seconds}


def compute_network_caches(
    representation_names: Sequence[str],
    params: Mapping[str, Any],
    images_path: str | os.PathLike,
    out_paths: Sequence[str | os.PathLike],
    batch_size: int = 64,
    dtype: str = "float16",
    device: str = "auto",
    log_every: int = 500,
    shard: Optional[Tuple[int, int]] = None,
) -> Dict[str, Any]:
    """The caches of several nodes of one network with the same ``params`` (``conv1``, ``conv5``
    and ``fc6`` of one AlexNet): representation ``representation_names[k]`` is written to
    ``out_paths[k]``, each cache equal in its datasets and attributes to the one
    :func:`compute_cache` writes for that node alone, from one forward pass per batch
    (:class:`preimage.features.NodeSet`) instead of one per node. ``shard`` as for
    :func:`compute_cache`. Every cache is complete before any is moved into place.

    Parameters
    ----------
    representation_names : sequence of str
        Nodes of one network (``conv1``, ``fc6``; ``efficientnet_lite0:pool``), computed in one pass.
    params : mapping
        The network's parameters, shared by the nodes (weights, crop, arch …).
    images_path : str or os.PathLike
        The image store.
    out_paths : sequence of str or os.PathLike
        One cache per node, in the order of ``representation_names``.
    batch_size : int, default 64
        Images per batch.
    dtype : str, default "float16"
        Storage type of the features (``features.dtype``).
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    log_every : int, default 500
        A progress line in the log every this many images.
    shard : tuple of int, optional
        ``(i, N)``: only the rows of shard ``i`` of ``N``; None: every image.
    """
    import contextlib

    from tqdm import tqdm

    from preimage.features.base import NodeSet

    if len(representation_names) != len(out_paths) or not out_paths:
        raise ValueError(f"{len(representation_names)} representations for {len(out_paths)} caches")
    started = time.perf_counter()
    target = resolve_device(device)
    nodes = NodeSet(representation_names, **params).to(target)
    label = ", ".join(representation_names)
    with contextlib.ExitStack() as stack:
        images = stack.enter_context(image_store.ImageStore(images_path))
        total, size = len(images), images.size
        start, stop = shard_rows(total, shard[0], shard[1], batch_size) if shard else (0, total)
        count = stop - start
        writers = []
        for name, representation, out_path in zip(representation_names, nodes.representations, out_paths):
            if representation.sparse:
                raise ValueError(f"{name} is sparse: compute its cache with compute_cache")
            attrs = cache_attrs(name, params, representation, images_path, size, dtype, str(target))
            if shard:
                attrs.update(shard=list(shard), rows=[start, stop], count=total)
            shape = tuple(int(s) for s in representation.output_shape(size, size))
            log.info("%s → %s per image (%s)", name, shape, attrs["dtype"])
            writers.append(stack.enter_context(write_feature_store(out_path, count, shape, attrs["dtype"],
                                                                         attrs)))
        log.info("%d nodes in one pass over %d images of %d px%s (device %s)", len(writers), count, size,
                 f" (shard {shard[0] + 1} of {shard[1]}: rows {start}:{stop} of {total})" if shard else "", target)
        bar = stack.enter_context(tqdm(total=count, desc=label, unit="img", disable=not sys.stderr.isatty(),
                                       dynamic_ncols=True))
        done = 0
        for offset, batch in images.batches(batch_size, start, stop):
            with torch.no_grad():
                features = nodes.compute(image_store.to_float(batch).to(target))
            for writer, values in zip(writers, features):
                writer.append(values.float().cpu().numpy())
            done += len(batch)
            bar.update(len(batch))
            if done % log_every < len(batch) or done == count:
                log.info("%d/%d images (%.0f img/s)", done, count, done / (time.perf_counter() - started))
        for writer in writers:  # all complete before the first is renamed into place
            if writer.written != count:
                raise RuntimeError(f"wrote features for {writer.written} of {count} images")
    seconds = time.perf_counter() - started
    log.info("done in %.1f s", seconds)
    return {"images": count, "caches": len(out_paths), "seconds": seconds}


# --------------------------------------------------------------------------- shards


def join_caches(parts: Sequence[str | os.PathLike], out_path: str | os.PathLike, block: int = 1024) -> Dict[str, Any]:
    """Join the shard caches ``parts`` (shard 0, 1, … of one :func:`compute_cache` run) into the
    cache at ``out_path``, copying the rows in order: the result has the datasets, chunking and
    attributes the unsharded job would have written (``device`` lists every device used).

    Refuses shards that do not belong together (another representation, parameters or image
    store, a missing or repeated shard, rows that leave a gap) instead of joining them."""
    if not parts:
        raise ValueError("no shards to join")
    handles = [hdf5.open_h5(p) for p in parts]
    try:
        metas = [hdf5.read_attrs(h) for h in handles]
        first = metas[0]
        common = {k: v for k, v in first.items() if k not in SHARD_KEYS + _WRITER_KEYS}
        total = first.get("count")
        expected_start = 0
        for k, (path, meta) in enumerate(zip(parts, metas)):
            if meta.get("shard") != [k, len(parts)]:
                raise ValueError(f"{path}: shard {meta.get('shard')} where shard [{k}, {len(parts)}] was expected")
            if meta.get("count") != total or meta.get("rows", [None])[0] != expected_start:
                raise ValueError(f"{path}: rows {meta.get('rows')} of {meta.get('count')} do not follow row "
                                 f"{expected_start} of {total}")
            for key in sorted(set(common) | (set(meta) - set(SHARD_KEYS + _WRITER_KEYS))):
                if meta.get(key) != common.get(key):
                    raise ValueError(f"{path}: attribute {key!r} differs from shard 0's ({meta.get(key)!r} vs "
                                     f"{common.get(key)!r}): the shards come from different runs; rerun them")
            expected_start = meta["rows"][1]
        if expected_start != total:
            raise ValueError(f"the shards cover rows 0:{expected_start} of {total}")
        devices = list(dict.fromkeys(str(m.get("device")) for m in metas))
        common["device"] = devices[0] if len(devices) == 1 else ",".join(devices)
        sparse = first.get("storage") == "sparse"
        shape = tuple(first["shape"]) if first.get("shape") else None
        width = int(handles[0]["table"].shape[1]) if sparse else None
        with write_feature_store(out_path, total, shape, first["dtype"], common, sparse_width=width) as writer:
            for path, handle in zip(parts, handles):
                with hdf5.reading(path, handle):
                    if sparse:
                        offsets = handle["offsets"][:]
                        writer.append_sparse(handle["table"][:], offsets - offsets[0])
                        continue
                    features = handle["features"]
                    for row in range(0, features.shape[0], block):
                        writer.append(features[row:row + block])
    finally:
        for handle in handles:
            handle.close()
    log.info("joined %d shards into %s (%d images)", len(parts), out_path, total)
    return {"images": total, "shards": len(parts)}


# --------------------------------------------------------------------------- recompute


def write_recipe(
    representation_name: str,
    params: Mapping[str, Any],
    images_path: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 64,
    dtype: str = "float16",
    device: str = "auto",
) -> Dict[str, Any]:
    """Write the cache file of ``features.store: recompute``: the attributes a cache would have
    (``storage = "recompute"``, the image store's path relative to the file, ``count``,
    ``batch_size``) and no features. ``device`` is where readers compute (``auto``: their GPU
    when they have one).

    Parameters
    ----------
    representation_name : str
        A configured name (``hog``, ``fc6``, ``torchvision:resnet50:layer4``), created with ``params``.
    params : mapping
        The representation's parameters (``features.<family>`` of the config: cells, weights, crop …).
    images_path : str or os.PathLike
        The image store the readers compute the features from.
    out_path : str or os.PathLike
        The recipe file to write (where the cache would be).
    batch_size : int, default 64
        Images per batch of the readers' computation.
    dtype : str, default "float16"
        The storage type a cache would have; computed features are rounded to it.
    device : str, default "auto"
        Where readers compute: ``auto`` (their GPU when they have one), ``cpu``, ``cuda``, ``cuda:N``.
    """
    representation = create(representation_name, **params)
    with image_store.ImageStore(images_path) as images:
        count, size = len(images), images.size
    attrs = cache_attrs(representation_name, params, representation, images_path, size, dtype, device)
    if representation.sparse:
        raise ValueError(f"{representation_name}: features.store recompute needs a dense representation "
                         f"({representation_name} stores keypoints); use cache")
    out = Path(out_path)
    attrs.update(count=count, batch_size=int(batch_size),
                 images_relative=os.path.relpath(os.path.abspath(images_path), os.path.abspath(out.parent)),
                 shape=[int(s) for s in representation.output_shape(size, size)], storage="recompute")
    with atomic_files.atomic_path(out) as tmp, hdf5.create_h5(tmp) as handle:
        hdf5.write_attrs(handle, hdf5.provenance(**attrs))
    log.info("%s: features of the %d images of %s will be computed where they are read (%s per image, %s)",
             representation_name, count, images_path, tuple(attrs["shape"]), dtype)
    return attrs


class Recomputer:
    """The features a recompute recipe (:func:`write_recipe`) stands for, computed on demand.

    The image store is found relative to the recipe (so a moved results folder still works),
    else at its recorded absolute path; it must hold the images the recipe was written for (same
    count and content digest), and the representation must have the recorded identity (same
    weights), or the reader stops with an error instead of computing other features. Rows are
    computed in batches of the recipe's ``batch_size`` on ``device`` (the recipe's setting,
    ``auto`` = this job's GPU when there is one) and rounded to the recipe's dtype, so they equal
    what a cache would hold up to the last bit of the network's arithmetic.
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any], device: Optional[str] = None) -> None:
        self.path = Path(path)
        candidates = [self.path.parent / str(attrs.get("images_relative", "")), Path(str(attrs["images"]))]
        images = next((c for c in candidates if c.is_file()), None)
        if images is None:
            raise FileNotFoundError(f"{self.path} computes its features from {attrs['images']}, which does not exist")
        self.images = image_store.ImageStore(images)
        try:
            if len(self.images) != int(attrs["count"]):
                raise atomic_files.DamagedFile(self.path, f"written for {attrs['count']} images but {images} holds "
                                                   f"{len(self.images)}", "rerun its features job")
            digest = image_store.image_store_digest(images)
            if attrs.get("images_sha256") and digest != attrs["images_sha256"]:
                raise atomic_files.DamagedFile(self.path, f"written for other images than those now in {images}",
                                        "rerun its features job")
            self.device = resolve_device(device or str(attrs.get("device", "auto")))
            self.representation = create(str(attrs["representation"]), **dict(attrs.get("params") or {}))
            if _plain(self.representation.identity()) != _plain(attrs.get("identity")):
                raise atomic_files.DamagedFile(self.path, "its network's weights changed since it was written",
                                        "rerun its features job")
            self.representation = self.representation.to(self.device)
        except BaseException:
            self.images.close()
            raise
        self.dtype = np.dtype(str(attrs.get("dtype", "float32")))
        self.batch_size = int(attrs.get("batch_size", 64))
        self.shape = tuple(int(s) for s in attrs["shape"])

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def compute(self, images: np.ndarray) -> np.ndarray:
        """float32 features (rounded through the recipe's dtype) of uint8 images (n, 3, S, S)."""
        out = np.empty((len(images), *self.shape), dtype=np.float32)
        for b in range(0, len(images), self.batch_size):
            x = image_store.to_float(images[b:b + self.batch_size]).to(self.device)
            f = self.representation.compute(x).float()
            if self.dtype == np.float16:
                if not torch.isfinite(f).all():
                    raise ValueError("features contain NaN or inf")
                f = f.half()
                if not torch.isfinite(f).all():
                    raise OverflowError("features overflow float16 (|x| > 65504): set features.dtype to float32")
            out[b:b + len(f)] = f.cpu().numpy()
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.compute(self.images.read(start, stop))

    def take(self, indices: Sequence[int]) -> np.ndarray:
        return self.compute(self.images.take(indices)) if len(indices) else np.empty((0, *self.shape), np.float32)

    def close(self) -> None:
        self.images.close()


def _plain(value: Any) -> Any:
    """JSON-comparable form (attributes come back from JSON: tuples as lists)."""
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=str))


# --------------------------------------------------------------------------- reading and writing caches


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
            self.features = hdf5.create_dataset(
                handle, "features", shape=(count, *shape), dtype=self.dtype,
                chunks=(min(count, feature_chunk(shape, self.dtype.itemsize)), *shape) if count else None,
            )
            self.table = None
        else:
            self.features = None
            self.table = hdf5.create_dataset(
                handle, "table", shape=(0, sparse_width), maxshape=(None, sparse_width), dtype=np.float32,
                chunks=(4096, sparse_width),
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
            hdf5.create_dataset(self.handle, "offsets", data=np.asarray(self.offsets, dtype=np.int64))


@contextlib.contextmanager
def write_feature_store(path: str | os.PathLike, count: int, shape: Optional[Tuple[int, ...]], dtype: str,
                        attrs: Mapping[str, Any], sparse_width: Optional[int] = None) -> Iterator[FeatureStoreWriter]:
    """Create a feature cache atomically (dense ``shape`` per image, or sparse rows of ``sparse_width``)."""
    with atomic_files.atomic_path(path) as tmp:
        with hdf5.create_h5(tmp) as handle:
            hdf5.write_attrs(handle, hdf5.provenance(**attrs, shape=list(shape) if shape else None,
                                           storage="sparse" if sparse_width else "dense"))
            writer = FeatureStoreWriter(handle, count, shape, dtype, sparse_width)
            yield writer
            writer.finish()


class FeatureStore:
    """Read a feature cache in batches; sparse caches are densified on the fly.

    ``read(start, stop)`` and ``take(indices)`` return float32 numpy arrays (N, *shape);
    nothing is loaded beyond the rows asked for. A file written with ``features.store: recompute``
    (``storage = "recompute"``: attributes only, no features) is read the same way: the rows
    asked for are computed from the image store it names
    (:class:`Recomputer`).
    """

    def __init__(self, path: str | os.PathLike, densify=None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"feature cache {self.path} does not exist (run the feature stage first)")
        self.handle = hdf5.open_h5(self.path)
        try:
            with hdf5.reading(self.path, self.handle):
                self.attrs = hdf5.read_attrs(self.handle)
                if not isinstance(self.attrs.get("shape"), list) and self.attrs.get("storage") != "sparse":
                    raise atomic_files.DamagedFile(self.path, "no 'shape' attribute: not a complete feature cache")
                self.sparse = self.attrs.get("storage") == "sparse"
                self.recomputed = self.attrs.get("storage") == "recompute"
                self.shape = tuple(self.attrs.get("shape") or ())
                if self.recomputed:
                    self.features = None
                elif self.sparse:
                    self.offsets = self.handle["offsets"][:]
                    self.table = self.handle["table"]
                else:
                    self.features = self.handle["features"]
        except atomic_files.DamagedFile:
            self.handle.close()
            raise
        if self.recomputed:
            try:
                self._source = Recomputer(self.path, self.attrs)
            except BaseException:
                self.handle.close()
                raise
        if self.sparse:
            if densify is None:
                representation = create(self.attrs["representation"], **self.attrs.get("params", {}))
                densify = representation.densify
            self._densify = densify

    def __len__(self) -> int:
        if self.recomputed:
            return len(self._source)
        return len(self.offsets) - 1 if self.sparse else int(self.features.shape[0])

    @property
    def chunk(self) -> int:
        """Images per storage chunk (readers shuffle whole chunks for speed)."""
        if self.sparse:
            return 64
        if self.recomputed:
            return 1  # the images are stored one per chunk
        return int(self.features.chunks[0]) if self.features.chunks else len(self)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.recomputed:
            return self._source.read(start, stop)
        if not self.sparse:
            with hdf5.reading(self.path, self.handle):
                return self.features[start:stop].astype(np.float32)
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        with hdf5.reading(self.path, self.handle):
            rows = self.table[lo:hi]
        offsets = self.offsets[start:stop + 1] - lo
        size = int(self.attrs["image_size"])
        return np.asarray(self._densify(rows, offsets, None, size, size), dtype=np.float32)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices)
        if self.recomputed:
            return self._source.take(indices)
        return np.stack([self.read(int(i), int(i) + 1)[0] for i in indices]) if len(indices) else np.empty((0, *self.shape), np.float32)

    def batches(self, batch_size: int) -> Iterator[Tuple[int, np.ndarray]]:
        for offset in range(0, len(self), batch_size):
            yield offset, self.read(offset, min(offset + batch_size, len(self)))

    def close(self) -> None:
        if self.recomputed:
            self._source.close()
        self.handle.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

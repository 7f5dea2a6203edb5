"""Training pairs streamed from the HDF5 stores when they do not fit in ``train.preload_mb``.

The paper trains on the whole ImageNet training set (§3, 1.28 M images): neither its pixels nor
most feature caches fit in memory, so :class:`preimage.train.PairedData` reads them as it goes.
How (our choice; the paper does not say how it fed its GPUs):

* **Chunk-aware shuffling.** HDF5 reads and decompresses whole chunks, so reading rows one by one
  in a random order reads every chunk many times over. The requested rows are grouped by the
  storage chunk of the feature cache (:func:`chunk_groups`); the groups are visited in a seeded
  random order and gathered into buffers of whole chunks, each read in sorted contiguous runs
  (every chunk read once per epoch) and then shuffled within itself (:func:`plan`). A batch thus
  mixes images from ``buffer / chunk`` chunks drawn from anywhere in the store.
* **Reads overlapped with compute.** A background thread reads (and shuffles) the next buffer
  while the training loop consumes the current one (:func:`prefetch`); batches are contiguous
  slices of a shuffled buffer (no copy), and only the last batch of an epoch can be short (a
  buffer's remainder is completed from the next buffer).
* **Memory bounded by preload_mb.** At most three buffers exist at once (one consumed, one
  waiting, one being read), so a buffer holds a third of ``train.preload_mb`` (:func:`buffer_size`).
* **Few copies.** Rows are read run by run into one buffer (the centre crop only, when the
  targets are a crop), and dense features stay in their stored dtype (float16 by default: half
  the bytes; the training step converts them on its device).
* **Recomputed features** (``features.store: recompute``) are computed from the same full-size
  pixels that are read for the targets, so each image is read and decompressed once.

The whole order of an epoch is drawn from ``rng`` before the thread starts, so it depends only on
the seed and the epoch (a resumed run sees the same batches), never on thread timing.

Every block is read through :func:`preimage.hdf5.reading`, so HDF5 verifies its checksum: a
damaged block stops training with :class:`preimage.atomic_files.DamagedFile` naming the file and the
dataset, raised in the reader thread and re-raised in the training loop (:func:`prefetch`).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

#: Buffers alive at once: one being consumed, one waiting in the queue, one being read.
IN_FLIGHT = 3


def runs(sorted_indices: np.ndarray) -> List[Tuple[int, int]]:
    """Contiguous [start, stop) runs of sorted indices (h5py reads runs fast)."""
    sorted_indices = np.asarray(sorted_indices, dtype=np.int64)
    if len(sorted_indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_indices) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(sorted_indices)]])
    return [(int(sorted_indices[a]), int(sorted_indices[b - 1]) + 1) for a, b in zip(starts, stops)]


def buffer_size(per_image_bytes: int, preload_mb: float, batch_size: int, chunk: int = 1) -> int:
    """Images per buffer: a third of ``preload_mb`` (:data:`IN_FLIGHT` buffers), at least four
    batches and one chunk whatever the budget."""
    budget = int(preload_mb * (1 << 20) // IN_FLIGHT // max(1, per_image_bytes))
    return max(budget, 4 * batch_size, chunk)


def chunk_groups(indices: np.ndarray, chunk: int) -> List[np.ndarray]:
    """``indices`` (sorted) grouped by the storage chunk ``index // chunk`` they fall in."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    if len(indices) == 0:
        return []
    ids = indices // max(1, chunk)
    cuts = np.flatnonzero(np.diff(ids)) + 1
    return np.split(indices, cuts)


def plan(indices: np.ndarray, chunk: int, buffer: int,
         rng: Optional[np.random.Generator]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The read order of one epoch: a list of buffers ``(rows, order)``, ``rows`` sorted (how
    they are read), ``order`` the permutation of ``rows`` in which they are served. Buffers are
    whole chunk groups visited in a random order (``rng``; in storage order without one)."""
    groups = chunk_groups(indices, chunk)
    visit = rng.permutation(len(groups)) if rng is not None else np.arange(len(groups))
    out: List[Tuple[np.ndarray, np.ndarray]] = []
    pending: List[np.ndarray] = []
    size = 0
    for g in visit:
        pending.append(groups[g])
        size += len(groups[g])
        if size >= buffer:
            out.append(_buffer(pending, rng))
            pending, size = [], 0
    if pending:
        out.append(_buffer(pending, rng))
    return out


def _buffer(groups: Sequence[np.ndarray], rng: Optional[np.random.Generator]) -> Tuple[np.ndarray, np.ndarray]:
    rows = np.sort(np.concatenate(groups))
    return rows, (rng.permutation(len(rows)) if rng is not None else np.arange(len(rows)))


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _read_runs(dataset, spans: Sequence[Tuple[int, int]], out: np.ndarray, window: Optional[slice] = None) -> None:
    """Read the rows of ``spans`` of an h5py dataset into ``out``, in order; ``window`` reads only
    the centre crop of images (HDF5 copies just that region). (Plain slicing: h5py's
    ``read_direct`` costs several times more per call for the short runs a shuffled read makes.)"""
    offset = 0
    for start, stop in spans:
        source = np.s_[start:stop] if window is None else np.s_[start:stop, :, window, window]
        out[offset:offset + stop - start] = dataset[source]
        offset += stop - start


def read_pairs(features, images, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(features, uint8 images) of the sorted ``rows``, read in contiguous runs.

    ``features`` is a :class:`preimage.features.cache.FeatureStore`, or ``images`` itself (the
    autoencoder's pairs are (image, image)). Dense cached features come in their stored dtype
    (float16 by default: half the bytes to move, converted where they are used); sparse ones are
    densified to float32. When the features are recomputed from the same image store, each image
    is read once: its full-size pixels feed the network and their centre crop is the target."""
    from preimage.hdf5 import reading
    from preimage.image_store import centre_crop

    spans = runs(rows)
    n = len(rows)
    source = getattr(features, "_source", None) if getattr(features, "recomputed", False) else None
    if source is not None and _same_file(source.images.path, images.path):
        full = np.empty((n, *source.images.images.shape[1:]), dtype=np.uint8)
        with reading(source.images.path, source.images.handle):
            _read_runs(source.images.images, spans, full)
        return source.compute(full), np.ascontiguousarray(centre_crop(full, images.size))
    stored, side = int(images.images.shape[-1]), images.size
    top = (stored - side) // 2
    imgs = np.empty((n, 3, side, side), dtype=np.uint8)
    with reading(images.path, images.handle):
        _read_runs(images.images, spans, imgs, None if side == stored else slice(top, top + side))
    if features is images:
        return imgs, imgs
    dense = getattr(features, "features", None)
    if dense is not None and not getattr(features, "sparse", False):
        feats = np.empty((n, *dense.shape[1:]), dtype=dense.dtype)
        with reading(features.path, features.handle):
            _read_runs(dense, spans, feats)
        return feats, imgs
    return np.concatenate([features.read(s, e) for s, e in spans]), imgs


def stream_pairs(features, images, indices: np.ndarray, batch_size: int, rng: Optional[np.random.Generator],
                 buffer: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Batches of (features, images) of ``indices``, read in the chunk-aware order of :func:`plan`
    by a background thread; all batches have ``batch_size`` pairs but possibly the last."""
    chunk = max(1, int(getattr(features, "chunk", 1) or 1))
    order = plan(indices, chunk, max(buffer, batch_size), rng)

    def load() -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        for rows, perm in order:
            feats, imgs = read_pairs(features, images, rows)
            shuffled = feats[perm]
            yield shuffled, (shuffled if imgs is feats else imgs[perm])

    carry: Optional[Tuple[np.ndarray, np.ndarray]] = None
    for feats, imgs in prefetch(load(), depth=IN_FLIGHT - 2):
        start = 0
        if carry is not None:
            need = batch_size - len(carry[0])
            feats_head, imgs_head = feats[:need], imgs[:need]
            batch = (np.concatenate([carry[0], feats_head]), np.concatenate([carry[1], imgs_head]))
            start, carry = len(feats_head), None
            if len(batch[0]) < batch_size:
                carry = batch
                continue
            yield batch
        full = start + (len(feats) - start) // batch_size * batch_size
        for b in range(start, full, batch_size):
            yield feats[b:b + batch_size], imgs[b:b + batch_size]
        if full < len(feats):
            carry = (feats[full:], imgs[full:])
    if carry is not None and len(carry[0]):
        yield carry


def prefetch(iterator: Iterator, depth: int = 4) -> Iterator:
    """Run ``iterator`` in a background thread, up to ``depth`` items ahead of the consumer.

    An exception in the thread is re-raised in the consumer; a consumer that stops early (an
    error in the training step, or ``break``) stops the thread at its next item."""
    q: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
    sentinel = object()
    failure: List[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            failure.append(err)
        finally:
            while True:
                try:
                    q.put(sentinel, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    thread = threading.Thread(target=produce, daemon=True, name="preimage-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                break
            yield item
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]

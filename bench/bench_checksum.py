"""What does the block checksum of every HDF5 dataset cost when reading? An image store and three
feature caches, each read in several storage formats side by side in one run.

    python bench/bench_checksum.py                                             # builtin photographs, 256 px
    python bench/bench_checksum.py --images imagenet-sample --repeats 9   # ImageNet photographs

The image store (``--count`` photographs at ``--size`` px) and its feature caches are written by the
project's own writers (:func:`preimage.image_store.write_image_store`, :func:`preimage.features.cache.compute_cache`):
HOG (cell 8: dense, no zeros), conv5 of an untrained AlexNet (after a ReLU: about a third zeros)
and stage 3 of EfficientNet-Lite0 (trained, no activation: dense float16 that lzf cannot shrink).
Each dataset is then copied, same chunks, into the other formats:

* ``zlib-0`` what the project writes: every chunk in a zlib stream of level 0, whose Adler-32
  checksum HDF5 verifies on every read (:data:`preimage.hdf5.ZLIB_LEVEL`);
* ``lzf``: what the project wrote before the checksums (lzf compression, no checksum);
* ``plain``: uncompressed, no checksum;
* ``fletcher32``: uncompressed with HDF5's Fletcher-32 checksum;
* ``lzf+fletcher32``: the former format with Fletcher-32 added.

Each file is read twice over per repeat, as the project reads it: in order in batches of
``--batch`` images (ImageStore.read, FeatureStore.read), and in the shuffled chunk-aware order of
:mod:`preimage.streaming` (buffers of whole chunks, read in contiguous runs), each format in turn,
median of ``--repeats``. The files were just written, so they are read from the page cache: the
numbers are the reader's CPU cost (the worst case for a checksum), not a disk's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from preimage import data, hdf5, streaming
from preimage.config import validate_config
from preimage.features.cache import compute_cache
from preimage.image_store import ImageStore, write_image_store

FORMATS = {
    "zlib-0": dict(compression="gzip", compression_opts=hdf5.ZLIB_LEVEL),
    "lzf": dict(compression="lzf"),
    "plain": {},
    "fletcher32": dict(fletcher32=True),
    "lzf+fletcher32": dict(compression="lzf", fletcher32=True),
}
CACHES = {  # name: (representation, parameters at size S)
    "hog": ("hog", lambda size: {"cell_size": 8}),
    "conv5": ("conv5", lambda size: {"weights": "random", "crop": min(size, 227)}),
    "effnet stage 3": ("efficientnet_lite0:stages.3", lambda size: {"crop": min(size, 224)}),
}


def image_store(path: Path, folder: str | None, count: int, size: int) -> Path:
    """Photographs from ``folder`` (centre crops) or the builtin source's crops, in an image store."""
    if folder is None:
        params = validate_config({"data": {"size": size, "train_per_class": -(-count // 9), "test_per_class": 1}})
        data.extract(params["data"], {"train": path, "test": path.with_name("unused.h5")})
        return path
    files = data.list_images(Path(folder))[:count]
    if not files:
        sys.exit(f"no images in {folder}")
    with write_image_store(path, size, ["photographs"], {"source": str(folder)}) as writer:
        for file in files:
            writer.append(data.resize_center_crop(data.open_rgb(file, size), size)[None], [0], [str(file)])
    return path


def copy_formats(path: Path, name: str) -> dict:
    """``{format: file}``: dataset ``name`` of ``path`` copied into every format, same chunks."""
    with h5py.File(path, "r") as source:
        dataset = source[name]
        values, chunks = dataset[:], dataset.chunks
    out = {}
    for label, options in FORMATS.items():
        target = path.with_name(f"{path.stem}.{label}.h5")
        with h5py.File(target, "w") as handle:
            handle.create_dataset(name, data=values, chunks=chunks, **options)
        out[label] = target
    return out


def stored_bytes(path: Path, name: str) -> int:
    with h5py.File(path, "r") as handle:
        dataset = handle[name]
        return sum(dataset.id.get_chunk_info(i).size for i in range(dataset.id.get_num_chunks()))


def read_in_order(dataset, batch: int) -> None:
    for start in range(0, dataset.shape[0], batch):
        dataset[start:start + batch]


def read_streamed(dataset, batch: int, seed: int) -> None:
    chunk = dataset.chunks[0]
    order = streaming.plan(np.arange(dataset.shape[0]), chunk, streaming.buffer_size(1, 0, batch, chunk),
                           np.random.default_rng(seed))
    out = np.empty((max(len(rows) for rows, _ in order), *dataset.shape[1:]), dataset.dtype)
    for rows, _ in order:
        streaming._read_runs(dataset, streaming.runs(rows), out[:len(rows)])


def time_formats(files: dict, name: str, batch: int, repeats: int) -> dict:
    """``{format: (seconds in order, seconds streamed)}``, medians over ``repeats`` with the
    formats interleaved (each repeat visits them in a rotated order)."""
    times = {label: ([], []) for label in files}
    labels = list(files)
    for repeat in range(repeats):
        for label in labels[repeat % len(labels):] + labels[:repeat % len(labels)]:
            with h5py.File(files[label], "r") as handle:
                dataset = handle[name]
                start = time.perf_counter()
                read_in_order(dataset, batch)
                middle = time.perf_counter()
                read_streamed(dataset, batch, repeat)
                times[label][0].append(middle - start)
                times[label][1].append(time.perf_counter() - middle)
    return {label: (statistics.median(a), statistics.median(b)) for label, (a, b) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="folder of photographs (default: the builtin source's crops)")
    parser.add_argument("--count", type=int, default=500, help="images (default 500)")
    parser.add_argument("--size", type=int, default=256, help="image side in px (default 256, the paper's)")
    parser.add_argument("--batch", type=int, default=64, help="images per read in order (default 64)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        images = image_store(root / "images.h5", args.images, args.count, args.size)
        with ImageStore(images) as opened:
            count = len(opened)
        files = {"images": (copy_formats(images, "images"), "images")}
        for label, (representation, params) in CACHES.items():
            cache = root / f"{label.replace(' ', '_')}.h5"
            compute_cache(representation, params(args.size), images, cache, batch_size=32, device="cpu")
            files[label] = (copy_formats(cache, "features"), "features")

        print(f"\n{count} photographs ({args.images or 'builtin source'}) at {args.size} px; read from the page "
              f"cache, 1 thread, median of {args.repeats}")
        print("MB/s = uncompressed MB per second; ratios are read times (< 1: faster)\n")
        header = (f"{'file':15s} {'MB':>6s} " + " ".join(f"{label:>15s}" for label in FORMATS)
                  + f" {'zlib-0/lzf':>11s} {'zlib-0/plain':>13s} {'f32/plain':>10s} {'lzf+f32/lzf':>12s}")
        rows = []
        for label, (formats, name) in files.items():
            raw = stored_bytes(formats["plain"], name) / 1e6
            sizes = {f: stored_bytes(path, name) / 1e6 / raw for f, path in formats.items()}
            timed = time_formats(formats, name, args.batch, args.repeats)
            for way, index in (("in order", 0), ("streamed", 1)):
                seconds = {f: timed[f][index] for f in formats}
                rows.append((f"{label}, {way}", raw, seconds, sizes))
        print(header)
        for title, raw, seconds, sizes in rows:
            rates = " ".join(f"{raw / seconds[f]:15.0f}" for f in FORMATS)
            print(f"{title:15.15s} {raw:6.1f} {rates} {seconds['zlib-0'] / seconds['lzf']:11.2f} "
                  f"{seconds['zlib-0'] / seconds['plain']:13.2f} {seconds['fletcher32'] / seconds['plain']:10.2f} "
                  f"{seconds['lzf+fletcher32'] / seconds['lzf']:12.2f}")
        print("\nstored size / uncompressed size")
        for title, raw, seconds, sizes in rows[::2]:
            print(f"{title.split(',')[0]:15s} " + " ".join(f"{f} {sizes[f]:.3f}" for f in FORMATS))
        print("\ntraining reads an image and its features: the pair's read time, zlib-0 / lzf")
        for way in ("in order", "streamed"):
            image_row = next(row for row in rows if row[0] == f"images, {way}")
            for label in CACHES:
                cache_row = next(row for row in rows if row[0] == f"{label}, {way}")
                zlib = image_row[2]["zlib-0"] + cache_row[2]["zlib-0"]
                lzf = image_row[2]["lzf"] + cache_row[2]["lzf"]
                print(f"  images + {label}, {way}: {zlib / lzf:.2f}")


if __name__ == "__main__":
    main()

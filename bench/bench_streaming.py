"""Does the streamed HDF5 reader keep a decoder fed? Streamed vs preloaded training pairs on a
synthetic HOG cache (goal: at least 0.9× the preloaded rate).

    python bench/bench_streaming.py                          # 20,000 images at 64 px (about a minute)
    python bench/bench_streaming.py --size 256 --images 20000 --workdir /scratch/me   # the paper's size (~5 GB)

The stores are synthetic but written by the project's writers (image_store.write_image_store,
write_feature_store): random uint8 images and random float16 features of HOG's shape at
``--size`` (31 × size/8 × size/8, cell 8), compressed and chunked exactly as real ones.
:class:`preimage.train.PairedData` reads them once preloaded (``preload_mb`` large) and once
streamed (``--stream-mb``, far below the data's size, so the chunk-aware streaming of
preimage.streaming runs with its background reader). Printed, as medians of ``--repeats``:

* data only: pairs per second each way delivers over an epoch (the preloaded pairs are the first
  ``--preload-mb`` worth of images when not all fit);
* training: images per second of a HOG decoder (``--width``) trained on each, on this machine's
  CPU, and their ratio (the goal: streamed ≥ 0.9 × preloaded), timed over ``--train-batches``
  steps after the first (default: three of the stream's buffers; a window of a few steps would
  time little but the reader filling its first buffers);
* the rate at which the paper's HOG decoder (256 px, width 1, supplementary Table 3) would consume
  images on a GPU sustaining ``--tflops`` (from its FLOPs per training step, counted with
  torch.utils.flop_counter as bench/estimate_paper_cost.py does), beside the streamed data rate
  converted to paper-size images (bytes per second ÷ a paper-size pair's bytes: float16
  features and uint8 pixels, as the stream delivers them) when ``--size`` is not 256.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from preimage import image_store, streaming, train
from preimage.decoders import build_decoder
from preimage.features import create
from preimage.features.cache import write_feature_store

HOG_CELL = 8


def hog_shape(size: int) -> tuple:
    return tuple(int(s) for s in create("hog", cell_size=HOG_CELL).output_shape(size, size))


def synthetic_stores(folder: Path, images: int, size: int, seed: int = 0, block: int = 512) -> tuple:
    """(image store, HOG-shaped feature cache) of ``images`` random pairs under ``folder``."""
    rng = np.random.default_rng(seed)
    shape = hog_shape(size)
    images_path, features_path = folder / "train.h5", folder / "hog_train.h5"
    with image_store.write_image_store(images_path, size, ["synthetic"], {"source": "synthetic", "size": size}) as writer:
        for start in range(0, images, block):
            n = min(block, images - start)
            writer.append(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8), [0] * n,
                          [f"synthetic/{start + i}" for i in range(n)])
    attrs = {"representation": "hog", "params": {"cell_size": HOG_CELL}, "identity": {"synthetic": "1"},
             "label": "HOG (synthetic features)", "dtype": "float16", "images": str(images_path),
             "images_sha256": image_store.image_store_digest(images_path), "image_size": size, "target_size": size,
             "decoder_kind": "two_stream"}
    with write_feature_store(features_path, images, shape, "float16", attrs) as writer:
        for start in range(0, images, block):
            n = min(block, images - start)
            writer.append(rng.standard_normal((n, *shape), dtype=np.float32))
    return images_path, features_path


def data_rate(paired: train.PairedData, batch_size: int, seed: int) -> float:
    """Pairs per second delivered over one shuffled epoch (the stream's first read included)."""
    start, seen = time.perf_counter(), 0
    for f, x in paired.batches(batch_size, np.random.default_rng(seed)):
        seen += len(f)
    return seen / (time.perf_counter() - start)


def training_rate(paired: train.PairedData, model, batch_size: int, batches: int, seed: int) -> float:
    """Images per second of decoder training steps (Adam, eq. 1's loss) in the steady state: from
    the end of the first step to the end of step ``batches + 1`` (the stream's first read and the
    end of its reader thread are not counted; over a real epoch they are negligible)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    start, seen = None, 0
    for k, (f, x) in enumerate(paired.batches(batch_size, np.random.default_rng(seed))):
        prediction = model(torch.from_numpy(f).float())
        loss = F.mse_loss(prediction, train.to_targets(x, model.output_size, torch.device("cpu")))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if start is None:
            start = time.perf_counter()
            continue
        seen += len(f)
        if k >= batches:
            break
    return seen / (time.perf_counter() - start)


def paper_hog_images_per_second(tflops: float) -> tuple:
    """(images/s, FLOPs per image per training step) of the paper's HOG decoder at ``tflops``."""
    from estimate_paper_cost import per_image_costs  # bench/ is on sys.path when run as a script

    step = per_image_costs(256, 1.0, ["hog"])["hog"]["decoder_step"]
    return tflops * 1e12 / step, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-batches", type=int, default=None,
                        help="training steps timed per repeat (default: three of the stream's buffers, so that the "
                             "window holds the stream's steady state rather than its first reads)")
    parser.add_argument("--width", type=float, default=0.125, help="the timed decoder's width (1.0 = the paper's)")
    parser.add_argument("--stream-mb", type=float, default=128.0,
                        help="preload_mb of the streamed reader (its buffers hold a third of it)")
    parser.add_argument("--preload-mb", type=int, default=2048, help="memory for the preloaded pairs (a subset "
                        "of the images when they do not all fit)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tflops", type=float, default=40.0)
    parser.add_argument("--workdir", help="where to write the synthetic stores (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        started = time.perf_counter()
        images_path, features_path = synthetic_stores(Path(tmp), args.images, args.size)
        shape = hog_shape(args.size)
        per_pair = 2 * int(np.prod(shape)) + 3 * args.size ** 2  # as streamed: float16 features, uint8 image
        data_mb = per_pair * args.images / 2 ** 20
        print(f"synthetic HOG cache: {args.images:,} images at {args.size} px, features {shape} float16 "
              f"({(images_path.stat().st_size + features_path.stat().st_size) / 2 ** 20:.0f} MB on disk, "
              f"{data_mb:.0f} MB as streamed), written in {time.perf_counter() - started:.0f} s")
        indices = np.arange(args.images)
        # the preloaded rate does not depend on how many pairs are in memory: at most --preload-mb of them
        in_memory = indices[:max(args.batch_size, int(args.preload_mb * 2 ** 20 // (2 * per_pair)))]
        preloaded = train.PairedData(str(features_path), str(images_path), in_memory, preload_mb=args.preload_mb)
        streamed = train.PairedData(str(features_path), str(images_path), indices, preload_mb=args.stream_mb)
        assert preloaded.in_memory and not streamed.in_memory, "--stream-mb must be below the size of the data"
        model = build_decoder("two_stream", shape, args.size, width=args.width)
        if args.train_batches is None:
            buffer = streaming.buffer_size(streamed.per_image, args.stream_mb, args.batch_size,
                                           getattr(streamed.features, "chunk", 1))
            args.train_batches = -(-3 * buffer // args.batch_size)
        rates = {key: [] for key in ("data_pre", "data_stream", "train_pre", "train_stream")}
        for r in range(args.repeats):
            rates["data_pre"].append(data_rate(preloaded, args.batch_size, r))
            rates["data_stream"].append(data_rate(streamed, args.batch_size, r))
            rates["train_pre"].append(training_rate(preloaded, model, args.batch_size, args.train_batches, r))
            rates["train_stream"].append(training_rate(streamed, model, args.batch_size, args.train_batches, r))
        preloaded.close()
        streamed.close()
    med = {key: statistics.median(values) for key, values in rates.items()}
    print(f"\ndata only (batches of {args.batch_size}, median of {args.repeats}):")
    print(f"  preloaded  {med['data_pre']:9.0f} img/s")
    print(f"  streamed   {med['data_stream']:9.0f} img/s  ({med['data_stream'] * per_pair / 2 ** 20:.0f} MB/s as streamed, "
          f"buffers of {args.stream_mb / 3:.0f} MB)")
    print(f"\ntraining a width-{args.width:g} HOG decoder on the CPU ({args.threads} threads, "
          f"{args.train_batches} steps, median of {args.repeats}):")
    print(f"  preloaded  {med['train_pre']:9.1f} img/s")
    print(f"  streamed   {med['train_stream']:9.1f} img/s")
    print(f"  streamed / preloaded = {med['train_stream'] / med['train_pre']:.3f}   (goal: >= 0.9)")
    gpu_rate, step = paper_hog_images_per_second(args.tflops)
    paper_pair = 2 * int(np.prod(hog_shape(256))) + 3 * 256 ** 2
    print(f"\nthe paper's HOG decoder (256 px, width 1): {step / 1e9:.1f} GFLOP per image per training step, "
          f"so {gpu_rate:.0f} img/s on a GPU sustaining {args.tflops:g} TFLOP/s")
    if args.size == 256:
        print(f"  streamed data rate here: {med['data_stream']:.0f} img/s = {med['data_stream'] / gpu_rate:.2f} x "
              "that demand")
    else:
        converted = med["data_stream"] * per_pair / paper_pair
        print(f"  streamed data rate here at {med['data_stream'] * per_pair / 2 ** 20:.0f} MB/s = at least {converted:.0f} "
              f"paper-size pairs/s ({paper_pair / 1e3:.0f} KB each as streamed) = {converted / gpu_rate:.2f} x that "
              "demand (a lower bound: small images cost more per byte; run with --size 256 to measure it)")


if __name__ == "__main__":
    main()

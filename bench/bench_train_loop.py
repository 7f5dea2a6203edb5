"""The overhead of train.py's training loop over a bare PyTorch loop (goal: at most 5 % slower
on the CPU), so that a GPU's time goes to the network.

    python bench/bench_train_loop.py                       # one to two minutes
    python bench/bench_train_loop.py --images 4096 --size 64 --width 0.5 --repeats 5

Both loops train the same decoder (HOG's two-stream decoder of supplementary Table 3 at
``--size`` and ``--width``, the same seed, Adam as in §4) on the same in-memory data (synthetic
HOG-shaped features and images, written by the project's store writers, small enough to be
preloaded), with the same batch size and one seeded shuffle per epoch:

* train.py: :func:`preimage.train.train_decoder`, the workflow's entry point (preload, learning
  rate schedule, targets, autocast context, NaN guard, loss bookkeeping, progress bar, one
  checkpoint per epoch), timed per epoch by the loop itself (``seconds`` of its log);
* bare: the ten-line loop below, timed per epoch the same way.

Printed: the median seconds per epoch of each (epochs after the first, over ``--repeats`` runs)
and their ratio.
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

from bench_streaming import hog_shape, synthetic_stores  # bench/ is on sys.path when run as a script
from preimage import image_store, train
from preimage.decoders import build_decoder
from preimage.features.cache import FeatureStore


def bare_loop(features_path: Path, images_path: Path, cfg: dict, epochs: int) -> list:
    """Seconds per epoch of a minimal loop over the same data and decoder."""
    with FeatureStore(features_path) as fs, image_store.ImageStore(images_path) as ims:
        feats, imgs = fs.read(0, len(fs)), ims.read(0, len(ims))
        scale = train.feature_scale(fs, np.arange(len(fs)), seed=cfg["seed"])
    torch.manual_seed(cfg["seed"])
    model = build_decoder("two_stream", feats.shape[1:], imgs.shape[-1], width=cfg["width"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.999))
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = np.random.default_rng([cfg["seed"], epoch]).permutation(len(feats))
        for b in range(0, len(order), cfg["batch_size"]):
            pick = order[b:b + cfg["batch_size"]]
            f = torch.from_numpy(feats[pick]) * scale
            x = torch.from_numpy(imgs[pick]).float().div_(255)
            loss = F.mse_loss(model(f), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds


def train_py_loop(features_path: Path, images_path: Path, cfg: dict, epochs: int, folder: Path, run: int) -> list:
    """Seconds per epoch of train.train_decoder on the same data (its own per-epoch timing)."""
    config = dict(cfg, epochs=epochs, val_fraction=0.0, device="cpu", preload_mb=1 << 14)
    result = train.train_decoder("hog", str(features_path), str(images_path), str(folder / f"decoder{run}.pt"),
                                 str(folder / f"log{run}.csv"), str(folder / f"checkpoint{run}.pt"), config)
    return [row["seconds"] for row in result["history"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="per run; the first is not timed (warm-up)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = {"batch_size": args.batch_size, "width": args.width, "lr": 1e-3, "seed": 0}
    times = {"train.py": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images_path, features_path = synthetic_stores(folder, args.images, args.size)
        for run in range(args.repeats):  # alternating which goes first, so that drifts in load cancel
            loops = [lambda: train_py_loop(features_path, images_path, cfg, args.epochs, folder, run),
                     lambda: bare_loop(features_path, images_path, cfg, args.epochs)]
            for key, loop in sorted(zip(times, loops), key=lambda kv: (kv[0] == "bare") == (run % 2 == 0)):
                times[key] += loop()[1:]
    med = {key: statistics.median(values) for key, values in times.items()}
    print(f"HOG decoder {hog_shape(args.size)} -> {args.size} px, width {args.width:g}, {args.images} images in "
          f"memory, batch {args.batch_size}, {args.threads} CPU threads; median of {len(times['bare'])} epochs:")
    for key, value in med.items():
        print(f"  {key:9s} {value:7.3f} s per epoch  ({args.images / value:6.0f} img/s)")
    print(f"  train.py / bare = {med['train.py'] / med['bare']:.3f}   (goal: <= 1.05)")


if __name__ == "__main__":
    main()

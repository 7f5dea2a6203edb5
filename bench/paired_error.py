"""Whether one decoder reconstructs the same test images better than another: the paired difference
of their per-image errors (normalised as the paper's error is, by the mean distance between test
images), with a bootstrap 95 % interval over the images, and on how many images the first wins.

Two decoders' intervals of the mean error can overlap while one is better on the same images; the
paired difference is the sharper test (ours, beyond the paper's Table 2).

    python bench/paired_error.py results/data/test.h5 \
        "results/efficientnet_lite0@stages.3/reconstructions.h5" \
        "results/efficientnet_lite0@stages.3-random/reconstructions.h5"
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from preimage import hdf5, image_store, metrics


def reconstructions(path: str) -> np.ndarray:
    """A ``reconstructions.h5``'s images as floats in [0, 1]."""
    with hdf5.reading(path) as handle:
        return np.asarray(image_store.to_float(np.asarray(handle["reconstructions"])), dtype=np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_images", help="the test image store (results/data/test.h5)")
    parser.add_argument("first", help="reconstructions.h5 of the first decoder")
    parser.add_argument("second", help="reconstructions.h5 of the second decoder")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    first, second = reconstructions(args.first), reconstructions(args.second)
    with image_store.ImageStore(args.test_images, crop=first.shape[-1]) as images:
        truth = np.asarray(image_store.to_float(images.read(0, len(images))), dtype=np.float32)
    if not first.shape == second.shape == truth.shape:
        raise SystemExit(f"shapes differ: test images {truth.shape}, first {first.shape}, second {second.shape}")
    scale = metrics.mean_pairwise_distance(truth)
    difference = metrics.normalised_error(truth, first, scale) - metrics.normalised_error(truth, second, scale)
    rng = np.random.default_rng(args.seed)
    means = [difference[rng.integers(0, len(difference), len(difference))].mean() for _ in range(args.resamples)]
    low, high = np.percentile(means, [2.5, 97.5])
    print(f"first − second, normalised error: {difference.mean():+.4f} (95 % CI {low:+.4f} to {high:+.4f}); "
          f"the first is better on {int((difference < 0).sum())} of {len(difference)} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: OpenCV SIFT (our configuration) per process and on 2 processes/threads, plus a
keypoint count / scale comparison with VLFeat's defaults.

    python bench/bench_sift.py
    python bench/bench_sift.py --images imagenet-sample --count 64

Throughput runs ``SIFT.compute_sparse`` (OpenCV detection + descriptors + grid arrangement) with
one OpenCV thread per worker. The comparison table runs both detectors on the same uint8 gray
images (skimage.data photos, plus ``--images`` if given).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def load_images(directory: str | None, count: int, size: int) -> np.ndarray:
    """(N, 3, size, size) uint8."""
    if directory is None:
        import skimage.data
        from skimage.transform import resize

        names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "retina"]
        base = []
        for name in names:
            img = getattr(skimage.data, name)()
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=-1)
            base.append((resize(img[..., :3], (size, size), anti_aliasing=True) * 255).round().astype(np.uint8))
        out = []
        for i in range(count):  # flips/rotations so the images differ
            img = np.rot90(base[i % len(base)], k=(i // len(base)) % 4)
            out.append(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return np.stack(out)
    from PIL import Image

    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if not files:
        sys.exit(f"no images in {directory}")
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1) for f in files])


def _chunk(args):
    from preimage.features.sift import SIFT

    images, seed = args
    return SIFT(seed=seed).compute_sparse(images, workers=1)[1][-1]


def throughput(images: np.ndarray, repeats: int) -> None:
    import cv2

    from preimage.features.sift import SIFT, _init_worker

    n = len(images)
    sift = SIFT()
    sift.compute_sparse(images[:2])
    rates = {"1 process, 1 thread": [], "2 threads (one process)": [], "2 processes": []}
    with ProcessPoolExecutor(max_workers=2, initializer=_init_worker) as pool:
        halves = [(images[: n // 2], 0), (images[n // 2 :], 0)]
        list(pool.map(_chunk, halves))  # warm-up: start the workers, import cv2/torch
        for _ in range(repeats):
            t = time.perf_counter()
            sift.compute_sparse(images, workers=1)
            rates["1 process, 1 thread"].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            sift.compute_sparse(images, workers=2)
            rates["2 threads (one process)"].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            list(pool.map(_chunk, halves))
            rates["2 processes"].append(n / (time.perf_counter() - t))
    base = statistics.median(rates["1 process, 1 thread"])
    print(f"\nThroughput: {n} images {images.shape[2]}×{images.shape[3]}, OpenCV {cv2.__version__}, median of {repeats}\n")
    print("| setting | img/s | speed-up vs 1 process |")
    print("|---|---:|---:|")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):.1f} | {statistics.median(r) / base:.2f}× |")


def comparison(images: np.ndarray, labels: list[str]) -> None:
    import cv2

    from preimage.features.sift import detect
    from preimage.reference import vlfeat

    if not vlfeat.available():
        print("\nVLFeat unavailable: skipping the keypoint comparison")
        return
    from preimage.reference.vlfeat_sift import vlfeat_sift

    edges = [0, 2, 4, 8, 16, 32, 1e9]
    print("\nKeypoints: ours (OpenCV, octave −1 dropped) vs VLFeat (defaults: first octave 0, 3 levels, peak 0, edge 10)\n")
    head = " | ".join(f"σ∈[{a:g},{b:g})" if b < 1e9 else f"σ≥{a:g}" for a, b in zip(edges[:-1], edges[1:]))
    print("(σ columns: keypoint counts ours/VLFeat)\n")
    print(f"| image | ours | VLFeat | ratio | median σ ours / VLFeat | {head} |")
    print("|---|---:|---:|---:|---:|" + "---|" * (len(edges) - 1))
    tot = np.zeros(2)
    hist_tot = np.zeros((2, len(edges) - 1), dtype=int)
    for label, rgb in zip(labels, images):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
        ours, _ = detect(gray)
        ref = vlfeat_sift(gray.astype(np.float32))
        h_ours = np.histogram(ours[:, 2], edges)[0]
        h_ref = np.histogram(ref[:, 2], edges)[0]
        tot += (len(ours), len(ref))
        hist_tot += np.stack([h_ours, h_ref])
        hist = " | ".join(f"{a}/{b}" for a, b in zip(h_ours, h_ref))
        print(
            f"| {label} | {len(ours)} | {len(ref)} | {len(ours) / max(1, len(ref)):.2f} | "
            f"{np.median(ours[:, 2]) if len(ours) else 0:.2f} / {np.median(ref[:, 2]) if len(ref) else 0:.2f} | {hist} |"
        )
    hist = " | ".join(f"{a}/{b}" for a, b in zip(*hist_tot))
    print(f"| **all** | {tot[0]:.0f} | {tot[1]:.0f} | {tot[0] / tot[1]:.2f} | | {hist} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=None, help="directory of JPEG/PNG images (default: skimage.data photos)")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    images = load_images(args.images, args.count, args.size)
    throughput(images, args.repeats)
    photos = load_images(None, 8, args.size)
    labels = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "retina"]
    if args.images:
        extra = images[:8]
        photos = np.concatenate([photos, extra])
        labels += [f"{Path(args.images).name}[{i}]" for i in range(len(extra))]
    comparison(photos, labels)


if __name__ == "__main__":
    main()

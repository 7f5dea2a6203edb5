"""Overhead of the AlexNet representation over a bare torchvision forward pass.

Bare: ``model(x)`` on already cropped and normalised 227×227 tensors, to fc8.
Ours: ``create("fc8").compute(images)`` on the 256-px images, i.e. including the centre crop
and the normalisation. Same model object (same weights), CPU, ``torch.no_grad()``, runs
interleaved (bare, ours, bare, ours …) so that load from other processes hits both alike;
medians over ``--repeats``. Target: ours ≤ 1.10 × bare.

    python bench/bench_alexnet.py                      # generated 256×256 images
    python bench/bench_alexnet.py --images imagenet-sample --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def load_images(directory: str | None, n: int, size: int) -> torch.Tensor:
    """``n`` RGB images in [0, 1], ``size × size``: real JPEGs (shorter side resized to ``size``,
    centre crop) or, without ``directory``, seeded smooth random images."""
    if directory is None:
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, size // 8, size // 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        return (img + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    import torchvision.transforms.functional as TF
    from torchvision.io import ImageReadMode, decode_image

    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:n]
    if len(files) < n:
        raise SystemExit(f"{directory}: {len(files)} images, need {n}")
    out = []
    for p in files:
        img = decode_image(str(p), mode=ImageReadMode.RGB)
        img = TF.center_crop(TF.resize(img, size, antialias=True), size)
        out.append(img.float() / 255)
    return torch.stack(out)


def timeit(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", help="directory of JPEGs (default: generated images)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256, help="image size before the crop")
    ap.add_argument("--crop", type=int, default=227)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--weights", default="random", help="imagenet | random | path (timing does not depend on it)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from preimage.features import create
    from preimage.features.torchvision_net import fit_crop

    rep = create("fc8", weights=args.weights, crop=args.crop)
    model = rep.model  # the same torchvision AlexNet, full forward
    images = load_images(args.images, args.batch, args.size)
    mean = torch.tensor(rep.loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(rep.loaded.std).view(1, 3, 1, 1)
    x227 = ((fit_crop(images, args.crop) - mean) / std).contiguous()

    with torch.no_grad():
        torch.testing.assert_close(model(x227), rep.compute(images), rtol=1e-4, atol=1e-4)
        timeit(model, x227), timeit(rep.compute, images)  # warm-up
        bare, ours = [], []
        for _ in range(args.repeats):
            bare.append(timeit(model, x227))
            ours.append(timeit(rep.compute, images))

    b, o = statistics.median(bare), statistics.median(ours)
    src = args.images or f"generated {args.size}×{args.size}"
    print(
        f"AlexNet to fc8, CPU ({torch.get_num_threads()} threads), batch {args.batch}, "
        f"{args.crop}×{args.crop} crops of {src}, {args.repeats} repeats, torch {torch.__version__}\n"
    )
    print("| path | median s / batch | min s | images/s | ratio to bare |")
    print("|---|---:|---:|---:|---:|")
    print(f"| bare torchvision `model(x)` (pre-cropped, normalised) | {b:.3f} | {min(bare):.3f} | {args.batch / b:.1f} | 1.00 |")
    print(f"| `create('fc8').compute(images)` (crop + normalise + forward) | {o:.3f} | {min(ours):.3f} | {args.batch / o:.1f} | {o / b:.3f} |")
    print(f"\noverhead: {100 * (o / b - 1):+.1f}% of medians, {100 * (min(ours) / min(bare) - 1):+.1f}% of minima (target ≤ +10%)")


if __name__ == "__main__":
    main()

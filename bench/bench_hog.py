"""Throughput of the PyTorch HOG (``preimage.features.hog``) vs VLFeat's C ``vl_hog``, one core.

Both run in this process, on one thread (``torch.set_num_threads(1)``), on the same 256x256
images, alternating repeat by repeat so that load from other processes affects both alike; the
table reports the median over the repeats and the ratio. VLFeat is timed on ready-made float32
grey images (conversion not counted, its best case); ours is timed from the RGB float tensor,
RGB->grey included, under ``torch.no_grad()``.

    python bench/bench_hog.py                       # generated images
    python bench/bench_hog.py --images imagenet-sample   # real JPEGs

With ``--agreement`` it times nothing and instead compares every image with VLFeat: the largest
``|ours - VLFeat|`` over all images and the images above ``1e-5`` (exit status 1 if any), and
the largest difference of HOGb. Images from ``--images`` are
prepared as the extraction stage prepares them (``preimage.data``: shorter side to ``--size``,
antialiased bilinear, central crop, 8 bits)::

    python bench/bench_hog.py --images imagenet-sample --count 500 --agreement
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def generated_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Photo-like test images: smooth random fields + edges + a little noise, quantised to 8 bits."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, size // 16, size // 16, generator=gen)
    smooth = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    angle = torch.rand(count, 1, 1, 1, generator=gen) * 3.1416
    stripes = (torch.cos(angle) * xx + torch.sin(angle) * yy).div(size / 6).floor().remainder(2)
    images = 0.6 * smooth + 0.3 * stripes + 0.1 * torch.rand(count, 3, size, size, generator=gen)
    return (images.clamp(0, 1) * 255).round() / 255


def image_files(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if not files:
        raise SystemExit(f"no JPEG/PNG images under {folder}")
    return files


def jpeg_images(files: list[Path], size: int) -> torch.Tensor:
    """The files as the extraction stage stores them (uint8, ``size`` x ``size``), in ``[0, 1]``."""
    from preimage.data import load_file

    return torch.stack([torch.from_numpy(load_file(path, size)) for path in files]).float() / 255


def agreement(images: torch.Tensor, names: list[str]) -> int:
    """Prints the largest ``|ours - VLFeat|`` over all images and the images above 1e-5 (HOG),
    and the largest difference of HOGb (bilinear orientations; VLFeat's ``acosf`` limits it)."""
    from preimage.features.hog import hog, rgb_to_gray
    from preimage.features.hogb import hogb
    from preimage.reference import vlfeat_hog

    if not vlfeat_hog.available():
        raise SystemExit("VLFeat's libvl.so is not installed: nothing to compare with")
    worst, worst_b = np.zeros(len(names)), np.zeros(len(names))
    with torch.no_grad():
        for i in range(len(names)):
            image = images[i : i + 1]
            gray = rgb_to_gray(image)[0].numpy()
            worst[i] = np.abs(hog(image)[0].numpy() - vlfeat_hog.vl_hog(gray, 8)).max()
            worst_b[i] = np.abs(hogb(image)[0].numpy() - vlfeat_hog.vl_hog(gray, 8, bilinear=True)).max()
    above = [(names[i], worst[i]) for i in np.flatnonzero(worst > 1e-5)]
    shape = f"{len(names)} images {images.shape[-2]}x{images.shape[-1]}"
    print(f"HOG vs VLFeat 0.9.21 vl_hog on {shape}: max |ours - VLFeat| = {worst.max():.2e} "
          f"({names[int(worst.argmax())]}); {len(above)} images above 1e-5")
    for name, err in above:
        print(f"  {name}: {err:.2e}")
    print(f"HOGb vs vl_hog with bilinear orientations on {shape}: max |ours - VLFeat| = {worst_b.max():.2e} "
          f"({names[int(worst_b.argmax())]})")
    return 1 if above else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of JPEGs (else generated images)")
    parser.add_argument("--count", type=int, default=64, help="images per repeat (default 64)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64, help="images per hog() call (default 64)")
    parser.add_argument("--agreement", action="store_true", help="compare every image with VLFeat, time nothing")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    from preimage.features.hog import hog, rgb_to_gray
    from preimage.reference import vlfeat_hog

    if args.images:
        files = image_files(args.images, args.count)
        images, names = jpeg_images(files, args.size), [path.name for path in files]
    else:
        images = generated_images(args.count, args.size)
        names = [f"generated {i}" for i in range(args.count)]
    if args.agreement:
        return agreement(images, names)
    n = images.shape[0]
    gray = rgb_to_gray(images).numpy()
    have_vlfeat = vlfeat_hog.available()
    vl = vlfeat_hog.VLHog(cell_size=8) if have_vlfeat else None

    def run_ours() -> None:
        with torch.no_grad():
            for part in images.split(args.batch):
                hog(part)

    def run_vlfeat() -> None:
        out = None
        for i in range(n):
            out = vl(gray[i], out)

    # warm-up (caches, allocator) and a correctness check on the first image
    run_ours()
    if have_vlfeat:
        run_vlfeat()
        err = float(np.abs(hog(images[:1])[0].numpy() - vlfeat_hog.vl_hog(gray[0])).max())
    ours_t, vl_t = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run_ours()
        ours_t.append(time.perf_counter() - t0)
        if have_vlfeat:
            t0 = time.perf_counter()
            run_vlfeat()
            vl_t.append(time.perf_counter() - t0)

    ours_ips = n / statistics.median(ours_t)
    source = str(args.images) if args.images else "generated"
    print(f"HOG throughput, {n} images {args.size}x{args.size} ({source}), 1 thread, "
          f"median of {args.repeats} repeats, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print()
    print("| implementation | img/s | ms/img | ratio vs VLFeat |")
    print("|---|---:|---:|---:|")
    if have_vlfeat:
        vl_ips = n / statistics.median(vl_t)
        print(f"| VLFeat 0.9.21 vl_hog (C, UoCTTI) | {vl_ips:.0f} | {1000 / vl_ips:.2f} | 1.00 |")
        print(f"| preimage hog (PyTorch, batch {args.batch}) | {ours_ips:.0f} | {1000 / ours_ips:.2f} | {ours_ips / vl_ips:.2f} |")
        print()
        print(f"max |ours - VLFeat| on image 0: {err:.2e}")
    else:
        print(f"| preimage hog (PyTorch, batch {args.batch}) | {ours_ips:.0f} | {1000 / ours_ips:.2f} | n/a (VLFeat missing) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

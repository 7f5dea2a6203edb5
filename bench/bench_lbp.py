"""Benchmark: our PyTorch LBP vs VLFeat's C ``vl_lbp_process`` vs scikit-image, one CPU thread.

    python bench/bench_lbp.py                       # 64 synthetic 256-px images
    python bench/bench_lbp.py --images /work/shared/imagenet-sample --count 64

All three run side by side in one process, alternating, ``--repeats`` times; the table gives the
median rate and the ratios (the machine is shared, so absolute numbers are noisy, ratios less so).
skimage: ``local_binary_pattern(P=8, R=1, method="nri_uniform")`` (59 codes) + hard 16×16 cell
histograms with ``np.bincount`` — the closest stock equivalent; VLFeat and ours interpolate
bilinearly and give identical values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def load_images(directory: str | None, count: int, size: int) -> torch.Tensor:
    if directory is None:
        gen = torch.Generator().manual_seed(0)
        small = torch.rand(count, 3, size // 8, size // 8, generator=gen)
        smooth = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
        noise = torch.rand(count, 3, size, size, generator=gen) * 0.1
        return ((smooth * 0.9 + noise) * 255).round() / 255
    from PIL import Image

    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if not files:
        sys.exit(f"no images in {directory}")
    arrays = []
    for f in files:
        im = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        arrays.append(torch.from_numpy(np.asarray(im)).permute(2, 0, 1))
    return torch.stack(arrays).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=None, help="directory of JPEG/PNG images (default: synthetic)")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from skimage.feature import local_binary_pattern

    from preimage.features.lbp import LBP, rgb_to_gray
    from preimage.reference import vlfeat

    images = load_images(args.images, args.count, args.size)
    n = len(images)
    ours = LBP()
    gray = rgb_to_gray(images).numpy()
    cell = 16
    cells = args.size // cell

    def run_ours() -> None:
        ours(images)

    runners = {"ours (PyTorch, CPU)": run_ours}
    if vlfeat.available():
        from preimage.reference.vlfeat_lbp import VLFeatLBP

        vl = VLFeatLBP()
        out = np.zeros((58, cells, cells), np.float32)

        def run_vlfeat() -> None:
            for g in gray:
                vl(g, cell, out=out)

        runners["VLFeat vl_lbp (C)"] = run_vlfeat
        err = max(np.abs(ours(images[i : i + 1])[0].numpy() - vl(gray[i], cell)).max() for i in range(min(n, 8)))
        print(f"max |ours - VLFeat| on the first {min(n, 8)} images: {err:.2e}")
    else:
        print("VLFeat unavailable: skipping its column")

    gray_u8 = (gray * 255).round().astype(np.uint8)

    def run_skimage() -> None:
        for g in gray_u8:
            codes = local_binary_pattern(g, 8, 1, method="nri_uniform").astype(np.int64)
            cy = np.minimum(np.arange(args.size) // cell, cells - 1)
            key = (cy[:, None] * cells + cy[None, :]) * 59 + codes
            np.bincount(key.ravel(), minlength=cells * cells * 59)

    runners["skimage local_binary_pattern + bincount"] = run_skimage

    for run in runners.values():  # warm-up
        run()
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    rate = {name: n / statistics.median(ts) for name, ts in times.items()}
    ref_ours = rate["ours (PyTorch, CPU)"]
    source = args.images or "synthetic"
    print(f"\n{n} images {args.size}×{args.size} ({source}), 1 thread, median of {args.repeats}\n")
    print("| implementation | img/s | ms/img | ours ÷ this |")
    print("|---|---:|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.0f} | {1000 / r:.3f} | {ref_ours / r:.2f}× |")


if __name__ == "__main__":
    main()

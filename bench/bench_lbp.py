"""Benchmark: our LBP vs VLFeat's C ``vl_lbp_process`` vs scikit-image, one CPU thread.

    python bench/bench_lbp.py                       # 64 synthetic 256-px images
    python bench/bench_lbp.py --images imagenet-sample --count 64

All run side by side in one process, alternating, ``--repeats`` times over the same images; the
table gives the median rate, its ratio to VLFeat's, and the ratio of the median CPU time
(``time.thread_time``, which a busy machine's waiting does not inflate). VLFeat is timed on
ready-made float32 grey images (conversion not counted, its best case). Ours is timed twice: from
the RGB tensor (grey conversion included, what ``LBP`` does in the workflow) and from the same grey
images as VLFeat, ``(N, 1, H, W)``. The grey images are those of :func:`rgb_to_gray`, so our
histograms and VLFeat's are identical (the max difference is printed). skimage:
``local_binary_pattern(P=8, R=1, method="nri_uniform")`` (59 codes) + hard 16×16 cell histograms
with ``np.bincount``, the closest stock equivalent (no bilinear weights).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for NumPy's BLAS too: set before it loads

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


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
        arrays.append(torch.from_numpy(np.array(im)).permute(2, 0, 1))
    return torch.stack(arrays).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=None, help="directory of JPEG/PNG images (default: synthetic)")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.set_num_threads(1)
    from skimage.feature import local_binary_pattern

    from preimage.features.lbp import LBP, rgb_to_gray
    from preimage.reference import vlfeat

    images = load_images(args.images, args.count, args.size)
    n = len(images)
    ours = LBP()
    gray_tensor = rgb_to_gray(images)
    gray = gray_tensor.numpy()
    gray_images = gray_tensor[:, None]
    cell = 16
    cells = args.size // cell

    runners = {
        "ours, from RGB (grey conversion included)": lambda: ours(images),
        "ours, from the grey images": lambda: ours(gray_images),
    }
    have_vlfeat = vlfeat.available()
    if have_vlfeat:
        from preimage.reference.vlfeat_lbp import VLFeatLBP

        vl = VLFeatLBP()
        out = np.zeros((58, cells, cells), np.float32)

        def run_vlfeat() -> None:
            for g in gray:
                vl(g, cell, out=out)

        runners["VLFeat vl_lbp (C), from the grey images"] = run_vlfeat
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
    load_before = os.getloadavg()
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            c, t = time.thread_time(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.thread_time() - c)
    rate = {name: n / statistics.median(ts) for name, ts in wall.items()}
    cpu_per_image = {name: statistics.median(ts) / n for name, ts in cpu.items()}
    reference = "VLFeat vl_lbp (C), from the grey images" if have_vlfeat else next(iter(runners))
    source = args.images or "synthetic"
    print(f"\n{n} images {args.size}×{args.size} ({source}), 1 thread, median of {args.repeats}; "
          f"load average {load_before[0]:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| implementation | img/s | ms/img | speed ÷ VLFeat's | CPU time: VLFeat's ÷ this |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.0f} | {1000 / r:.3f} | {r / rate[reference]:.2f}× "
              f"| {cpu_per_image[reference] / cpu_per_image[name]:.2f}× |")


if __name__ == "__main__":
    main()

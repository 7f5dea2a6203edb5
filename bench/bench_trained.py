"""ImageNet accuracy of the trained offline network ``efficientnet_lite0`` (and its speed).

Every image goes the workflow's way: decoded and resized by the data stage
(``preimage.data.resize_center_crop``: shorter side to ``--size`` S, antialiased bilinear, centre
S × S crop), then ``create("efficientnet_lite0:fc").compute`` (centre crop to ``--crop``, resized up
first when S is smaller, normalisation, forward). Top-1/top-5 are counted against the class in the
file name: ``<wnid>_<class name>.JPEG`` (``imagenet-sample`` style: one image for every
second ImageNet class). A name that matches two ImageNet classes (e.g. crane, the bird and the
machine) is resolved by the file's rank: such a folder holds class ``2 · rank``. img/s is the network
part only (CPU, no decoding). ``--size`` may be repeated, e.g. ``--size 256 --size 64`` adds the
64-px images of the embedded default, upscaled to 224 like every image smaller than the crop.

    python bench/bench_trained.py --images imagenet-sample
    python bench/bench_trained.py --images imagenet-sample --size 256 --size 64 --costs

``--costs`` adds, per documented node, the per-image output size, multiply-accumulates and time
(wall clock and process CPU time, all threads) of the network truncated at that node: the feature
stage's cost per image.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def labelled_files(directory: str, categories: list) -> list:
    """(path, class index) for every image in ``directory``, from the class name in its file name."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise SystemExit(f"{directory}: no images")
    by_name: dict = {}
    for i, name in enumerate(categories):
        by_name.setdefault(name.lower(), []).append(i)
    out = []
    for rank, p in enumerate(files):
        m = re.fullmatch(r"n\d{8}_(.+)", p.stem)
        if not m:
            raise SystemExit(f"{p.name}: expected <wnid>_<class name>{p.suffix}")
        name = m.group(1).replace("_", " ").lower()
        candidates = by_name.get(name, [])
        if len(candidates) > 1:
            candidates = [c for c in candidates if c == 2 * rank]
        if len(candidates) != 1:
            raise SystemExit(f"{p.name}: class {name!r} is not one ImageNet class")
        out.append((p, candidates[0]))
    return out


def load(files: list, size: int) -> torch.Tensor:
    from preimage.data import open_rgb, resize_center_crop

    arrays = [resize_center_crop(open_rgb(p, draft_size=size), size) for p, _ in files]
    return torch.from_numpy(np.stack(arrays)).float() / 255


def accuracy(rep, images: torch.Tensor, labels: torch.Tensor, batch: int) -> tuple:
    """(top-1, top-5, images per second of ``rep.compute``)."""
    logits, seconds = [], 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch):
            t0 = time.perf_counter()
            logits.append(rep.compute(images[start : start + batch]))
            seconds += time.perf_counter() - t0
    top5 = torch.cat(logits).topk(5, dim=1).indices
    top1 = (top5[:, 0] == labels).float().mean().item()
    top5 = (top5 == labels[:, None]).any(dim=1).float().mean().item()
    return top1, top5, len(images) / seconds


def node_costs(images: torch.Tensor, crop: int, weights: str, repeats: int) -> None:
    from preimage.features import create
    from preimage.features.efficientnet_lite import NODES

    print(f"\nper-image feature cost ({len(images)} images of {images.shape[-1]} px, crop {crop}, "
          f"{torch.get_num_threads()} threads, median of {repeats})\n")
    print("| node | output shape | values / image | M MACs / image | wall ms / image | CPU ms / image |")
    print("|---|---|---:|---:|---:|---:|")
    for node in NODES:
        rep = create(f"efficientnet_lite0:{node}", weights=weights, crop=crop)
        shape = rep.output_shape(images.shape[-2], images.shape[-1])
        with torch.no_grad():
            rep.compute(images)  # warm-up
            wall, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                rep.compute(images)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        ms, cpu_ms = (1000 * statistics.median(t) / len(images) for t in (wall, cpu))
        print(f"| `efficientnet_lite0:{node}` | {' × '.join(map(str, shape))} | {int(np.prod(shape)):,} | "
              f"{macs(rep.net, crop) / 1e6:.0f} | {ms:.1f} | {cpu_ms:.1f} |")


def macs(net: torch.nn.Module, crop: int) -> float:
    """Multiply-accumulates of one image through ``net`` (convolutions and linear layers)."""
    total = []

    def count(module, _inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total.append(output.numel() * module.in_channels // module.groups * k)
        elif isinstance(module, torch.nn.Linear):
            total.append(module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(1, 3, crop, crop))
    for h in hooks:
        h.remove()
    return float(sum(total))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="directory of <wnid>_<class name>.JPEG files")
    ap.add_argument("--size", type=int, action="append", help="data-stage image size S (repeatable; default 256)")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--weights", default="imagenet", help="imagenet | random | path")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--costs", action="store_true", help="also time every documented node")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the --costs timing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from preimage.features import create

    rep = create("efficientnet_lite0:fc", weights=args.weights, crop=args.crop)
    from preimage.features.efficientnet_lite import imagenet_categories

    files = labelled_files(args.images, imagenet_categories())
    if args.limit:
        files = files[: args.limit]
    labels = torch.tensor([label for _, label in files])
    print(f"{rep.label}, sha256 {rep.loaded.identity[:12]}…, {len(files)} images of {args.images}, "
          f"crop {args.crop}, mean/std {rep.loaded.mean[0]:g}/{rep.loaded.std[0]:g}, CPU "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}\n")
    print("| image size S | top-1 | top-5 | img/s (network) |")
    print("|---:|---:|---:|---:|")
    last = None
    for size in args.size or [256]:
        last = load(files, size)
        top1, top5, speed = accuracy(rep, last, labels, args.batch)
        print(f"| {size} | {100 * top1:.1f} % | {100 * top5:.1f} % | {speed:.1f} |", flush=True)
    if args.costs:
        node_costs(last[: args.batch], args.crop, args.weights, args.repeats)


if __name__ == "__main__":
    main()

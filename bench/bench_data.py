"""Extraction throughput and peak memory (issue: peak RSS < 1.5 GB for 10,000 images at 256 px).

    python bench/bench_data.py --images 10000 --size 256 --threads 2
    python bench/bench_data.py --root imagenet-sample --size 256 --threads 2

Peak RSS is the maximum resident set of this process and, separately, of the largest worker
(getrusage), so the sum bounds what the job needs.
"""
from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

from preimage import data
from preimage.config import validate_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000, help="builtin source: total images")
    parser.add_argument("--root", help="a folder of images (source: folder, flat) instead of builtin crops")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.root:
        count = len(data.list_images(Path(args.root)))
        params = {"source": "folder", "root": args.root, "train_per_class": count - 10, "test_per_class": 10}
    else:
        per_photo = math.ceil(args.images / (len(data.BUILTIN_TRAIN_PHOTOS) + len(data.BUILTIN_TEST_PHOTOS)))
        params = {"source": "builtin", "train_per_class": per_photo, "test_per_class": per_photo}
    params = validate_config({"data": {**params, "size": args.size}})["data"]
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {"train": Path(tmp) / "train.h5", "test": Path(tmp) / "test.h5"}
        start = time.perf_counter()
        report = data.extract(params, outputs, threads=args.threads)
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in outputs.values()) / 1e6
    total = sum(report.counts.values())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("| source | images | size | threads | wall s | img/s | peak RSS main MB | peak RSS worker MB | file MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {params['source']} | {total} | {args.size} | {args.threads} | {seconds:.1f} | {total / seconds:.0f} | "
          f"{own:.0f} | {child:.0f} | {size_mb:.0f} |")


if __name__ == "__main__":
    main()

"""Feature extraction of the embedded default's networks: one job per node against one pass per
network, side by side in one process (no job start-up counted: that saving comes on top).

For each network group of ``config/config.yaml`` (AlexNet conv1/conv5/fc6, EfficientNet-Lite0
stages.3/pool/fc trained and untrained), on builtin crops of the default's size: the seconds of
``compute_cache`` once per node (the old design: one job per node) and of
``compute_network_caches`` once for all nodes (the workflow now), alternating, median of
``--repeats``. The caches of both are compared byte for byte.

    python bench/bench_network_pass.py                  # 256 images, 3 repeats, 1 thread
    python bench/bench_network_pass.py --images 1800 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import torch
import yaml

from preimage import data
from preimage.config import validate_config
from preimage.features.cache import compute_cache, compute_network_caches
from preimage.plan import Plan
from preimage.representations import Catalog

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="training images (builtin crops, 9 classes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    catalog = Catalog(config)
    settings = config["features"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        options = {**config["data"], "train_per_class": -(-args.images // 9), "test_per_class": 1}
        images = {"train": root / "train.h5", "test": root / "test.h5"}
        data.extract(validate_config({"data": options})["data"], images)
        kwargs = dict(batch_size=settings["batch_size"], dtype=settings["dtype"], device="cpu")
        print(f"{args.images} images of {config['data']['size']} px, batch {settings['batch_size']}, "
              f"{args.threads} thread(s), median of {args.repeats}\n")
        print("| network | nodes | one job per node (s) | one pass (s) | ratio |")
        print("|---|---|---:|---:|---:|")
        totals = [0.0, 0.0]
        for group, slugs in catalog.network_groups(store="cache").items():
            names = [catalog[s].name for s in slugs]
            params = Plan(config, catalog, results=str(root)).feature_params(slugs[0])
            per_node, one_pass = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for slug, name in zip(slugs, names):
                    compute_cache(name, params, images["train"], root / "alone" / f"{slug}.h5", **kwargs)
                per_node.append(time.perf_counter() - start)
                start = time.perf_counter()
                compute_network_caches(names, params, images["train"], [root / "pass" / f"{s}.h5" for s in slugs],
                                       **kwargs)
                one_pass.append(time.perf_counter() - start)
            for slug in slugs:
                with h5py.File(root / "alone" / f"{slug}.h5") as a, h5py.File(root / "pass" / f"{slug}.h5") as b:
                    assert a["features"][:].tobytes() == b["features"][:].tobytes(), slug
            a, b = statistics.median(per_node), statistics.median(one_pass)
            totals[0] += a
            totals[1] += b
            print(f"| {group} | {', '.join(names)} | {a:.1f} | {b:.1f} | {a / b:.2f}× |")
        print(f"| **all** | | **{totals[0]:.1f}** | **{totals[1]:.1f}** | **{totals[0] / totals[1]:.2f}×** |")


if __name__ == "__main__":
    main()

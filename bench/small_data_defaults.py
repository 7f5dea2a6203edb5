"""Choose the small-data defaults by held-out error per CPU-minute.

A folder of photographs (``--images``: any folder of JPEG/PNG photographs; a few hundred ImageNet
validation images such as ``n01440764_tench.JPEG`` work) is split, with the seed, into training and
test photographs (``--test`` of them for testing). For every number of training crops per
photograph (``--crops``), decoder width (``--width``) and epoch budget (``--epochs``; training keeps
its best validation epoch) each representation's decoder is trained and scored on the test
photographs. Printed and written to ``--out``/sweep.csv: error with its 95 % interval, the
mean-image reference, and the CPU seconds of feature extraction plus training (process time, so a
busy machine slows the run but not the figure much).

    python bench/small_data_defaults.py --images <folder> --out /tmp/sweep
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from preimage import data, train
from preimage.config import validate_config
from preimage.evaluate import evaluate_decoder
from preimage.features.cache import compute_cache
from preimage.plan import Plan
from preimage.representations import Catalog


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="a folder of photographs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--test", type=int, default=250, help="photographs held out for testing")
    parser.add_argument("--train", type=int, default=250, help="photographs to train on")
    parser.add_argument("--crops", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--width", type=float, nargs="+", default=[0.25])
    parser.add_argument("--epochs", type=int, nargs="+", default=[20])
    parser.add_argument("--patience", type=int, default=0)
    parser.add_argument("--representations", nargs="+", default=["hog", "conv1", "efficientnet_lite0:stages.3"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    config = validate_config({
        "data": {"source": "folder", "root": args.images, "size": args.size, "train_per_class": args.train,
                 "test_per_class": args.test},
        "representations": args.representations,
        "features": {"hog": {"cell_size": 4}, "lbp": {"cell_size": 4},
                     "alexnet": {"weights": "random", "crop": 128},
                     "efficientnet_lite0": {"weights": "imagenet", "crop": 128}},
        "variants": {"untrained_control": "never"},
    })
    catalog = Catalog(config)
    plan = Plan(config, catalog, results=str(out))
    rows = []
    for crops in args.crops:
        folder = out / f"crops{crops}"
        images = {"train": folder / "train.h5", "test": folder / "test.h5"}
        if not images["test"].exists():
            data.extract({**config["data"], "crops_per_image": crops}, images, threads=args.threads)
        for slug in catalog.slugs:
            spec = catalog[slug]
            cost = {}
            for split in ("train", "test"):
                cache = folder / f"{slug}_{split}.h5"
                started = time.process_time()
                if not cache.exists():
                    compute_cache(spec.name, plan.feature_params(slug), images[split], cache,
                                  batch_size=64, device="cpu")
                cost[split] = time.process_time() - started
            for width in args.width:
                for epochs in args.epochs:
                    name = f"{slug}_w{width:g}_e{epochs}"
                    started = time.process_time()
                    result = train.train_decoder(
                        slug, str(folder / f"{slug}_train.h5"), str(images["train"]), str(folder / f"{name}.pt"),
                        str(folder / f"{name}.csv"), str(folder / f"{name}.ckpt"),
                        {**catalog.train_params(slug), "epochs": epochs, "width": width, "patience": args.patience,
                         "device": "cpu"})
                    train_seconds = time.process_time() - started
                    table = evaluate_decoder(slug, str(folder / f"{name}.pt"), str(folder / f"{slug}_test.h5"),
                                             str(images["test"]), str(folder / f"{slug}_train.h5"),
                                             str(images["train"]), str(folder / f"{name}_error.csv"),
                                             str(folder / f"{name}_reconstructions.h5"), device="cpu")
                    decoder = table[table.method == "decoder"].iloc[0]
                    mean = table[table.method == "mean_image"].iloc[0]
                    rows.append({"representation": slug, "crops_per_image": crops, "width": width, "epochs": epochs,
                                 "epochs_run": len(result["history"]), "kept_epoch": result["meta"]["kept_epoch"],
                                 "error": decoder.error, "ci_low": decoder.ci_low, "ci_high": decoder.ci_high,
                                 "mean_image": mean.error, "ratio_to_mean": decoder.error / mean.error,
                                 "feature_cpu_s": cost["train"], "train_cpu_s": train_seconds,
                                 "cpu_minutes": (cost["train"] + train_seconds) / 60})
                    print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "sweep.csv", index=False)
    print(table.to_markdown(index=False, floatfmt=".3f") if "tabulate" in sys.modules or _has_tabulate()
          else table.to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU-hours and feature-cache disk of config/paper.yaml and config/paper-lite.yaml, estimated
from counted FLOPs and a stated GPU throughput.

    python bench/estimate_paper_cost.py                     # both configs at 10 and 40 TFLOP/s
    python bench/estimate_paper_cost.py --config config/paper.yaml --tflops 25   # one config, your card's rate
    python bench/estimate_paper_cost.py --calibrate         # also time one decoder here, to check the counts

No GPU was available where this project was built, so the estimate is arithmetic, not a
measurement: for every GPU job of the paper DAG it counts the floating-point operations with
``torch.utils.flop_counter`` (convolutions and matrix products, forward and backward, on the
paper's networks at 256 px, AlexNet's decoders on its 227-px crop) and multiplies by the images
and epochs of the config (``train_per_class: all`` = the 1,281,167 images of the ILSVRC2012
training set). Dividing by a sustained throughput gives GPU-hours. What it leaves out
(data loading, optimiser steps, element-wise layers, job start-up) is small next to the
convolutions for these networks, but makes the figures a lower bound at a given throughput.
HOG, SIFT and LBP caches are CPU work: their core-hours come from the CPU bench figures
(README, "Speed"). Feature extraction is one forward pass per network and split
(``rules/features.smk``: every cached node of a network, e.g. AlexNet's conv4-fc8, from one pass up
to the deepest), grouped as :meth:`preimage.representations.Catalog.network_groups` groups them;
the script also prints what one pass per node (one job per layer) would cost. Layers with
``features.store: recompute`` have no extraction pass: the jobs that read them compute them. ``--calibrate`` times a training step of one paper decoder on this machine and
prints the FLOP rate it implies, so the count can be checked against a clock.

The disk table gives, per feature cache, the bytes per image (float16 dense maps; SIFT's sparse
keypoint table at the keypoint density measured on scikit-image's photographs at the config's
size) times the training and test images: what ``results/features/`` holds at full scale. It
also recommends ``features.store`` per representation: ``recompute`` where computing the
features from the pixels (which a training step reads anyway, for its targets) takes less time,
at the slowest ``--tflops``, than reading their cache at ``--disk-gbps`` (the sustained read rate
one training job gets from the file system); ``cache`` otherwise, and always for HOG, LBP (CPU
work) and SIFT (its keypoints are only cached). The config's own ``features.store`` is shown
beside the recommendation.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import alexnet

from bench_decoders import feature_shapes  # bench/ is on sys.path when run as a script
from preimage.config import validate_config
from preimage.decoders import build_decoder
from preimage.features.base import lookup
from preimage.features.alexnet import LAYERS, truncated_alexnet
from preimage.representations import Catalog, split_variant

ROOT = Path(__file__).resolve().parents[1]
ALEXNET = list(LAYERS)
#: CPU throughput of the shallow features at 256 px, images/s per process (README, "Speed").
CPU_IMAGES_PER_SECOND = {"hog": 1478.0, "sift": 41.0, "lbp": 2805.0}
CROP = 227
#: Sustained GPU throughputs (TFLOP/s) the estimate converts FLOPs into hours with (``--tflops``).
ASSUMED_TFLOPS = (10.0, 40.0)
#: Images in the ILSVRC2012 training set (``train_per_class: all`` with all 1,000 classes).
IMAGENET_TRAIN_IMAGES = 1_281_167


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def per_image_costs(size: int, width: float, reps) -> dict:
    """FLOPs per image: decoder training step, autoencoder step, AlexNet forward (feature
    extraction) and forward+backward (one M&V iteration), per representation."""
    net = alexnet(weights=None).eval()
    encoder = {layer: truncated_alexnet(net, layer) for layer in ALEXNET}
    shapes = feature_shapes(size)
    batch = 2
    out = {}
    for rep in reps:
        shape = shapes[rep]
        target = min(size, CROP) if rep in ALEXNET else size  # AlexNet's decoders reconstruct its crop
        decoder = build_decoder(lookup(rep).decoder_kind(shape), shape, target, width=width)
        x = torch.randn(batch, *shape)
        target = torch.rand(batch, 3, decoder.output_size, decoder.output_size)

        def decoder_step():
            F.mse_loss(decoder(x), target).backward()

        cost = {"decoder_step": flops(decoder_step) / batch,
                "decoder_forward": flops(lambda: decoder(x).detach()) / batch}
        if rep in ALEXNET:
            images = torch.rand(batch, 3, CROP, CROP, requires_grad=True)

            def ae_step():
                F.mse_loss(decoder(encoder[rep](images)), target).backward()

            def mv_iteration():
                encoder[rep](images).square().sum().backward()

            with torch.no_grad():
                cost["extract"] = flops(lambda: encoder[rep](images.detach())) / batch
            cost["autoencoder_step"] = flops(ae_step) / batch
            cost["mv_iteration"] = flops(mv_iteration) / batch
        out[rep] = cost
    return out


def image_counts(config: dict) -> tuple:
    """(training images, test images) of an ImageNet config; ``all`` is the whole training set."""
    data = config["data"]
    classes = data["classes"]
    n_train = (IMAGENET_TRAIN_IMAGES * classes // 1000 if data["train_per_class"] == "all"
               else classes * data["train_per_class"])
    return n_train, classes * data["test_per_class"]


def extraction_passes(config: dict, costs: dict) -> tuple:
    """(per node, per network): (pass, FLOPs) of the feature extraction over every training and
    test image, one pass per cached network node (one job per layer) and one per network group
    (every cached node of a network from one forward pass up to its deepest, as the workflow runs
    it). Recomputed nodes (``features.store: recompute``) have no extraction pass."""
    n_train, n_test = image_counts(config)
    # the representations and their variants do not depend on the images (data.root need not exist here)
    catalog = Catalog(validate_config({key: value for key, value in config.items() if key != "data"}))

    def extract(slug):
        return costs[catalog[slug].name]["extract"] * (n_train + n_test)

    per_node = [(f"features {slug}", extract(slug)) for slug in catalog.feature_slugs(True)
                if catalog.feature_store(slug) == "cache"]
    per_network = [(f"features {group}", max(extract(slug) for slug in slugs))
                   for group, slugs in catalog.network_groups(store="cache").items()]
    return per_node, per_network


def paper_jobs(config: dict, costs: dict) -> list:
    """(job, FLOPs on the GPU) for every GPU-heavy job of a paper config (feature extraction: one
    pass per network, :func:`extraction_passes`)."""
    n_train, n_test = image_counts(config)
    epochs = config["train"]["epochs"]
    epochs_of = (lambda rep: epochs.get(rep, epochs["default"])) if isinstance(epochs, dict) else (lambda rep: epochs)
    reps = config["representations"]
    controls = [r for r in reps if r in ALEXNET] if config["variants"].get("untrained_control") != "never" else []
    jobs = list(extraction_passes(config, costs)[1])
    for rep, base in [(r, r) for r in reps] + [(f"{r}-random", r) for r in controls]:
        c = costs[base]
        jobs.append((f"train {rep}", c["decoder_step"] * n_train * epochs_of(rep)))
        jobs.append((f"evaluate {rep}", c["decoder_forward"] * n_test))
    for layer in config["variants"].get("autoencoder", []):
        c = costs[layer]
        jobs.append((f"train {layer}-ae", c["autoencoder_step"] * n_train * epochs_of(f"{layer}-ae")))
        jobs.append((f"evaluate {layer}-ae", c["decoder_forward"] * n_test))
    mv = config.get("baselines", {}).get("mahendran_vedaldi", {})
    for rep in mv.get("representations", []):
        if rep in ALEXNET:
            jobs.append((f"mahendran_vedaldi {rep}", costs[rep]["mv_iteration"] * mv["images"] * mv["iterations"]))
    return jobs


def calibrate(size: int, width: float, rep: str, threads: int, repeats: int = 3) -> None:
    torch.set_num_threads(threads)
    shape = feature_shapes(size)[rep]
    decoder = build_decoder(lookup(rep).decoder_kind(shape), shape, size, width=width)
    x = torch.randn(4, *shape)
    target = torch.rand(4, 3, decoder.output_size, decoder.output_size)

    def step():
        decoder.zero_grad()
        F.mse_loss(decoder(x), target).backward()

    counted = flops(step)
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"calibration: {rep} decoder at {size} px, width {width}, batch 4 on the CPU ({threads} threads): "
          f"{counted / 4 / 1e9:.1f} GFLOP per image per step counted, {seconds / 4:.2f} s per image measured, "
          f"{counted / seconds / 1e9:.1f} GFLOP/s achieved\n")


def sift_bytes_per_image(size: int, images: int = 4) -> float:
    """Bytes per image of the sparse SIFT cache (float32 rows of ``sparse_width`` values, one per
    keypoint cell), at the keypoint density of scikit-image's photographs resized to ``size``."""
    import numpy as np
    import skimage.data
    from skimage.transform import resize

    from preimage.features import create

    sift = create("sift")
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()][:images]
    batch = np.stack([(resize(p, (size, size), anti_aliasing=True) * 255).astype(np.uint8).transpose(2, 0, 1)
                      for p in photos])
    table, offsets = sift.compute_sparse(batch, workers=1)
    return len(table) / len(batch) * sift.sparse_width * 4


def base_of(rep: str) -> str:
    """The representation a variant derives from (``fc6-ae`` → ``fc6``)."""
    return split_variant(rep)[0]


def configured_store(config: dict, rep: str, base: str) -> str:
    """The config's ``features.store`` for ``rep`` (as the catalog resolves it, families included)."""
    value = config.get("features", {}).get("store", "cache")
    if not isinstance(value, dict):
        return str(value)
    family = lookup(base).family
    return str(next((value[k] for k in (rep, base, family, "default") if k in value), "cache"))


def store_advice(rep: str, base: str, per_image: float, costs: dict, tflops: float, disk_gbps: float) -> tuple:
    """(µs per image to read the cache, µs per image to recompute it or None, recommended store)."""
    read_us = per_image / (disk_gbps * 1e9) * 1e6
    if base not in ALEXNET:
        return read_us, None, "cache"  # CPU features (HOG, LBP) or sparse keypoints (SIFT)
    compute_us = costs[base]["extract"] / (tflops * 1e12) * 1e6
    return read_us, compute_us, "recompute" if compute_us < read_us else "cache"


def cache_disk(config: dict, size: int) -> list:
    """(cache, bytes per image, images, bytes) of every feature cache of the config."""
    n_train, n_test = image_counts(config)
    shapes = feature_shapes(size)
    reps = list(config["representations"])
    controls = [r for r in reps if r in ALEXNET] if config["variants"].get("untrained_control") != "never" else []
    rows = []
    sift = None
    variants = [(f"{r}-random", r) for r in controls] + [(f"{r}-ae", r) for r in config["variants"].get("autoencoder", [])]
    for rep, base in [(r, r) for r in reps] + variants:
        if base == "sift":
            sift = sift if sift is not None else sift_bytes_per_image(size)
            per_image = sift
        else:
            per_image = 2.0 * math.prod(shapes[base])  # float16
        rows.append((rep, per_image, n_train + n_test, per_image * (n_train + n_test)))
    return rows


def report(path: str, tflops, calibrate_here: bool, threads: int, disk_gbps: float = 1.0) -> None:
    config = yaml.safe_load(Path(path).read_text())
    size, width = config["data"]["size"], config.get("decoder", {}).get("width", 1.0)
    if calibrate_here:
        calibrate(size, width, "conv5", threads)
    costs = per_image_costs(size, width, config["representations"])
    jobs = paper_jobs(config, costs)
    total = sum(f for _, f in jobs)
    n_train, n_test = image_counts(config)
    head = " | ".join(f"GPU-h at {t:g} TFLOP/s" for t in tflops)
    print(f"## {Path(path).name}: {n_train:,} training and {n_test:,} test images, {len(jobs)} GPU jobs\n")
    print(f"| job | PFLOP | {head} |")
    print("|---|---:|" + "---:|" * len(tflops))
    groups = {}
    for name, f in jobs:
        groups.setdefault(name.split()[0], []).append(f)
    for group, values in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        hours = " | ".join(f"{sum(values) / (t * 1e12) / 3600:.1f}" for t in tflops)
        print(f"| {group} ({len(values)} jobs) | {sum(values) / 1e15:.1f} | {hours} |")
    hours = " | ".join(f"**{total / (t * 1e12) / 3600:.1f}**" for t in tflops)
    print(f"| **total** | {total / 1e15:.1f} | {hours} |")
    cpu = {rep: (n_train + n_test) / CPU_IMAGES_PER_SECOND[rep] / 3600 for rep in config["representations"]
           if rep in CPU_IMAGES_PER_SECOND}
    print("\nCPU feature caches (core-hours, from the CPU bench figures): "
          + ", ".join(f"{rep} {h:.1f}" for rep, h in cpu.items()))
    top = sorted(jobs, key=lambda j: -j[1])[:3]
    print("largest jobs: " + ", ".join(f"{n} ({f / (tflops[0] * 1e12) / 3600:.1f} h at {tflops[0]:g})"
                                        for n, f in top))
    per_node, per_network = extraction_passes(config, costs)
    image_bytes = 3 * size * size * (n_train + n_test)  # one pass reads every image once
    print("\nfeature extraction over all images (cached network nodes):")
    for label, passes in (("one pass per node (one job per layer)", per_node),
                          ("one pass per network (the workflow)", per_network)):
        flop = sum(f for _, f in passes)
        hours = ", ".join(f"{flop / (t * 1e12) / 3600:.2f} GPU-h at {t:g} TFLOP/s" for t in tflops)
        print(f"  {label}: {len(passes)} passes, {flop / 1e15:.1f} PFLOP, {hours}, "
              f"{len(passes) * image_bytes / 1e12:.2f} TB of images read")
    saved = sum(f for _, f in per_node) - sum(f for _, f in per_network)
    print(f"  saving: {len(per_node) - len(per_network)} passes, {saved / 1e15:.1f} PFLOP "
          f"({saved / max(sum(f for _, f in per_node), 1):.0%} of the per-node extraction)")
    disk = cache_disk(config, size)
    slow = min(tflops)
    print(f"\n| feature cache | KB per image | images | GB | µs/img to read at {disk_gbps:g} GB/s | "
          f"µs/img to recompute at {slow:g} TFLOP/s | recommended store | configured |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    recommended = {}
    for rep, per_image, images, total_bytes in disk:
        base = base_of(rep)
        read_us, compute_us, advice = store_advice(rep, base, per_image, costs, slow, disk_gbps)
        recommended[rep] = (advice, total_bytes)
        compute = f"{compute_us:.1f}" if compute_us is not None else "(CPU)" if base != "sift" else "(sparse)"
        print(f"| {rep} | {per_image / 1e3:.1f} | {images:,} | {total_bytes / 1e9:.1f} | {read_us:.1f} | {compute} | "
              f"{advice} | {configured_store(config, rep, base)} |")
    pixels = 3 * size * size * (n_train + n_test)
    configured = sum(b for (rep, _, _, b) in disk if configured_store(config, rep, base_of(rep)) == "cache")
    print(f"| **all caches** | | | **{sum(r[3] for r in disk) / 1e9:.0f}** | | | "
          f"**{sum(b for a, b in recommended.values() if a == 'cache') / 1e9:.0f}** cached | "
          f"**{configured / 1e9:.0f}** cached |")
    print(f"\n(the images themselves: {3 * size * size / 1e3:.0f} KB per image uncompressed, {pixels / 1e9:.0f} GB)")
    # a representation's key covers its variants (fc6 → fc6-ae, fc6-random): name a variant only where it differs
    keys = []
    for rep, (advice, _) in recommended.items():
        base = base_of(rep)
        inherited = recommended[base][0] if rep != base and base in recommended else "cache"
        if advice != inherited:
            keys.append(rep)
    print("recommended: features: {store: {default: cache" + "".join(
        f", {r}: {recommended[r][0]}" for r in keys) + "}}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(ROOT / "config/paper.yaml"), str(ROOT / "config/paper-lite.yaml")])
    parser.add_argument("--tflops", type=float, nargs="+", default=list(ASSUMED_TFLOPS),
                        help="sustained GPU throughputs to convert FLOPs into hours (TFLOP/s)")
    parser.add_argument("--disk-gbps", type=float, default=1.0,
                        help="sustained read rate of one training job from the file system (GB/s), for the "
                             "cache-or-recompute recommendation")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for k, path in enumerate(args.config):
        report(path, args.tflops, args.calibrate and k == 0, args.threads, args.disk_gbps)


if __name__ == "__main__":
    main()

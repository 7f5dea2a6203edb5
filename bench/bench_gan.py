"""Training throughput of the three decoder losses (paper eq. 1 and Appendix A) for one representation.

    python bench/bench_gan.py                                   # the embedded default's -gan variant
    python bench/bench_gan.py --name fc6 --crop 227 --size 227 --width 1

One training step per batch exactly as :mod:`preimage.train` runs it (decoder forward, the objective
of :mod:`preimage.objectives` with its discriminator step, backward, Adam), on random images and
the representation's own features of them. Prints a Markdown table: images/s by wall clock and by
CPU time of this process (CPU time / threads is what the step costs on quiet cores when the machine
is shared), and the seconds one epoch of ``--train-images`` images takes at that rate.
"""
from __future__ import annotations

import argparse
import time

import torch

from preimage.decoders import build_decoder
from preimage.features import create
from preimage.objectives import PixelObjective, build_objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="efficientnet_lite0:pool")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=1662, help="images per epoch (default: 1750 minus 5 %%)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    params = {"weights": args.weights, "crop": args.crop} if ":" in args.name or args.name.startswith(("conv", "fc")) \
        else {}
    representation = create(args.name, **params)
    images = torch.rand(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        features = representation(images)
    scale = 1.0 / float(features.pow(2).mean().sqrt())
    image_size = representation.target_size(args.size)
    print(f"| {args.name} (crop {args.crop}, {args.size} px, width {args.width}, batch {args.batch}, "
          f"{args.threads} threads) | img/s wall | img/s CPU | s/epoch of {args.train_images} (CPU) |")
    print("|---|---:|---:|---:|")
    for kind in ("pixel", "feature", "gan"):
        model = build_decoder(representation.decoder_kind(tuple(features.shape[1:])), tuple(features.shape[1:]),
                              image_size, width=args.width)
        loss = {"kind": kind, "representation": {"name": args.name, "params": params}}
        objective = build_objective(loss, image_size=image_size, output_size=model.output_size, feature_scale=scale,
                                    width=args.width, lr=1e-3, betas=(0.9, 0.999), device=device,
                                    use_amp=False) or PixelObjective()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        targets = torch.nn.functional.interpolate(images, size=model.output_size, mode="bilinear", antialias=True)
        z = features * scale

        def step() -> None:
            terms = objective(model(z).float(), targets, z)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()

        step()  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = args.steps * args.batch
        per_cpu = n / (cpu / args.threads)
        print(f"| {kind} | {n / wall:.0f} | {per_cpu:.0f} | {args.train_images / per_cpu:.1f} |")


if __name__ == "__main__":
    main()

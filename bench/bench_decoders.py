"""Decoder inference and training throughput per representation (paper: 5 ms per image on a GPU).

    python bench/bench_decoders.py                      # paper networks (width 1) at 256 px
    python bench/bench_decoders.py --size 64 --width 0.25   # the embedded default's networks

Feature shapes are those of the representations at ``--size`` (AlexNet at 227 crops). Prints a
Markdown table: images/s for inference (no grad) and for training steps (Adam, MSE), the
milliseconds per image, and the ratio of our inference time to the paper's 5 ms.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from preimage.decoders import build_decoder
from preimage.features.base import lookup

PAPER_MS_PER_IMAGE = 5.0


def feature_shapes(size: int) -> dict:
    return {
        "hog": (31, -(-size // 8), -(-size // 8)),
        "sift": (133, -(-size // 4), -(-size // 4)),
        "lbp": (58, -(-size // 16), -(-size // 16)),
        "conv1": (64, 27, 27),
        "conv2": (192, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (256, 13, 13),
        "conv5": (256, 6, 6),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    }


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="representations to measure (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, {args.threads} threads, {args.size} px, width {args.width}, batch {args.batch}, "
          f"median of {args.repeats}\n")
    print("| representation | decoder | parameters | inference img/s | ms/img | vs paper 5 ms | training img/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for rep, shape in feature_shapes(args.size).items():
        if args.only and rep not in args.only:
            continue
        kind = lookup(rep).decoder_kind(shape)
        model = build_decoder(kind, shape, args.size, width=args.width).to(device)
        x = torch.randn(args.batch, *shape, device=device)
        target = torch.rand(args.batch, 3, model.output_size, model.output_size, device=device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def infer():
            with torch.no_grad():
                model.eval()
                model(x)

        def step():
            model.train()
            loss = F.mse_loss(model(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        t_infer = timed(infer, args.repeats)
        t_train = timed(step, args.repeats)
        ms = 1000 * t_infer / args.batch
        params = sum(p.numel() for p in model.parameters())
        print(f"| {rep} | {kind} | {params / 1e6:.1f}M | {args.batch / t_infer:.0f} | {ms:.1f} | "
              f"{ms / PAPER_MS_PER_IMAGE:.1f}× | {args.batch / t_train:.0f} |")


if __name__ == "__main__":
    main()

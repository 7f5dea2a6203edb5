"""The ``preimage`` command (installed with the package; also ``python -m preimage``).

Subcommands:

``preimage invert --decoder results/conv1/decoder.pt photo1.jpg photo2.png -o out/``
    reconstruct images (or, with ``--features``, rows of a feature cache) with a trained decoder
    (:mod:`preimage.invert`). Problems with what was given (an unreadable image, a missing decoder
    or a file that is no decoder, a decoder whose metadata or provenance holds odd values, weights
    that differ from the decoder's, features of the wrong shape, an output folder that is a file)
    end the command with one line ``preimage invert: error: …`` and exit status 1. Nothing is
    written outside the output folder (or, without ``-o``, outside each input's folder).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preimage", description="Inverting visual representations with "
                                     "up-convolutional networks (Dosovitskiy & Brox, CVPR 2016).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    inv = commands.add_parser(
        "invert", help="reconstruct images from their features with a trained decoder",
        description="Compute the representation a trained decoder inverts (read from its provenance: "
                    "representation, parameters, weights and their sha256, image size, crop) on image files, "
                    "or take stored features (--features), decode them and write each reconstruction as PNG "
                    "plus a sheet of the inputs above their reconstructions.")
    inv.add_argument("images", nargs="*", help="image files (any format Pillow reads), or photographs inside a package "
                                               "(skimage:camera.png, matplotlib:grace_hopper.jpg)")
    inv.add_argument("--decoder", required=True, help="a decoder.pt written by the workflow (results/<rep>/decoder.pt)")
    inv.add_argument("-o", "--out", default=None,
                     help="output folder (default: beside each image; required with --features)")
    inv.add_argument("--features", default=None, metavar="H5",
                     help="decode the rows of this feature cache (results/features/<rep>/<split>.h5) instead of images")
    inv.add_argument("--images", dest="image_store", default=None, metavar="H5",
                     help="with --features: the image store the features were computed from (default: the one the "
                          "cache records), shown on the sheet and compared with by --error")
    inv.add_argument("--limit", type=int, default=None, help="with --features: decode only the first LIMIT rows")
    inv.add_argument("--weights", default=None,
                     help="where the representation's weights are, when not where the decoder's training found them "
                          "(a state-dict file); their sha256 must be the recorded one")
    inv.add_argument("--error", action="store_true",
                     help="report the normalised reconstruction error against the inputs (paper §5.1; as evaluate)")
    inv.add_argument("--normaliser", default="auto",
                     help="the error's normaliser: auto (evaluate's, from the error.csv beside the decoder, else "
                          "inputs), inputs (the mean distance between the inputs), a number, or an error.csv")
    inv.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    inv.add_argument("--batch-size", type=int, default=16)
    inv.add_argument("--no-sheet", action="store_true", help="write no sheet")
    inv.add_argument("--sheet-max", type=int, default=64, help="images on the sheet (the first ones; default 64)")
    inv.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    inv.set_defaults(func=_invert)
    return parser


def _fail(command: str, message: str) -> int:
    text = " ".join(str(message).split("\n")[0].split())
    print(f"preimage {command}: error: {text}", file=sys.stderr)
    return 1


def _invert(args: argparse.Namespace) -> int:
    import torch

    from preimage import atomic_files, torch_files
    from preimage.decoding import NoProvenance, TrainedDecoder, WeightsMismatch
    from preimage.devices import resolve_device
    from preimage.invert import InvertError, invert_features, invert_images
    from preimage.weights import WeightsUnavailableError

    if args.features is None and not args.images:
        return _fail("invert", "give image files to invert, or --features H5")
    if args.features is not None and args.images:
        return _fail("invert", "give either image files or --features, not both")
    if args.features is not None and args.out is None:
        return _fail("invert", "--features needs an output folder (-o)")
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1) or args.sheet_max < 1:
        return _fail("invert", "--batch-size, --limit and --sheet-max must be positive")
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        return _fail("invert", f"--device {args.device}: {err}")
    expected = (InvertError, NoProvenance, WeightsMismatch, atomic_files.DamagedFile,
                torch_files.UnsafeFile, FileNotFoundError, IsADirectoryError, PermissionError)
    try:
        decoder = TrainedDecoder(args.decoder, device)
        options = dict(error=args.error, normaliser=args.normaliser, sheet=not args.no_sheet,
                       sheet_max=args.sheet_max, progress=not args.quiet, batch_size=args.batch_size)
        with torch.inference_mode():
            if args.features is not None:
                result = invert_features(decoder, args.features, args.out, images_path=args.image_store,
                                         limit=args.limit, **options)
            else:
                result = invert_images(decoder, args.images, args.out, weights=args.weights, **options)
    except WeightsUnavailableError as err:
        return _fail("invert", f"{str(err).splitlines()[0]} (--weights PATH says where they are)")
    except expected as err:
        return _fail("invert", str(err))
    except ValueError as err:  # a shape that does not fit the decoder, a crop the network cannot take …
        return _fail("invert", str(err))
    if not args.quiet:
        _report(decoder, result)
    return 0


def _report(decoder, result) -> None:
    where = {str(p.parent) for p in result.outputs}
    print(f"{decoder.label}: {len(result.outputs)} reconstruction(s) written to {', '.join(sorted(where))}"
          + (f"; sheet {result.sheet}" if result.sheet else ""))
    if result.summary is None:
        return
    s = result.summary
    print(f"normalised error {s['error']:.4f} [95% CI {s['ci_low']:.4f}, {s['ci_high']:.4f}] over {s['n']} image(s) "
          f"at {s['eval_size']} px; normaliser {s['normaliser']:.4g} ({s['normaliser_source']}); "
          f"per image: {result.errors_csv}")
    for method, name in (("decoder", "evaluate's decoder"), ("mean_image", "mean training image")):
        row = (result.reference or {}).get(method)
        if row is not None:
            print(f"  {name} on the test set: {row['error']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
                  + (f" ({int(row['n_test'])} images)" if "n_test" in row else ""))


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

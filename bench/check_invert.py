"""`preimage invert` on images the workflow never saw, against `evaluate`'s error for the decoder.

After the embedded default has run (``snakemake --cores 2 all``), this script

1. draws new crops of the builtin photographs exactly as the data stage draws its test crops (same
   photographs, same held-out strips, same scales and mirroring) but with another seed
   (:func:`preimage.data.new_builtin_test_crops`), drops any that coincide with a test crop, and
   writes them as PNG files at their native resolution;
2. runs the console script on them, ``preimage invert --decoder results/<rep>/decoder.pt <files>
   -o <out> --error``, which prepares, encodes and decodes each file and computes the paper's
   normalised error (§5.1) with `evaluate`'s normaliser;
3. runs it on the test split's stored features (``--features``), which gives `evaluate`'s error
   per test image, so that each photograph's new crops are compared with its own test crops;
4. runs it again on two new crops alone, of two photographs (the two-image command of the README),
   compared with those two photographs' test crops, and on pictures from outside the nine
   photographs (``--others``), which nothing in the data resembles;
5. prints the rows side by side and whether the new crops' mean error lies inside `evaluate`'s
   bootstrap interval.

    python bench/check_invert.py --results results --representation conv1

Exit status 0 also when the means differ: the script measures, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image

from preimage import data, metrics

OTHERS = ["skimage:motorcycle_right.png", "skimage:camera.png", "skimage:brick.png", "skimage:coins.png",
          "skimage:color.png", "matplotlib:Minduka_Present_Blue_Pack.png"]


def write_new_crops(results: Path, per_class: int, seed: int, folder: Path) -> tuple[list[Path], list[int]]:
    with h5py.File(results / "data/test.h5", "r") as store:
        params = json.loads(store.attrs["params"])
        taken = {p.decode() for p in store["paths"][:]}
    folder.mkdir(parents=True, exist_ok=True)
    files, labels = [], []
    for index, item in enumerate(data.new_builtin_test_crops(params, per_class, seed)):
        if item.display in taken:
            continue
        left, top, side = item.box
        crop = data.open_rgb(item.path).crop((left, top, left + side, top + side))
        if item.flip:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        name = item.name.partition(":")[2].rsplit(".", 1)[0]
        files.append(folder / f"{index:03d}_{name}.png")
        labels.append(item.label)
        crop.save(files[-1])
    return files, labels


def invert(decoder: Path, inputs: list, out: Path, *options: str) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    command = ["preimage", "invert", "--decoder", str(decoder), *map(str, inputs), "-o", str(out), "--error", "--quiet",
               *options]
    subprocess.run(command, check=True)
    (table,) = out.glob("errors_*.csv")
    return pd.read_csv(table)


def row(label: str, errors: np.ndarray, seed: int) -> dict:
    summary = metrics.error_summary(errors, seed)
    return {"images": label, "n": summary["n"], "error": summary["error"], "ci_low": summary["ci_low"],
            "ci_high": summary["ci_high"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", type=Path)
    parser.add_argument("--representation", default="conv1")
    parser.add_argument("--per-class", type=int, default=11, help="new crops per photograph (the test split has 11)")
    parser.add_argument("--seed", type=int, default=1, help="the new crops' seed (the data stage's is 0)")
    parser.add_argument("--others", nargs="*", default=OTHERS, help="pictures from outside the nine photographs")
    parser.add_argument("--out", type=Path, default=None, help="where crops and reconstructions go (default: a temp dir)")
    args = parser.parse_args(argv)

    decoder = args.results / args.representation / "decoder.pt"
    evaluated = pd.read_csv(args.results / args.representation / "error.csv").set_index("method")
    reference = evaluated.loc["decoder"]
    out = args.out or Path(tempfile.mkdtemp(prefix="check_invert_"))
    crops, labels = write_new_crops(args.results, args.per_class, args.seed, out / "crops")
    labels = np.asarray(labels)
    with h5py.File(args.results / "data/test.h5", "r") as store:
        test_labels = store["labels"][:]
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in store["classes"][:]]

    cache = args.results / "features" / args.representation / "test.h5"
    test = invert(decoder, [], out / "test_split", "--features", str(cache), "--no-sheet")["error"].to_numpy()
    new = invert(decoder, crops, out / "new_crops")["error"].to_numpy()
    pair = [int(np.flatnonzero(labels == label)[0]) for label in (0, 1)]  # one new crop of each of two photographs
    two = invert(decoder, [crops[i] for i in pair], out / "two_crops")["error"].to_numpy()
    others = invert(decoder, args.others, out / "others")

    rows = [{"images": f"evaluate: the {int(reference['n_test'])} test crops", "n": int(reference["n_test"]),
             "error": reference["error"], "ci_low": reference["ci_low"], "ci_high": reference["ci_high"]},
            row("invert --features: the test crops", test, 0),
            row("invert: new crops of the held-out strips", new, 0),
            row(f"evaluate: test crops of {classes[0]} and {classes[1]}", test[np.isin(test_labels, (0, 1))], 0),
            row(f"invert: one new crop of {classes[0]} and one of {classes[1]}", two, 0),
            row("invert: pictures outside the nine photographs", others["error"].to_numpy(), 0)]
    pd.set_option("display.width", 200)
    print(f"{args.representation}: normalised error (normaliser {reference['normaliser']:.3f}, evaluate's)")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    per_photo = pd.DataFrame([{"photograph": name, "test crops": test[test_labels == k].mean(),
                               "new crops": new[labels == k].mean()} for k, name in enumerate(classes)])
    print(per_photo.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("per picture outside the photographs:",
          ", ".join(f"{n} {e:.3f}" for n, e in zip(others["input"], others["error"])))
    inside = reference["ci_low"] <= new.mean() <= reference["ci_high"]
    print(f"new crops' mean {'inside' if inside else 'OUTSIDE'} evaluate's interval "
          f"[{reference['ci_low']:.3f}, {reference['ci_high']:.3f}]; mean image {evaluated.loc['mean_image', 'error']:.3f}; "
          f"files under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

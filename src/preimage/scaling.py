"""The data-scaling curve (ours, beyond the paper): held-out error against the number of training
images, and what a power law fitted to it predicts for the paper's training set.

A representation's decoder is trained again on nested subsets of the training photographs
(:func:`preimage.train.nested_subset`: each subset holds the smaller ones), with the same
validation images and schedule; every decoder, the representation's own one included, is scored
on the same test images (the paper's normalised error, §3). The fit is a power law
``error = b · n^(−c)`` by least squares in log-log coordinates over the measured points; its 95 %
interval comes from a paired bootstrap over the test images (every resample refits the curve), so
it says how much the test set's size limits the extrapolation. A pure power law has no floor: its
prediction at the paper's 1.28 M images is an optimistic bound, not a forecast of the paper's
numbers, and the table says how many decades it reaches beyond the data. :func:`scaling_curve`
draws the curve and the fit.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from preimage import atomic_files, image_store, metrics

#: ILSVRC2012's training images: the paper's training set (§4)
PAPER_TRAINING_IMAGES = 1_281_167

COLUMNS = ["representation", "label", "n_train", "fraction", "error", "ci_low", "ci_high", "n_test"]
FIT_COLUMNS = ["representation", "exponent", "exponent_low", "exponent_high", "extrapolate_to", "predicted",
               "predicted_low", "predicted_high", "decades_beyond_data"]


def test_errors(decoder_path: str, test_features_path: str, test_images_path: str, csv_path: str,
                batch_size: int = 64, device: str = "auto") -> pd.DataFrame:
    """Per-test-image normalised errors of one decoder (the errors ``evaluate`` averages), with
    the number of training photographs it saw (``n_train``), written to ``csv_path``."""
    import torch

    from preimage.decoding import TrainedDecoder
    from preimage.features.cache import FeatureStore

    decoder = TrainedDecoder(decoder_path, device)
    errors = []
    with torch.no_grad(), decoder.images(test_images_path) as images, \
            FeatureStore(test_features_path) as features:
        normaliser = metrics.mean_pairwise_distance(images.float_view())
        for offset, recon in decoder.reconstruct(features, batch_size):
            truth = image_store.to_float(images.read(offset, offset + len(recon)))
            errors.append(metrics.normalised_error(recon, truth, normaliser))
    meta = decoder.meta
    n_train = meta.get("n_train_sources", meta.get("n_train"))
    if n_train is None:
        raise ValueError(f"{decoder_path} does not record how many training images it saw; retrain it")
    table = pd.DataFrame({"image": np.arange(sum(len(e) for e in errors)), "error": np.concatenate(errors),
                          "n_train": int(n_train), "fraction": float(meta.get("subset") or 1.0),
                          "label": meta.get("label", "")})
    atomic_files.write_csv(table, csv_path)
    return table


def fit_power_law(n_train: Sequence[float], errors: Sequence[float]) -> Tuple[float, float]:
    """``(b, c)`` of ``error = b · n^(−c)``, least squares on log error against log n."""
    x, y = np.log(np.asarray(n_train, float)), np.log(np.asarray(errors, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a power law needs errors at two or more training-set sizes")
    slope, intercept = np.polyfit(x, y, 1)
    return float(np.exp(intercept)), float(-slope)


def scaling_table(per_image: Mapping[str, Sequence[str]], extrapolate_to: int = PAPER_TRAINING_IMAGES,
                  n_boot: int = 1000, seed: int = 0) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The curve (one row per representation and training-set size, with the bootstrap interval
    of the mean error) and the fit (one row per representation: the exponent c and the error
    predicted at ``extrapolate_to`` images, each with its paired-bootstrap 95 % interval).
    ``per_image`` maps a representation to the CSVs :func:`test_errors` wrote for it."""
    rows, fits = [], []
    for representation, paths in per_image.items():
        tables = sorted((pd.read_csv(p) for p in paths), key=lambda t: int(t["n_train"].iloc[0]))
        sizes = np.array([int(t["n_train"].iloc[0]) for t in tables], float)
        matrix = np.stack([t["error"].to_numpy(float) for t in tables])  # (sizes, test images)
        if len({m.shape for m in matrix}) > 1:
            raise ValueError(f"{representation}: the scaling decoders were scored on different test sets")
        for table, errors in zip(tables, matrix):
            rows.append(metrics.error_summary(errors, seed, count_key="n_test", representation=representation,
                                              label=str(table["label"].iloc[0]), n_train=int(table["n_train"].iloc[0]),
                                              fraction=float(table["fraction"].iloc[0])))
        if len(np.unique(sizes)) < 2:
            continue
        b, c = fit_power_law(sizes, matrix.mean(1))
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, matrix.shape[1], size=(n_boot, matrix.shape[1]))
        boot = np.array([fit_power_law(sizes, matrix[:, pick].mean(1)) for pick in draws])
        predicted = boot[:, 0] * float(extrapolate_to) ** (-boot[:, 1])
        fits.append({"representation": representation, "exponent": c,
                     "exponent_low": float(np.quantile(boot[:, 1], 0.025)),
                     "exponent_high": float(np.quantile(boot[:, 1], 0.975)),
                     "extrapolate_to": int(extrapolate_to), "predicted": b * float(extrapolate_to) ** (-c),
                     "predicted_low": float(np.quantile(predicted, 0.025)),
                     "predicted_high": float(np.quantile(predicted, 0.975)),
                     "decades_beyond_data": math.log10(extrapolate_to / sizes.max())})
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(fits, columns=FIT_COLUMNS)


def write_scaling_tables(per_image: Mapping[str, Sequence[str]], csv_path: str, fit_csv_path: str, md_path: str,
                         extrapolate_to: int = PAPER_TRAINING_IMAGES, seed: int = 0) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`scaling_table` written as two CSVs and one Markdown file."""
    curve, fit = scaling_table(per_image, extrapolate_to, seed=seed)
    atomic_files.write_csv(curve, csv_path)
    atomic_files.write_csv(fit, fit_csv_path)
    with atomic_files.atomic_path(md_path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(scaling_markdown(curve, fit))
    return curve, fit


def mean_image_errors(error_csvs: Mapping[str, str]) -> dict:
    """Representation → the mean-image reference error of its ``error.csv`` (the line a decoder
    trained on any number of images has to stay below)."""
    found = {}
    for representation, path in error_csvs.items():
        rows = pd.read_csv(path)
        rows = rows[rows.method == "mean_image"]
        if len(rows):
            found[representation] = float(rows.error.iloc[0])
    return found


def scaling_markdown(curve: pd.DataFrame, fit: pd.DataFrame) -> str:
    """The curve and the fit as Markdown tables."""
    lines = ["| representation | training images | error | 95 % CI |", "|---|---:|---:|---|"]
    for _, row in curve.iterrows():
        lines.append(f"| {row.representation} | {row.n_train} | {row.error:.3f} | {row.ci_low:.3f}-{row.ci_high:.3f} |")
    lines += ["", "| representation | exponent c (error ∝ n^-c) | 95 % CI | predicted error at n | 95 % CI | "
              "decades beyond the data |", "|---|---:|---|---:|---|---:|"]
    for _, row in fit.iterrows():
        lines.append(f"| {row.representation} | {row.exponent:.3f} | {row.exponent_low:.3f}-{row.exponent_high:.3f} | "
                     f"{row.predicted:.3f} (n = {row.extrapolate_to:,}) | {row.predicted_low:.3f}-"
                     f"{row.predicted_high:.3f} | {row.decades_beyond_data:.1f} |")
    return "\n".join(lines) + "\n"


def scaling_curve(curve: pd.DataFrame, fit: pd.DataFrame, path: str | os.PathLike,
                  mean_image: Optional[Mapping[str, float]] = None) -> None:
    """The data-scaling curve: held-out error against training images
    (log axis) with 95 % intervals per representation, the fitted power law (solid over the data,
    dotted beyond it) and its prediction at the paper's training-set size with its interval;
    ``mean_image`` (representation → error) adds each one's mean-image reference as a thin line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from preimage.plotting import save_figure

    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for k, (representation, rows) in enumerate(curve.groupby("representation", sort=False)):
        colour = f"C{k % 10}"
        rows = rows.sort_values("n_train")
        n = rows["n_train"].to_numpy(float)
        ax.errorbar(n, rows["error"], yerr=[rows["error"] - rows["ci_low"], rows["ci_high"] - rows["error"]],
                    fmt="o", color=colour, ms=4, capsize=2, label=representation)
        line = fit[fit.representation == representation]
        if len(line):
            row = line.iloc[0]
            b = row.predicted * row.extrapolate_to ** row.exponent
            inside = np.geomspace(n.min(), n.max(), 20)
            beyond = np.geomspace(n.max(), row.extrapolate_to, 20)
            ax.plot(inside, b * inside ** -row.exponent, "-", color=colour, lw=1)
            ax.plot(beyond, b * beyond ** -row.exponent, ":", color=colour, lw=1)
            ax.errorbar([row.extrapolate_to], [row.predicted],
                        yerr=[[row.predicted - row.predicted_low], [row.predicted_high - row.predicted]],
                        fmt="D", color=colour, ms=4, capsize=2)
        if mean_image and representation in mean_image:
            ax.axhline(mean_image[representation], color=colour, lw=0.6, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("training images (log scale); diamonds: the power law at the paper's training set")
    ax.set_ylabel("normalised reconstruction error")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("What more training images buy: held-out error, 95 % intervals, power-law fit", fontsize=10)
    save_figure(fig, path)

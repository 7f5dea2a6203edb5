"""Every figure of the workflow, one function each (paper Figures 3, 5, 7, 10; the analysis figures).

Figures are PNGs written atomically (:func:`preimage.plotting.save_figure`);
:func:`preimage.plotting.show_indices` fixes the test images every figure shows.
:func:`reconstructions_png` (one representation), :func:`group_figure` (Figures 3 and 5),
:func:`error_by_layer` (Figure 7), :func:`interpolation_overview` (Figure 10),
:func:`loss_comparison` (Figures 12-13) and :func:`mahendran_vedaldi_samples` draw from the
stores the evaluation, the analyses and the baselines wrote; :func:`preimage.plotting.image_grid`
is the grid every analysis figure is drawn with. Titles name the weights that produced AlexNet features (e.g. "untrained
AlexNet"), so a figure of the embedded default can never be mistaken for the paper's. The tables
are in :mod:`preimage.tables`.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from preimage import hdf5, image_store  # noqa: E402
from preimage.plotting import analysis_title, image_grid, save_figure, show_indices  # noqa: E402
from preimage.representations import ALEXNET_LAYERS, node_label  # noqa: E402


def reconstructions_figure(inputs: np.ndarray, rows: Mapping[str, np.ndarray], path: str | os.PathLike,
                           title: Optional[str] = None) -> None:
    """Inputs above one row of reconstructions per representation (Figures 3 and 5)."""
    image_grid([("input", inputs), *rows.items()], path, title)


def reconstructions_png(test_images_path: str, reconstructions_h5: str, png_path: str, n_show: int) -> None:
    """Inputs above reconstructions for the fixed test images (the per-representation figure)."""
    with hdf5.reading(reconstructions_h5) as handle, \
            image_store.ImageStore(test_images_path, crop=handle["reconstructions"].shape[-1]) as images:
        pick = show_indices(len(images), n_show)
        attrs = hdf5.read_attrs(handle)
        recon = handle["reconstructions"][np.sort(pick)]
        reconstructions_figure(images.take(pick), {attrs["representation"]: recon}, png_path,
                               title=f"{attrs['representation']}: {attrs.get('label', '')}")


def group_figure(test_images_path: str, reconstructions: Dict[str, str], png_path: str, n_show: int) -> None:
    """Inputs above one row per representation (paper Figures 3 and 5)."""
    rows, labels = {}, set()
    with image_store.ImageStore(test_images_path) as images:
        pick = show_indices(len(images), n_show)
        inputs = images.take(pick)
    for rep, path in reconstructions.items():
        with hdf5.reading(path) as handle:
            rows[rep] = handle["reconstructions"][np.sort(pick)]
            label = str(hdf5.read_attrs(handle).get("label", ""))
            if label and label != rep:
                labels.add(label)
    # every row shows the centre region the smallest reconstruction covers (AlexNet: its crop)
    side = min([inputs.shape[-1], *(r.shape[-1] for r in rows.values())])
    inputs = image_store.centre_crop(inputs, side)
    rows = {rep: image_store.centre_crop(r, side) for rep, r in rows.items()}
    title = "Reconstructions from " + ", ".join(rows) + (f" — {'; '.join(sorted(labels))}" if labels else "")
    reconstructions_figure(inputs, rows, png_path, title=title)


def interpolation_overview(strips: Mapping[str, str], png_path: str) -> None:
    """The first interpolation pair of every layer, one row each (Figure 10 layout); ``strips``
    maps a representation to the ``interpolation.h5`` of :func:`preimage.analyses.interpolation`."""
    rows = []
    for rep, path in strips.items():
        with hdf5.reading(path) as handle:
            rows.append((rep, handle["strips"][0]))
    image_grid(rows, png_path, title="Interpolation between the features of two test images (cf. paper Figure 10)")


#: Curves of Figure 7 beyond the decoder: variants of the layers (suffix) and feature perturbations.
VARIANT_CURVES = {"-ae": ("D-", "C3", "autoencoder"), "-random": ("v-", "C4", "untrained {network} (control)"),
                  "-feature": ("^-", "C6", "feature-space loss (Appendix A)"),
                  "-gan": ("*-", "C5", "feature + adversarial loss (Appendix A)")}
PERTURBATION_CURVES = {"binarise": ("o--", "C0", "binarised"), "dropout": ("x--", "C0", "dropout 50 %"),
                       "drop_small_binarise": ("o:", "C1", "drop smallest 50 % + binarise"),
                       "drop_random_binarise": ("x:", "C1", "drop random 50 % + binarise")}


def figure7_title(table: pd.DataFrame) -> str:
    """Title of :func:`error_by_layer` naming the network's weights (e.g. "AlexNet (untrained,
    random:0)"), read from the decoder rows' labels, so an untrained run never looks like the paper's."""
    rows = table[(table.method == "decoder") & table.representation.isin(ALEXNET_LAYERS)]
    labels = sorted(set(rows["label"].dropna())) if "label" in rows else []
    network = labels[0] if len(labels) == 1 else "AlexNet"
    return f"Reconstruction error by layer of {network} (cf. paper Figure 7)"


def error_by_layer(table: pd.DataFrame, path: str | os.PathLike, title: Optional[str] = None,
                   perturbations: Optional[pd.DataFrame] = None, layers: Optional[Sequence[str]] = None,
                   network: str = "AlexNet") -> List[str]:
    """Figure 7 analogue: normalised error per layer of a network (AlexNet's conv1-fc8 unless
    ``layers`` names others, e.g. the nodes of EfficientNet-Lite0 from shallow to deep), with the
    reference rows, the autoencoder and untrained-network variants, and (dashed) the perturbed
    features (§5.4). Returns the labels of the curves drawn."""
    reps = set(table["representation"])
    layers = [l for l in (ALEXNET_LAYERS if layers is None else layers) if l in reps]
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    x = np.arange(len(layers))

    def curve(rows: pd.DataFrame, key: str, names: Sequence[str], value: str) -> Optional[np.ndarray]:
        found = [rows[(rows[key] == n)] for n in names]
        if not any(len(f) for f in found):
            return None
        return np.array([f.iloc[0][value] if len(f) else np.nan for f in found], dtype=float)

    styles = {"decoder": ("o-", "C0", "our decoder"), "nearest_neighbour": ("s--", "C2", "nearest neighbour in feature space"),
              "mean_image": (":", "C7", "mean training image")}
    for method, (style, colour, name) in styles.items():
        rows = table[table.method == method]
        err = curve(rows, "representation", layers, "error")
        if err is None or np.isnan(err).all():
            continue
        ax.plot(x, err, style, color=colour, label=name)
        if method == "decoder":
            low = curve(rows, "representation", layers, "ci_low")
            high = curve(rows, "representation", layers, "ci_high")
            ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    decoders = table[table.method == "decoder"]
    for suffix, (style, colour, name) in VARIANT_CURVES.items():
        err = curve(decoders, "representation", [l + suffix for l in layers], "error")
        if err is not None:
            ax.plot(x, err, style, color=colour, label=name.format(network=network))
    if perturbations is not None and len(perturbations):
        for suffix, colour_override in (("", None), ("-ae", "C3")):
            for kind, (style, colour, name) in PERTURBATION_CURVES.items():
                rows = perturbations[perturbations.perturbation == kind]
                err = curve(rows, "representation", [l + suffix for l in layers], "error")
                if err is not None and not np.isnan(err).all():
                    ax.plot(x, err, style, color=colour_override or colour, alpha=0.8, ms=4,
                            label=f"{name}{' (autoencoder)' if suffix else ''}")
    ax.set_xticks(x, [node_label(l) for l in layers], rotation=0 if len(layers) < 9 else 30)
    ax.set_ylabel("normalised reconstruction error")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or (figure7_title(table) if network == "AlexNet"
                           else f"Reconstruction error by layer of {network} (cf. paper Figure 7)"), fontsize=10)
    labels = [line.get_label() for line in ax.get_lines()]
    save_figure(fig, path)
    return labels


def _numbers(row: Optional[Mapping]) -> str:
    """``image / feature / sharpness`` of an error.csv or Mahendran & Vedaldi row ("–" where missing)."""
    if row is None:
        return ""

    def fmt(key: str, digits: int) -> str:
        value = row.get(key)
        return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    return f"{fmt('error', 3)} / {fmt('feature_error', 3)} / {fmt('sharpness', 2)}"


def loss_comparison(test_images_path: str, decoders: Mapping[str, Tuple[str, str]], png_path: str, n_show: int,
                    mahendran_vedaldi: Optional[Tuple[str, str]] = None, title: Optional[str] = None) -> None:
    """Paper Figures 12-13: the input images, then the reconstructions of the decoders trained with
    the losses of Appendix A and of the simple decoder, then Mahendran & Vedaldi's pre-images.

    ``decoders`` maps a row label (``fc6-gan``, ``fc6-feature``, ``fc6``) to its
    ``(reconstructions.h5, error.csv)``; ``mahendran_vedaldi`` is the optimisation's ``(images .h5,
    csv)`` for the same representation, or None. The images shown are ``n_show`` of the ones the
    optimisation inverted (evenly spaced among them) when it ran, else the usual
    :func:`show_indices`. Row labels give image error / feature error / sharpness: the decoders' over
    all test images (their error.csv), the optimisation's over its own images, with its sharpness
    computed here on them (:func:`preimage.metrics.sharpness`).
    """
    from preimage import metrics

    first = next(iter(decoders.values()))[0]
    with hdf5.reading(first) as handle:
        side = handle["reconstructions"].shape[-1]
    mv_images, mv_row = None, None
    with image_store.ImageStore(test_images_path, crop=side) as images:
        if mahendran_vedaldi is not None:
            with hdf5.reading(mahendran_vedaldi[0]) as handle:
                inverted = np.asarray(handle["indices"])
                chosen = show_indices(len(inverted), n_show)
                pick = inverted[chosen]
                mv_images = np.asarray(handle["mahendran_vedaldi"])[chosen]
                all_mv = np.asarray(handle["mahendran_vedaldi"])
            table = pd.read_csv(mahendran_vedaldi[1])
            rows = table[table.method == "mahendran_vedaldi"]
            mv_row = dict(rows.iloc[0]) if len(rows) else {}
            mv_row["sharpness"] = metrics.sharpness(image_store.to_float(all_mv), image_store.to_float(images.take(inverted)))
        else:
            pick = show_indices(len(images), n_show)
        inputs = images.take(pick)
    grid = [("input", inputs)]
    for label, (h5, csv) in decoders.items():
        with hdf5.reading(h5) as handle:
            recon = handle["reconstructions"][np.sort(pick)]  # pick is sorted (show_indices)
        table = pd.read_csv(csv)
        rows = table[table.method == "decoder"]
        grid.append((f"{label}\n{_numbers(dict(rows.iloc[0]) if len(rows) else None)}", recon))
    if mv_images is not None:
        grid.append((f"Mahendran &\nVedaldi\n{_numbers(mv_row)}", mv_images))
    image_grid(grid, png_path, title=(title or "Reconstructions with the losses of Appendix A (cf. paper Figures 12-13)")
               + "\nrow labels: image error / feature error / sharpness")


def mahendran_vedaldi_samples(h5_path: str, csv_path: str, test_images_path: str, png_path: str, n_show: int = 6) -> None:
    """The K reconstructions per code of :func:`preimage.baselines.mahendran_vedaldi` (restarts > 1),
    read from its ``mahendran_vedaldi.h5`` and ``.csv``: one row per restart under the inputs (M&V's
    Figure 7 layout), titled with their diversity."""
    with hdf5.reading(h5_path) as handle:
        if "mahendran_vedaldi_samples" not in handle:
            raise ValueError(f"{h5_path} holds one reconstruction per code (baselines.mahendran_vedaldi.restarts: 1)")
        indices = np.asarray(handle["indices"])
        count = min(n_show, len(indices))
        samples = np.asarray(handle["mahendran_vedaldi_samples"][:count])  # (n, K, 3, S, S) uint8
        attrs = hdf5.read_attrs(handle)
    with image_store.ImageStore(test_images_path, crop=samples.shape[-1]) as images:
        inputs = images.take(indices[:count])
    row = pd.read_csv(csv_path).set_index("method").loc["mahendran_vedaldi"]
    rows = [("input", inputs)] + [(f"restart {r + 1}", samples[:, r]) for r in range(samples.shape[1])]
    image_grid(rows, png_path, title=analysis_title(
        str(attrs.get("representation", "")), str(attrs.get("label", "")),
        f"{samples.shape[1]} pre-images per code from different noise (Mahendran & Vedaldi); diversity "
        f"{row['diversity']:.3f}"))


def scorecard_figure(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """The scorecard (:mod:`preimage.scorecard`): normalised error against top-5 agreement
    with the classifier, one marker per method and one point per representation, 95 % intervals
    of the agreement as vertical bars; x itself is the ceiling at error 0, agreement 1."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for k, (method, rows) in enumerate(table.groupby("method", sort=False)):
        ax.errorbar(rows["error"], rows["top5"], yerr=[rows["top5"] - rows["top5_low"], rows["top5_high"] - rows["top5"]],
                    fmt="*osD^vx"[k % 7], color=f"C{k % 10}", ms=7 if method == "input" else 5, capsize=2, lw=0.8,
                    alpha=0.85, label=f"{rows['method_label'].iloc[0]} ({len(rows)})")
    ax.set_xlabel("normalised reconstruction error (lower is better)")
    ax.set_ylabel("top-5 agreement with the classifier")
    ax.set_xlim(left=-0.02)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method (representations)",
              title_fontsize=7)
    ax.set_title("Does the classifier still see the same thing? One point per representation and method", fontsize=10)
    save_figure(fig, path)

"""Every figure and table of the workflow, one function each (paper Table 2, Figures 3, 5, 7).

Figures are PNGs written atomically; tables are CSV plus a Markdown rendering. Titles say which
weights produced AlexNet features (e.g. "untrained AlexNet"), so a figure made from the offline
default can never be mistaken for the paper's.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from preimage import store  # noqa: E402

#: Published values (paper Table 2): average normalised reconstruction error on ImageNet val.
PAPER_TABLE2 = {
    ("hog", "decoder"): 0.24,
    ("sift", "decoder"): 0.28,
    ("lbp", "decoder"): 0.38,
    ("hog", "hoggles"): 0.61,
    ("hog", "mahendran_vedaldi"): 0.63,
}

ALEXNET_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
SHALLOW = ["hog", "sift", "lbp"]


def _save(fig, path: str | os.PathLike) -> None:
    with store.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _hwc(image: np.ndarray) -> np.ndarray:
    return np.asarray(image).transpose(1, 2, 0)


def image_grid(rows: Sequence[Tuple[str, np.ndarray]], path: str | os.PathLike, title: Optional[str] = None) -> None:
    """A grid with one labelled row per entry of ``rows`` = [(label, uint8 (k, 3, S, S)), …]."""
    n_rows = len(rows)
    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols + 1.2, 1.3 * n_rows + (0.4 if title else 0)),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(_hwc(images[c]), interpolation="nearest")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    _save(fig, path)


def reconstructions_figure(inputs: np.ndarray, rows: Mapping[str, np.ndarray], path: str | os.PathLike,
                           title: Optional[str] = None) -> None:
    """Inputs above one row of reconstructions per representation (Figures 3 and 5)."""
    image_grid([("input", inputs), *rows.items()], path, title)


def errors_table(frames: Sequence[pd.DataFrame], csv_path: str | os.PathLike, md_path: str | os.PathLike) -> pd.DataFrame:
    """Table 2 / Figure 7 analogue: every representation with its reference rows and paper values."""
    table = pd.concat(frames, ignore_index=True)
    table["paper"] = [PAPER_TABLE2.get((r, m), np.nan) for r, m in zip(table["representation"], table["method"])]
    extra = [{"representation": r, "method": m, "label": f"published ({'HOGgles' if m == 'hoggles' else 'Mahendran & Vedaldi'})",
              "paper": v} for (r, m), v in PAPER_TABLE2.items() if m != "decoder" and r in set(table["representation"])]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    with store.atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    with store.atomic_path(md_path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(errors_markdown(table))
    return table


def errors_markdown(table: pd.DataFrame) -> str:
    """Markdown rendering: decoder error with its 95 % interval, the references, the paper's value."""
    lines = ["| representation | decoder error (95% CI) | nearest neighbour | mean image | PSNR dB | SSIM | px | paper |",
             "|---|---|---|---|---|---|---|---|"]

    def fmt(v):
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    for rep, group in table.groupby("representation", sort=False):
        by = {m: g.iloc[0] for m, g in group.groupby("method")}
        dec = by.get("decoder")
        if dec is None:
            continue
        label = dec["label"] if isinstance(dec["label"], str) and dec["label"] != rep else ""
        name = f"{rep}" + (f" ({label})" if label else "")
        lines.append(
            f"| {name} | {fmt(dec['error'])} ({fmt(dec['ci_low'])}–{fmt(dec['ci_high'])}) | "
            f"{fmt(by['nearest_neighbour']['error']) if 'nearest_neighbour' in by else ''} | "
            f"{fmt(by['mean_image']['error']) if 'mean_image' in by else ''} | {dec['psnr']:.2f} | {dec['ssim']:.3f} | "
            f"{_size(dec)} | {fmt(dec.get('paper'))} |"
        )
        for method in ("hoggles", "mahendran_vedaldi"):
            if method in by:
                lines.append(f"| {rep}: {by[method]['label']} |  |  |  |  |  |  | {fmt(by[method]['paper'])} |")
    return "\n".join(lines) + "\n"


def _size(row) -> str:
    """"227" where the error is computed at the decoder's own output size, "128→227" where the
    output is upsampled to the evaluated region first (§5.1)."""
    size, out = row.get("eval_size"), row.get("output_size")
    if size is None or pd.isna(size):
        return ""
    return f"{int(size)}" if pd.isna(out) or int(out) == int(size) else f"{int(out)}→{int(size)}"


def markdown_table(table: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown rendering of any table (numbers to ``digits`` significant digits)."""
    if table.empty:
        return "(no rows)\n"

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


#: Curves of Figure 7 beyond the decoder: variants of the layers (suffix) and feature perturbations.
VARIANT_CURVES = {"-ae": ("D-", "C3", "autoencoder"), "-random": ("v-", "C4", "untrained {network} (control)")}
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
    ax.set_xticks(x, [l.split(":")[-1] for l in layers], rotation=0 if len(layers) < 9 else 30)
    ax.set_ylabel("normalised reconstruction error")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or (figure7_title(table) if network == "AlexNet"
                           else f"Reconstruction error by layer of {network} (cf. paper Figure 7)"), fontsize=10)
    labels = [line.get_label() for line in ax.get_lines()]
    _save(fig, path)
    return labels

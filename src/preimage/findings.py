""""What we found": a short Markdown summary written from the run's own tables.

Every sentence is computed from the numbers of this run (nothing hand-written), so the summary of
the embedded default says what its networks on 64-px crops give, and the summary of
``paper.yaml`` what the paper's setting gives. Each section names the paper's claim it tests.
"""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional

import numpy as np
import pandas as pd

from preimage import atomic_files
from preimage.representations import ALEXNET_LAYERS, LOSS_VARIANTS, SHALLOW, variant_of


def _row(table: pd.DataFrame, **match) -> Optional[pd.Series]:
    rows = table
    for key, value in match.items():
        rows = rows[rows[key] == value]
    return rows.iloc[0] if len(rows) else None


def _pct(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.0f} %" if old else "n/a"


def main_result(errors: pd.DataFrame) -> List[str]:
    """Table 2 / Figure 7: does every decoder beat the reference rows; how error grows with depth."""
    lines = ["## Reconstruction error (Table 2, Figure 7)", ""]
    decoders = errors[errors.method == "decoder"]
    beaten, lost, trading = [], [], []
    for _, dec in decoders.iterrows():
        if variant_of(str(dec.representation)) in LOSS_VARIANTS:
            trading.append(f"`{dec.representation}`")  # trained for feature error and realism, not eq. (1)
            continue
        ref = _row(errors, representation=dec.representation, method="mean_image")
        nn = _row(errors, representation=dec.representation, method="nearest_neighbour")
        if ref is None:
            continue
        text = f"`{dec.representation}` {dec.error:.3f} (mean image {ref.error:.3f}"
        text += f", nearest neighbour {nn.error:.3f})" if nn is not None else ")"
        (beaten if dec.error < ref.error and (nn is None or dec.error < nn.error) else lost).append(text)
    lines.append(f"- {len(beaten)} of {len(beaten) + len(lost)} decoders beat both the mean training image and the "
                 "nearest neighbour in feature space.")
    if lost:
        lines.append("- Not better than a reference row: " + "; ".join(lost) + ".")
    if trading:
        lines.append("- Not counted: " + ", ".join(trading) + " (Appendix A's losses trade image error for feature "
                     "error and sharpness; see that section).")
    shallow = [r for r in SHALLOW if _row(decoders, representation=r) is not None]
    if shallow:
        ranked = sorted(shallow, key=lambda r: _row(decoders, representation=r).error)
        lines.append("- Shallow features, best to worst: " + " < ".join(
            f"`{r}` {_row(decoders, representation=r).error:.3f}" for r in ranked)
            + " (paper: HOG 0.24 < SIFT 0.28 < LBP 0.38).")
    layers = [l for l in ALEXNET_LAYERS if _row(decoders, representation=l) is not None]
    if len(layers) >= 2:
        errs = [_row(decoders, representation=l).error for l in layers]
        label = str(_row(decoders, representation=layers[0]).label)
        lines.append(f"- AlexNet ({label}): error from {errs[0]:.3f} at `{layers[0]}` to {errs[-1]:.3f} at "
                     f"`{layers[-1]}`; lowest at `{layers[int(np.argmin(errs))]}`, highest at "
                     f"`{layers[int(np.argmax(errs))]}` (paper: rising with depth, from about 0.1 to 0.6).")
    pairs = _variant_pairs(decoders, "-ae")
    if pairs:
        lines.append("- Autoencoder vs the decoder of the fixed features: " + "; ".join(
            f"`{r}` {b.error:.3f} vs {a.error:.3f}" for r, a, b in pairs) + ".")
    pairs = _variant_pairs(decoders, "-random")
    if pairs:
        kept = [r for r, a, b in pairs if a.error < b.error]
        lines.append(f"- Trained vs untrained network (what training keeps): the trained network's features give "
                     f"the lower error at {len(kept)} of {len(pairs)} representations: " + "; ".join(
                         f"`{r}` {a.error:.3f} trained vs {b.error:.3f} untrained ({_pct(a.error, b.error)})"
                         for r, a, b in pairs) + ".")
    return lines + [""]


def _variant_pairs(decoders: pd.DataFrame, suffix: str) -> List[tuple]:
    """(name, row of the representation, row of its ``suffix`` variant) for every representation
    that has that variant in the table (fc6 and fc6-ae, efficientnet_lite0:fc and …-random)."""
    pairs = []
    for name in decoders.representation:
        base, variant = _row(decoders, representation=name), _row(decoders, representation=f"{name}{suffix}")
        if variant is not None and variant_of(name) is None:
            pairs.append((name, base, variant))
    return pairs


def loss_variants(errors: pd.DataFrame, mahendran_vedaldi: Optional[pd.DataFrame] = None) -> List[str]:
    """Appendix A, Figures 12-13: do the decoders trained in feature space (with the adversarial
    prior: ``-gan``; without: ``-feature``) reconstruct with a lower feature error and sharper
    than the simple decoder of the same features, at the price of a higher image error? Appendix A
    says so in pictures ("much more natural reconstructions"); these are the numbers of this run."""
    decoders = errors[errors.method == "decoder"]
    lines = []
    for suffix, what in (("-gan", "feature + adversarial loss"), ("-feature", "feature-space loss alone")):
        for name, base, variant in _variant_pairs(decoders, suffix):
            fe_v, fe_b = variant.get("feature_error"), base.get("feature_error")
            if fe_v is None or fe_b is None or pd.isna(fe_v) or pd.isna(fe_b):
                continue
            lower_feature = fe_v < fe_b
            sharper = variant.sharpness > base.sharpness
            costlier = variant.error > base.error
            text = (f"- `{name}{suffix}` ({what}) vs `{name}` (simple decoder): feature error {fe_v:.3f} vs {fe_b:.3f} "
                    f"({'lower' if lower_feature else 'not lower'}), sharpness {variant.sharpness:.2f} vs "
                    f"{base.sharpness:.2f} ({'sharper' if sharper else 'not sharper'}), image error "
                    f"{variant.error:.3f} vs {base.error:.3f} ({'higher' if costlier else 'not higher'}).")
            if suffix == "-gan":
                held = lower_feature and sharper
                text += (" The paper's claim holds here: lower feature error and sharper images"
                         + (", at the price of image error." if costlier else ", without a higher image error.")
                         if held else
                         " The paper's claim does not hold here: " + " and ".join(
                             part for ok, part in ((lower_feature, "the feature error is not lower"),
                                                   (sharper, "the images are not sharper")) if not ok) + ".")
            lines.append(text)
            mv = None if mahendran_vedaldi is None else _row(mahendran_vedaldi, representation=name,
                                                             method="mahendran_vedaldi")
            if suffix == "-gan" and mv is not None:
                count = f" ({int(mv['n'])} images)" if "n" in mv and not pd.isna(mv["n"]) else ""
                lines.append(f"  Mahendran & Vedaldi on `{name}`{count}: image error {mv.error:.3f}, "
                             f"feature error {mv.feature_error:.3f}.")
    if not lines:
        return []
    return ["## Feature-space and adversarial losses (Appendix A, Figures 12-13)", "",
            "Sharpness: high-frequency energy of the reconstructions relative to the test images' (1 = as detailed "
            "as the originals). The paper shows pictures only; the test here is ours: lower feature error and "
            "sharper than the simple decoder, at the price of image error.", ""] + lines + [""]


def perturbation(table: pd.DataFrame) -> List[str]:
    """§5.4: binarising and dropping features."""
    lines = ["## Perturbed features (§5.4, Figure 9)", ""]
    for rep, group in table.groupby("representation", sort=False):
        base = _row(group, perturbation="none")
        if base is None:
            continue
        parts = []
        for kind in ("binarise", "dropout", "drop_small_binarise", "drop_random_binarise"):
            row = _row(group, perturbation=kind)
            if row is not None:
                parts.append(f"{kind} {row.error:.3f} ({_pct(row.error, base.error)})")
        lines.append(f"- `{rep}`: unperturbed {base.error:.3f}; " + ", ".join(parts) + ".")
    lines.append("- The paper: binarising fc6/fc7 barely changes the reconstruction, dropout hurts more, and the "
                 "autoencoder is far less robust than the fixed-feature decoder.")
    return lines + [""]


def mahendran_vedaldi(table: pd.DataFrame) -> List[str]:
    """The optimisation baseline: each method wins on its own metric; speed."""
    lines = ["## Decoder vs Mahendran & Vedaldi (Table 2, §5.1)", ""]
    for rep, group in table.groupby("representation", sort=False):
        dec, mv = _row(group, method="decoder"), _row(group, method="mahendran_vedaldi")
        if dec is None or mv is None:
            continue
        image_winner = "decoder" if dec.error < mv.error else "optimisation"
        feature_winner = "decoder" if dec.feature_error < mv.feature_error else "optimisation"
        speed = mv.seconds_per_image / max(dec.seconds_per_image, 1e-12)
        lines.append(f"- `{rep}`: image error {dec.error:.3f} (decoder) vs {mv.error:.3f} (optimisation), "
                     f"{image_winner} lower; feature error {dec.feature_error:.3f} vs {mv.feature_error:.3f}, "
                     f"{feature_winner} lower; {dec.seconds_per_image * 1e3:.1f} ms vs {mv.seconds_per_image:.2f} s "
                     f"per image ({speed:,.0f}× slower).")
    return lines + mahendran_vedaldi_claim(table) + [""]


def _verdict(value: float, bound: float) -> str:
    return "holds" if value <= bound else "exceeds"


def mahendran_vedaldi_claim(table: pd.DataFrame) -> List[str]:
    """M&V's own measure against their claim that for CNN layers the normalised feature-space error
    "rarely exceeds 20 %", per layer (the rows the table marks with ``mv_claim``), and the spread of
    their several reconstructions per code where the run made them."""
    lines: List[str] = []
    if "mv_error" in table and "mv_claim" in table:
        rows = table[(table.method == "mahendran_vedaldi") & table.mv_claim.notna()]
        if len(rows):
            held = [r for r in rows.itertuples() if r.mv_error <= r.mv_claim]
            lines.append(f"- Mahendran & Vedaldi's claim, CNN layers invert to a normalised feature error of at most "
                         f"{rows.mv_claim.iloc[0]:.0%} (their measure: ‖Φ(x̂) − Φ0‖² over the mean squared distance "
                         f"between the codes): holds at {len(held)} of {len(rows)} layers here: " + "; ".join(
                             f"`{r.representation}` {r.mv_error:.1%} ({_verdict(r.mv_error, r.mv_claim)})"
                             for r in rows.itertuples()) + ".")
    if "diversity" in table:
        spread = table[(table.method == "mahendran_vedaldi") & table.diversity.notna()]
        if len(spread):
            lines.append("- Several pre-images per code (M&V, from different noise): mean pairwise distance of the "
                         "reconstructions, normalised like the image error: " + "; ".join(
                             f"`{r.representation}` {r.diversity:.3f} ({int(r.restarts)} restarts)"
                             for r in spread.itertuples()) + ".")
    return lines


def dark_knowledge(table: pd.DataFrame) -> List[str]:
    """§5.3, Figures 8 and 16: one line per class-score representation (fc8, a network's logits)."""
    lines = ["## Dark knowledge in the class scores (§5.3, Figure 8)", ""]
    for rep, rows in table.groupby("representation", sort=False):
        by = {r.variant: r for r in rows.itertuples()}
        if {"all", "top5", "all_but_top5"} <= set(by):
            lines.append(f"- {rep}: all activations {by['all'].error:.3f}; only the top {by['top5'].k} "
                         f"{by['top5'].error:.3f}; all but the top {by['top5'].k} {by['all_but_top5'].error:.3f}.")
    lines.append("- The paper: dropping the top-5 hurts less than keeping only them; the small activations carry "
                 "most of the image.")
    return lines + [""]


def hue_shift(table: pd.DataFrame) -> List[str]:
    """§5.3: is colour kept in the class scores? One line per representation and rotation."""
    lines = ["## Colour in the class scores (§5.3)", ""]
    for row in table.itertuples():
        if row.degrees == 0:
            continue
        closer = "rotated" if row.error < row.error_to_original else "original"
        lines.append(f"- {row.representation}, hue +{row.degrees:g}°: reconstruction error {row.error:.3f} to the "
                     f"rotated input, {row.error_to_original:.3f} to the original: closer to the {closer} colours; "
                     f"top-1 prediction unchanged for {row.same_top1_as_original:.0%} of the images.")
    return lines + [""]


def brightness(table: pd.DataFrame) -> List[str]:
    lines = ["## Brightness and HOG (§4)", ""]
    for row in table.itertuples():
        if row.factor == 1:
            continue
        lines.append(f"- Brightness ×{row.factor:g}: error {row.error:.3f}; distance to the reconstruction of the "
                     f"unscaled image {row.distance_to_unscaled:.3f}.")
    return lines + [""]


def scaling(table: pd.DataFrame) -> List[str]:
    """The data-scaling fit (ours, beyond the paper): does error fall with more training images,
    and what the power law predicts at the paper's training set."""
    lines = ["## More training images (data-scaling curve, beyond the paper)", ""]
    for _, row in table.iterrows():
        falls = row.exponent_low > 0
        lines.append(
            f"- `{row.representation}`: error ∝ n^-{row.exponent:.2f} (95 % CI {row.exponent_low:.2f} to "
            f"{row.exponent_high:.2f}): " + ("it falls with more data" if falls else
                                              "no significant fall with more data at these sizes")
            + f"; the power law predicts {row.predicted:.3f} ({row.predicted_low:.3f}-{row.predicted_high:.3f}) at "
            f"{row.extrapolate_to:,} images, {row.decades_beyond_data:.1f} decades beyond the data (a bound without "
            "a floor, not a forecast).")
    return lines + [""]


def most_recognisable(table: pd.DataFrame) -> pd.DataFrame:
    """Per representation, the method (``input`` excluded) with the highest top-5 agreement, ties
    broken by top-1 agreement, then by the lower error; one row each, in the table's order."""
    rows = table[table["method"] != "input"]
    best = []
    for _, group in rows.groupby("representation", sort=False):
        ranked = group.assign(_neg_error=-group["error"]).sort_values(["top5", "top1", "_neg_error"], ascending=False,
                                                                       kind="stable")
        best.append(ranked.iloc[0].drop("_neg_error"))
    return pd.DataFrame(best).reset_index(drop=True)


def scorecard(table: pd.DataFrame) -> List[str]:
    """The scorecard (ours, beyond the paper; :mod:`preimage.scorecard`): per representation
    the method whose reconstructions the classifier most often still recognises (top-5 agreement,
    ties by top-1, then by lower error), and whether the method with the lowest pixel error is it."""
    lines = ["## Does the classifier still see the same thing? (scorecard, beyond the paper)", ""]
    classifiers = ", ".join(sorted(set(table["classifier"].dropna().astype(str)))) if "classifier" in table else ""
    best = most_recognisable(table)
    agree = counted = 0
    for _, row in best.iterrows():
        rows = table[(table.representation == row.representation) & (table.method != "input")]
        lowest = rows.loc[rows["error"].idxmin()]
        if not row.top5 > 0:
            lines.append(f"- `{row.representation}`: no method's reconstruction keeps the classifier's top class for "
                         f"the original among its five most likely (lowest error: "
                         f"{lowest.method_label} {lowest.error:.3f}).")
            continue
        same = lowest.method == row.method
        agree += same
        counted += 1
        lines.append(
            f"- `{row.representation}`: most recognisable {row.method_label}, top-5 agreement "
            f"{row.top5:.2f} ({row.top5_low:.2f}-{row.top5_high:.2f}), top-1 {row.top1:.2f}, error {row.error:.3f}"
            + (" (also the lowest error)" if same else
               f"; lowest error: {lowest.method_label} {lowest.error:.3f}, top-5 "
               f"{lowest.top5:.2f}") + f" [{int(row.n_images)} images].")
    if counted:
        lines.append(f"- The lowest pixel error and the most recognisable reconstruction coincide for {agree} of "
                     f"{counted} representations where any method is recognised (classifier: {classifiers}; agreement "
                     "with its prediction on the original).")
    return lines + [""]


SECTIONS = {"perturbation": perturbation, "mahendran_vedaldi": mahendran_vedaldi, "dark_knowledge": dark_knowledge,
            "hue_shift": hue_shift, "brightness": brightness, "scaling": scaling,
            "scorecard": scorecard}


def _read(paths) -> pd.DataFrame:
    """One CSV, or several (one per representation) stacked."""
    if isinstance(paths, (str, os.PathLike)):
        return pd.read_csv(paths)
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def write_findings(tables: Mapping[str, Any], md_path: str) -> str:
    """Write the summary from the CSVs in ``tables`` (``errors`` required, the rest optional; a
    value may be a list of per-representation CSVs)."""
    lines = ["# What we found", "", "Generated by the `findings` rule from this run's tables (`results/tables/`).", ""]
    errors = _read(tables["errors"])
    lines += main_result(errors)
    lines += loss_variants(errors, _read(tables["mahendran_vedaldi"]) if "mahendran_vedaldi" in tables else None)
    for key, section in SECTIONS.items():
        if key in tables:
            lines += section(_read(tables[key]))
    text = "\n".join(lines)
    with atomic_files.atomic_path(md_path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)
    return text

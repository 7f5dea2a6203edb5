"""The workflow's tables (paper Table 2 and the per-analysis tables), as CSV with a Markdown rendering.

:func:`errors_table` gathers every representation's ``error.csv`` (decoder and reference rows)
beside the published values of Table 2; :func:`concat_tables` joins the per-representation CSVs
of an analysis or of the Mahendran & Vedaldi comparison into one. Files are written atomically.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from preimage import atomic_files

#: Published values (paper Table 2): average normalised reconstruction error on ImageNet val.
PAPER_TABLE2 = {
    ("hog", "decoder"): 0.24,
    ("sift", "decoder"): 0.28,
    ("lbp", "decoder"): 0.38,
    ("hog", "hoggles"): 0.61,
    ("hog", "mahendran_vedaldi"): 0.63,
}


def errors_table(frames: Sequence[pd.DataFrame], csv_path: str | os.PathLike, md_path: str | os.PathLike) -> pd.DataFrame:
    """Table 2 / Figure 7 analogue: every representation with its reference rows and paper values."""
    table = pd.concat(frames, ignore_index=True)
    table["paper"] = [PAPER_TABLE2.get((r, m), np.nan) for r, m in zip(table["representation"], table["method"])]
    extra = [{"representation": r, "method": m, "label": f"published ({'HOGgles' if m == 'hoggles' else 'Mahendran & Vedaldi'})",
              "paper": v} for (r, m), v in PAPER_TABLE2.items() if m != "decoder" and r in set(table["representation"])]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    atomic_files.write_csv(table, csv_path, float_format="%.4g")
    atomic_files.write_text(errors_markdown(table), md_path)
    return table


def errors_markdown(table: pd.DataFrame) -> str:
    """Markdown rendering: decoder error with its 95 % interval, the references, PSNR, SSIM, the
    feature error (where computed: the decoders compared under Appendix A) and the sharpness, the
    paper's value."""
    lines = ["| representation | decoder error (95% CI) | nearest neighbour | mean image | PSNR dB | SSIM | feature error "
             "| sharpness | px | paper |",
             "|---|---|---|---|---|---|---|---|---|---|"]

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
            f"{fmt(dec.get('feature_error'))} | {fmt(dec.get('sharpness'))} | {_size(dec)} | {fmt(dec.get('paper'))} |"
        )
        for method in ("hoggles", "mahendran_vedaldi"):
            if method in by:
                lines.append(f"| {rep}: {by[method]['label']} |  |  |  |  |  |  |  |  | {fmt(by[method]['paper'])} |")
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


def concat_tables(paths: Sequence[str], csv_path: str | os.PathLike,
                  md_path: Optional[str | os.PathLike] = None) -> pd.DataFrame:
    """One table from per-representation CSVs (and a Markdown rendering)."""
    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()
    atomic_files.write_csv(table, csv_path)
    if md_path is not None:
        atomic_files.write_text(markdown_table(table), md_path)
    return table


# --------------------------------------------------------------------------- Mahendran & Vedaldi

#: Mahendran & Vedaldi (CVPR 2015, experiments with deep representations): for CNN layers their
#: normalised reconstruction error in feature space "rarely exceeds 20 %".
MV_CLAIM = 0.20


def mahendran_vedaldi_table(paths: Sequence[str], csv_path: str | os.PathLike, md_path: str | os.PathLike,
                            networks: Sequence[str] = ()) -> pd.DataFrame:
    """The decoder-vs-optimisation table (one CSV per representation from
    :func:`preimage.baselines.mahendran_vedaldi`) with M&V's claim beside their own measure: for
    the optimisation rows of the ``networks`` (CNN layers; the claim is about those), ``mv_claim``
    is :data:`MV_CLAIM` and ``claim_holds`` whether ``mv_error`` (M&V's normalised feature error)
    is at most that."""
    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()
    if not table.empty:
        claimed = (table["method"] == "mahendran_vedaldi") & table["representation"].isin(list(networks))
        table["mv_claim"] = np.where(claimed, MV_CLAIM, np.nan)
        if "mv_error" in table:
            holds = table["mv_error"] <= MV_CLAIM
            table["claim_holds"] = [bool(h) if c else None for h, c in zip(holds, claimed)]
    atomic_files.write_csv(table, csv_path)
    atomic_files.write_text(mahendran_vedaldi_markdown(table), md_path)
    return table


def mahendran_vedaldi_markdown(table: pd.DataFrame) -> str:
    """Markdown: per representation and method the image error, the feature errors (ours:
    ‖Φ(x̂) − Φ0‖/‖Φ0‖; M&V's normalised one next to their claim), diversity and time."""
    if table.empty:
        return "(no rows)\n"

    def fmt(row, key, digits=3):
        v = row.get(key)
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"

    lines = ["| representation | method | image error (95% CI) | feature error | M&V error | M&V claim (CNN) | "
             "diversity (restarts) | s/image |", "|---|---|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        claim = ""
        if "mv_claim" in row and not pd.isna(row["mv_claim"]):
            held = row.get("claim_holds")
            claim = f"≤ {row['mv_claim']:.2f}: " + ("holds" if held is True or held == "True" else "does not hold")
        restarts = row.get("restarts")
        diversity = fmt(row, "diversity")
        if diversity and restarts is not None and not pd.isna(restarts):
            diversity += f" ({int(restarts)})"
        lines.append(f"| {row['representation']} | {row['method']} | {fmt(row, 'error')} ({fmt(row, 'ci_low')}–"
                     f"{fmt(row, 'ci_high')}) | {fmt(row, 'feature_error')} | {fmt(row, 'mv_error')} | {claim} | "
                     f"{diversity} | {fmt(row, 'seconds_per_image', 4)} |")
    return "\n".join(lines) + "\n"

"""The paper's probes of a feature space and its comparison with optimisation, as pipeline steps.

Each function reads the stores the earlier stages wrote (test images, feature caches, a trained
decoder), runs one analysis of :mod:`preimage.analyses` or the Mahendran & Vedaldi baseline of
:mod:`preimage.optimize`, and writes a CSV of numbers and a figure (paper §4, §5.2-5.5,
supplementary Figures 16-23). Errors are the paper's normalised reconstruction error (§3):
‖x − x̂‖ divided by the mean distance between test images, so they compare directly with
``results/{rep}/error.csv``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from preimage import analyses, figures, metrics, store
from preimage.devices import resolve_device
from preimage.evaluate import show_indices
from preimage.train import load_decoder

log = logging.getLogger("preimage.experiments")


# --------------------------------------------------------------------------- shared pieces


class Inverter:
    """A trained decoder as a function from features to images (float [0, 1] at the image size).

    ``image_size`` is the side of the region the decoder reconstructs (the centre crop its
    representation sees); :meth:`images` opens a test store cropped to it.
    """

    def __init__(self, decoder_path: str, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model, self.meta = load_decoder(decoder_path, self.device)
        self.scale = float(self.meta["feature_scale"])
        self.image_size = int(self.meta["image_size"])
        self.label = str(self.meta.get("label") or self.meta["representation"])

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        out = []
        for start in range(0, len(features), batch_size):
            f = torch.as_tensor(features[start:start + batch_size], dtype=torch.float32).to(self.device)
            x = self.model(f * self.scale).float()
            if x.shape[-1] != self.image_size:
                x = metrics.upsample_to(x, self.image_size)
            out.append(x.clamp_(0, 1).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, self.image_size, self.image_size)

    def images(self, path: str) -> store.ImageStore:
        """The image store at ``path`` as this decoder's targets: centre-cropped to its region."""
        return store.ImageStore(path, crop=self.image_size)


def _test_normaliser(test_images: store.ImageStore) -> float:
    """N of the paper's error: the mean distance between all pairs of test images."""
    return metrics.mean_pairwise_distance(test_images.float_view())


def _error_row(errors: np.ndarray, seed: int, **fields: Any) -> Dict[str, Any]:
    low, high = metrics.bootstrap_ci(errors, seed=seed)
    return {**fields, "error": float(np.mean(errors)), "ci_low": low, "ci_high": high, "n": int(len(errors))}


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _write_csv(table: pd.DataFrame, path: str) -> None:
    with store.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def _title(rep: str, label: str, what: str) -> str:
    return f"{rep}: {what}" + (f" — {label}" if label and label != rep else "")


# --------------------------------------------------------------------------- §5.4 perturbation


def perturbation(rep: str, decoder_path: str, test_features_path: str, test_images_path: str, csv_path: str,
                 png_path: str, fraction: float = 0.5, n_show: int = 6, seed: int = 0, device: str = "auto",
                 batch_size: int = 64) -> pd.DataFrame:
    """Error of reconstructions from perturbed features (§5.4, Figure 7 dashed curves, Figure 9)."""
    inverter = Inverter(decoder_path, device)
    kinds = ("none",) + tuple(analyses.PERTURBATIONS)
    errors: Dict[str, List[np.ndarray]] = {k: [] for k in kinds}
    changes: Dict[str, List[np.ndarray]] = {k: [] for k in kinds}
    shown: Dict[str, List[np.ndarray]] = {k: [] for k in kinds}
    with inverter.images(test_images_path) as images, store.FeatureStore(test_features_path) as feats:
        normaliser = _test_normaliser(images)
        pick = set(show_indices(len(images), n_show).tolist())
        for offset, f in feats.batches(batch_size):
            f = torch.from_numpy(f)
            truth = store.to_float(images.read(offset, offset + len(f)))
            rows = [i for i in range(len(f)) if offset + i in pick]
            for k, kind in enumerate(kinds):
                generator = torch.Generator().manual_seed(seed * 1000 + k * 100003 + offset)
                g = analyses.perturb(f, kind, generator=generator) if kind != "none" else f
                recon = inverter(g)
                errors[kind].append(metrics.normalised_error(recon, truth, normaliser))
                changes[kind].append(((g - f).flatten(1).norm(dim=1) / f.flatten(1).norm(dim=1).clamp_min(1e-12)).numpy())
                shown[kind].append(_uint8(recon[rows]))
            shown.setdefault("input", []).append(images.read(offset, offset + len(f))[rows])
    table = pd.DataFrame([
        _error_row(np.concatenate(errors[k]), seed, representation=rep, perturbation=k, fraction=fraction,
                   feature_change=float(np.mean(np.concatenate(changes[k]))))
        for k in kinds
    ])
    _write_csv(table, csv_path)
    grid = [("input", np.concatenate(shown["input"]))]
    grid += [(f"{k}\n{table.loc[i, 'error']:.3f}", np.concatenate(shown[k])) for i, k in enumerate(kinds)]
    figures.image_grid(grid, png_path, title=_title(rep, inverter.label, "reconstructions from perturbed features "
                                                     "(row label: normalised error)"))
    for _, row in table.iterrows():
        log.info("%s %-22s error %.4f  feature change %.3f", rep, row["perturbation"], row["error"], row["feature_change"])
    return table


# --------------------------------------------------------------------------- §5.5 interpolation


def interpolation(rep: str, decoder_path: str, test_features_path: str, h5_path: str, png_path: str,
                  pairs: int = 2, steps: int = 8, n_show: int = 6, device: str = "auto") -> np.ndarray:
    """Reconstructions along the line between the features of two test images (§5.5, Figure 10).

    The pairs are the fixed figure images taken two by two; ``h5_path`` holds the strips
    (pairs, steps, 3, S, S) for the combined figure.
    """
    inverter = Inverter(decoder_path, device)
    with store.FeatureStore(test_features_path) as feats:
        pick = show_indices(len(feats), max(2 * pairs, n_show))
        if len(pick) < 2:
            raise ValueError(f"{rep}: interpolation needs at least two test images, the test set has {len(feats)}")
        chosen = [(int(pick[2 * p]), int(pick[2 * p + 1])) for p in range(min(pairs, len(pick) // 2))]
        strips = np.stack([_uint8(inverter(analyses.interpolate(torch.from_numpy(feats.take([a])[0]),
                                                                torch.from_numpy(feats.take([b])[0]), steps)))
                           for a, b in chosen])
    with store.atomic_path(h5_path) as tmp, store.create_h5(tmp) as handle:
        handle.create_dataset("strips", data=strips, compression=store.COMPRESSION)
        handle.create_dataset("pairs", data=np.array(chosen))
        store.write_attrs(handle, store.provenance(representation=rep, label=inverter.label, steps=steps))
    rows = [(f"{a} → {b}", strip) for (a, b), strip in zip(chosen, strips)]
    figures.image_grid(rows, png_path, title=_title(rep, inverter.label, f"interpolating features in {steps} steps"))
    return strips


def interpolation_overview(strips: Mapping[str, str], png_path: str) -> None:
    """The first interpolation pair of every layer, one row each (Figure 10 layout)."""
    rows = []
    for rep, path in strips.items():
        with store.reading(path) as handle:
            rows.append((rep, handle["strips"][0]))
    figures.image_grid(rows, png_path, title="Interpolation between the features of two test images (cf. paper Figure 10)")


# --------------------------------------------------------------------------- §5.5 random vectors


def random_samples(rep: str, decoder_path: str, train_features_path: str, csv_path: str, png_path: str,
                   count: int = 8, alpha: float = 2.0, fit_images: int = 4096, bins: int = 100, seed: int = 0,
                   device: str = "auto") -> pd.DataFrame:
    """Decode random feature vectors drawn with the real per-dimension statistics (§5.5, Figure 11)."""
    inverter = Inverter(decoder_path, device)
    with store.FeatureStore(train_features_path) as feats:
        rng = np.random.default_rng(seed)
        n = min(fit_images, len(feats))
        idx = np.sort(rng.choice(len(feats), size=n, replace=False))
        real = torch.from_numpy(np.concatenate([feats.read(int(i), int(i) + 1) for i in idx]))
    sampler = analyses.FeatureSampler.fit(real, bins=bins)
    generator = torch.Generator().manual_seed(seed)
    samples = {
        "histograms": sampler.sample(count, alpha=alpha, generator=generator),
        "truncated Gaussian": sampler.sample_truncated_gaussian(count, alpha=alpha, generator=generator),
    }
    rows = [{"representation": rep, "source": "training features", "alpha": 1.0, "count": n,
             "zero_fraction": float((real == 0).float().mean()), "mean_norm": float(real.flatten(1).norm(dim=1).mean())}]
    grid = []
    for name, s in samples.items():
        rows.append({"representation": rep, "source": name, "alpha": alpha, "count": count,
                     "zero_fraction": float((s == 0).float().mean()), "mean_norm": float(s.flatten(1).norm(dim=1).mean())})
        grid.append((name, _uint8(inverter(s))))
    table = pd.DataFrame(rows)
    _write_csv(table, csv_path)
    figures.image_grid(grid, png_path, title=_title(rep, inverter.label, f"random feature vectors (α = {alpha:g})"))
    return table


# --------------------------------------------------------------------------- §5.3 dark knowledge


def _class_name(categories: Optional[Sequence[str]], index: int) -> str:
    return categories[index] if categories and 0 <= index < len(categories) else f"class {index}"


def _prediction(logits: torch.Tensor, categories: Optional[Sequence[str]]) -> List[str]:
    probs = torch.softmax(logits.float(), dim=1)
    conf, top = probs.max(dim=1)
    return [f"{_class_name(categories, int(t))} ({float(c):.0%})" for t, c in zip(top, conf)]


def dark_knowledge(decoder_path: str, test_features_path: str, test_images_path: str, csv_path: str, png_path: str,
                   categories: Optional[Sequence[str]] = None, k: int = 5, n_show: int = 6, seed: int = 0,
                   device: str = "auto", rep: str = "fc8") -> pd.DataFrame:
    """fc8 with all activations, only the top ``k``, all but the top ``k`` (§5.3, Figures 8, 16)."""
    inverter = Inverter(decoder_path, device)
    with inverter.images(test_images_path) as images, store.FeatureStore(test_features_path) as feats:
        normaliser = _test_normaliser(images)
        logits = torch.from_numpy(feats.read(0, len(feats)))
        truth = store.to_float(images.read(0, len(images)))
        pick = show_indices(len(images), n_show)
        inputs = images.take(pick)
    variants = {"all": "all activations", "top5": f"only the {k} largest", "all_but_top5": f"all but the {k} largest"}
    rows, grid = [], [("input\n(prediction)", inputs)]
    for variant, name in variants.items():
        recon = inverter(analyses.dark_knowledge(logits, variant, k=k))
        errs = metrics.normalised_error(recon, truth, normaliser)
        rows.append(_error_row(errs, seed, representation=rep, variant=variant, k=k, description=name))
        grid.append((f"{name}\n{rows[-1]['error']:.3f}", _uint8(recon[pick])))
    table = pd.DataFrame(rows)
    _write_csv(table, csv_path)
    predictions = _prediction(logits[pick], categories)
    figures.image_grid(grid, png_path, title=_title(rep, inverter.label, "dark knowledge; predictions: "
                                                     + "; ".join(predictions)))
    return table


# --------------------------------------------------------------------------- §5.3 hue shift


def hue_shift(representation, decoder_path: str, test_images_path: str, csv_path: str, png_path: str,
              degrees: Sequence[float] = (120, 240), categories: Optional[Sequence[str]] = None, n_show: int = 6,
              seed: int = 0, device: str = "auto", rep: str = "fc8", batch_size: int = 32) -> pd.DataFrame:
    """Reconstruct fc8 of hue-rotated test images (§5.3): if colour survives to the last layer the
    reconstruction is closer to the rotated image than to the original."""
    inverter = Inverter(decoder_path, device)
    representation.to(inverter.device)
    with inverter.images(test_images_path) as images:
        normaliser = _test_normaliser(images)
        truth = store.to_float(images.read(0, len(images)))
        pick = show_indices(len(images), n_show)
    rows, grid, original_top1 = [], [], None
    for d in [0.0, *[float(v) for v in degrees]]:
        shifted = analyses.hue_shift(truth, d) if d else truth
        with torch.no_grad():
            feats = torch.cat([representation(shifted[s:s + batch_size].to(inverter.device)).cpu()
                               for s in range(0, len(shifted), batch_size)])
        recon = inverter(feats)
        to_shifted = metrics.normalised_error(recon, shifted, normaliser)
        to_original = metrics.normalised_error(recon, truth, normaliser)
        top1 = feats.flatten(1).argmax(1)
        original_top1 = top1 if original_top1 is None else original_top1
        row = _error_row(to_shifted, seed, representation=rep, degrees=d)
        row["error_to_original"] = float(np.mean(to_original))
        row["same_top1_as_original"] = float((top1 == original_top1).float().mean())
        rows.append(row)
        preds = _prediction(feats[pick], categories) if feats.dim() == 2 and feats.shape[1] > 1 else [""] * len(pick)
        grid.append((f"input {d:g}°", _uint8(shifted[pick])))
        grid.append((f"fc8 → {d:g}°\n" + "\n".join(preds[:1]), _uint8(recon[pick])))
    table = pd.DataFrame(rows)
    _write_csv(table, csv_path)
    figures.image_grid(grid, png_path, title=_title(rep, inverter.label, "hue-rotated inputs and their fc8 "
                                                     "reconstructions"))
    return table


# --------------------------------------------------------------------------- §4 brightness


def brightness(representation, decoder_path: str, test_images_path: str, csv_path: str, png_path: str,
               factors: Sequence[float] = (10.0, 0.1), n_show: int = 6, seed: int = 0, device: str = "auto",
               rep: str = "hog", batch_size: int = 64) -> pd.DataFrame:
    """HOG of images scaled in brightness (§4): the block normalisation makes HOG (almost)
    invariant, so the reconstructions hardly change. Rows: the error of each reconstruction to
    the original image, and its distance to the reconstruction of the unscaled image."""
    inverter = Inverter(decoder_path, device)
    representation.to(inverter.device)
    with inverter.images(test_images_path) as images:
        normaliser = _test_normaliser(images)
        truth = store.to_float(images.read(0, len(images)))
        pick = show_indices(len(images), n_show)
    reference, rows, grid = None, [], [("input", _uint8(truth[pick]))]
    for factor in [1.0, *[float(f) for f in factors]]:
        scaled = analyses.scale_brightness(truth, factor)
        with torch.no_grad():
            feats = torch.cat([representation(scaled[s:s + batch_size].to(inverter.device)).cpu()
                               for s in range(0, len(scaled), batch_size)])
        recon = inverter(feats)
        reference = recon if reference is None else reference
        row = _error_row(metrics.normalised_error(recon, truth, normaliser), seed, representation=rep, factor=factor)
        row["distance_to_unscaled"] = float(np.mean(metrics.normalised_error(recon, reference, normaliser)))
        rows.append(row)
        grid.append((f"×{factor:g}\n{row['error']:.3f}", _uint8(recon[pick])))
    table = pd.DataFrame(rows)
    _write_csv(table, csv_path)
    figures.image_grid(grid, png_path, title=_title(rep, inverter.label, "reconstructions of brightness-scaled images"))
    return table


# --------------------------------------------------------------------------- Figure 17 single units


def single_units(rep: str, decoder_path: str, train_features_path: str, png_path: str, count: int = 6,
                 categories: Optional[Sequence[str]] = None, device: str = "auto", sample: int = 1024) -> np.ndarray:
    """Decode vectors with a single active unit (supplementary Figure 17).

    The units are the ``count`` with the largest activation over (a sample of) the training
    features; each is set to that largest activation and every other unit to zero. Units of
    class scores (fc8, a network's logits: as many units as ``categories``) are labelled with
    their class names.
    """
    inverter = Inverter(decoder_path, device)
    with store.FeatureStore(train_features_path) as feats:
        n = min(sample, len(feats))
        real = torch.from_numpy(feats.read(0, n)).flatten(1)
    peak, _ = real.max(dim=0)
    units = torch.argsort(peak, descending=True)[:count].tolist()
    vectors = analyses.single_unit_vectors(real.shape[1], units, [float(peak[u]) for u in units])
    shape = tuple(inverter.meta["feature_shape"])
    recon = _uint8(inverter(vectors.reshape(len(units), *shape)))
    named = categories is not None and len(categories) == real.shape[1]  # class scores (fc8, logits)
    labels = [f"{u}: {_class_name(categories, u)}" if named else f"unit {u}" for u in units]
    figures.image_grid([("; ".join(labels), recon)], png_path,
                       title=_title(rep, inverter.label, "one active unit, the rest zero"))
    return recon


# --------------------------------------------------------------------------- Mahendran & Vedaldi


def mahendran_vedaldi(rep: str, representation, decoder_path: str, test_images_path: str, csv_path: str,
                      h5_path: str, png_path: str, mv_config, images: int = 8, n_show: int = 6, seed: int = 0,
                      device: str = "auto") -> pd.DataFrame:
    """Our decoder against Mahendran & Vedaldi's optimisation on the same test images.

    Both methods get Φ0 = Φ(x) of the first ``images`` figure images. Reported for each: the
    image-space normalised error (the paper's measure, where the decoder wins) and the
    feature-space error ‖Φ(x̂) − Φ0‖/‖Φ0‖ (what the optimisation minimises, where it wins), and the
    seconds per image, measured in the same run.
    """
    from preimage import optimize

    inverter = Inverter(decoder_path, device)
    representation.to(inverter.device)
    with inverter.images(test_images_path) as store_images:
        normaliser = _test_normaliser(store_images)
        pick = show_indices(len(store_images), max(images, 1))[:images]
        truth = store.to_float(store_images.take(pick))
    with torch.no_grad():
        targets = representation(truth.to(inverter.device)).cpu()
    started = time.perf_counter()
    decoded = inverter(targets)
    decoder_seconds = time.perf_counter() - started
    done = {"n": 0}

    def progress(finished: int, total: int) -> None:
        if finished > done["n"]:
            done["n"] = finished
            log.info("%s: Mahendran & Vedaldi %d/%d images", rep, finished, total)

    result = optimize.invert(representation, targets.to(inverter.device), inverter.image_size, rep.split("-")[0],
                             mv_config, device=inverter.device, progress=progress)
    optimised = result.images.cpu()
    rows = []
    for method, recon, seconds in (("decoder", decoded, decoder_seconds / len(truth)),
                                   ("mahendran_vedaldi", optimised, result.seconds_per_image)):
        row = _error_row(metrics.normalised_error(recon, truth, normaliser), seed, representation=rep, method=method)
        row["feature_error"] = float(np.mean(optimize.feature_space_error(representation, recon.to(inverter.device),
                                                                           targets.to(inverter.device))))
        row["seconds_per_image"] = float(seconds)
        rows.append(row)
    table = pd.DataFrame(rows)
    _write_csv(table, csv_path)
    with store.atomic_path(h5_path) as tmp, store.create_h5(tmp) as handle:
        handle.create_dataset("indices", data=np.asarray(pick))
        handle.create_dataset("decoder", data=_uint8(decoded), compression=store.COMPRESSION)
        handle.create_dataset("mahendran_vedaldi", data=_uint8(optimised), compression=store.COMPRESSION)
        store.write_attrs(handle, store.provenance(representation=rep, label=inverter.label,
                                                   history=result.history[-1:] if result.history else []))
    show = slice(0, min(n_show, len(truth)))
    d, m = rows
    figures.image_grid([
        ("input", _uint8(truth[show])),
        (f"our decoder\n{d['error']:.3f} / {d['feature_error']:.3f}", _uint8(decoded[show])),
        (f"Mahendran &\nVedaldi\n{m['error']:.3f} / {m['feature_error']:.3f}", _uint8(optimised[show])),
    ], png_path, title=_title(rep, inverter.label, "decoder vs optimisation (row label: image error / feature error)"))
    for row in rows:
        log.info("%s %-18s image error %.4f  feature error %.4f  %.4f s/image", rep, row["method"], row["error"],
                 row["feature_error"], row["seconds_per_image"])
    return table


# --------------------------------------------------------------------------- aggregates


def concat_tables(paths: Sequence[str], csv_path: str, md_path: Optional[str] = None) -> pd.DataFrame:
    """One table from per-representation CSVs (and a Markdown rendering)."""
    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()
    _write_csv(table, csv_path)
    if md_path is not None:
        with store.atomic_path(md_path) as tmp:
            with open(tmp, "w") as handle:
                handle.write(figures.markdown_table(table))
    return table

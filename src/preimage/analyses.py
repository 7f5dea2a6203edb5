"""The analyses of a feature space (paper §4, §5.3-5.5; supplementary Figures 16-23), as pipeline steps.

Each function is one step of ``rules/feature_ops.smk``: it reads the stores the earlier stages wrote
(test images, feature caches, a trained decoder, decoded through
:class:`preimage.decoding.TrainedDecoder`), applies one operation of :mod:`preimage.feature_ops`
and writes a CSV of numbers and a figure:

* :func:`perturbation`: binarised and dropped-out features (§5.4, Figures 7 and 9);
* :func:`interpolation`: features on the line between two images (§5.5, Figure 10);
* :func:`random_samples`: random feature vectors with the features' statistics (§5.5, Figure 11);
* :func:`dark_knowledge`: fc8 with only / all but its largest activations (§5.3, Figures 8, 16);
* :func:`hue_shift`: fc8 of hue-rotated images (§5.3);
* :func:`brightness`: HOG of brightness-scaled images (§4);
* :func:`single_units`: vectors with one active unit (supplementary Figure 17).

Errors are the paper's normalised reconstruction error (§3): ‖x − x̂‖ divided by the mean distance
between test images, with a bootstrap interval (:func:`preimage.metrics.error_summary`), so they
compare directly with ``results/{rep}/error.csv``. ``representation_name`` is the representation's
name in the tables and titles (its slug: ``fc6``, ``fc6-ae``); ``representation`` is the
representation itself (:func:`preimage.features.create`), where a step computes features anew.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from preimage import atomic_files, feature_ops, hdf5, image_store, metrics
from preimage.decoding import TrainedDecoder
from preimage.features.cache import FeatureStore
from preimage.plotting import analysis_title, image_grid, show_indices

log = logging.getLogger("preimage.analyses")


def _normaliser(test_images: image_store.ImageStore) -> float:
    """N of the paper's error: the mean distance between all pairs of test images."""
    return metrics.mean_pairwise_distance(test_images.float_view())


def _shown_test_images(decoder: TrainedDecoder, test_images_path: str,
                       n_show: int) -> Tuple[float, torch.Tensor, np.ndarray]:
    """The test images as ``decoder``'s targets: (the error's normaliser, all images as floats,
    the indices of the figure images)."""
    with decoder.images(test_images_path) as images:
        return _normaliser(images), image_store.to_float(images.read(0, len(images))), show_indices(len(images), n_show)


@torch.no_grad()
def _features_of(representation, images: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """``representation`` of ``images`` computed on ``device`` in batches, gathered on the CPU."""
    return torch.cat([representation(images[s:s + batch_size].to(device)).cpu()
                      for s in range(0, len(images), batch_size)])


# --------------------------------------------------------------------------- §5.4 perturbation


def perturbation(representation_name: str, decoder_path: str, test_features_path: str, test_images_path: str,
                 csv_path: str, png_path: str, fraction: float = 0.5, n_show: int = 6, seed: int = 0,
                 device: str = "auto", batch_size: int = 64) -> pd.DataFrame:
    """Error of reconstructions from perturbed features (§5.4, Figure 7 dashed curves, Figure 9).

    Parameters
    ----------
    representation_name : str
        The representation's name, for the table's rows and the figure's title (``fc6``, ``fc6-ae``).
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    test_features_path : str
        The test split's feature cache the decoder decodes (``results/features/{rep}/test.h5``).
    test_images_path : str
        The test image store the reconstructions are compared with (``results/data/test.h5``).
    csv_path, png_path : str
        Outputs: one row per perturbation (``none`` and :data:`preimage.feature_ops.PERTURBATIONS`)
        with the normalised error, its 95 % interval and the mean relative feature change; the
        figure of the shown images under every perturbation.
    fraction : float, default 0.5
        Fraction of the features the dropout variants set to zero (§5.4: 50 %).
    n_show : int, default 6
        Test images shown in the figure (:func:`preimage.figures.show_indices`).
    seed : int, default 0
        Seed of the random perturbations and of the bootstrap intervals.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`preimage.devices.resolve_device`).
    batch_size : int, default 64
        Feature vectors decoded at a time.
    """
    decoder = TrainedDecoder(decoder_path, device)
    kinds = ("none",) + tuple(feature_ops.PERTURBATIONS)
    errors: Dict[str, List[np.ndarray]] = {k: [] for k in kinds}
    changes: Dict[str, List[np.ndarray]] = {k: [] for k in kinds}
    shown: Dict[str, List[np.ndarray]] = {k: [] for k in kinds}
    with decoder.images(test_images_path) as images, FeatureStore(test_features_path) as feats:
        normaliser = _normaliser(images)
        pick = set(show_indices(len(images), n_show).tolist())
        for offset, f in feats.batches(batch_size):
            f = torch.from_numpy(f)
            truth = image_store.to_float(images.read(offset, offset + len(f)))
            rows = [i for i in range(len(f)) if offset + i in pick]
            for k, kind in enumerate(kinds):
                generator = torch.Generator().manual_seed(seed * 1000 + k * 100003 + offset)
                g = feature_ops.perturb(f, kind, generator=generator) if kind != "none" else f
                recon = decoder(g)
                errors[kind].append(metrics.normalised_error(recon, truth, normaliser))
                change = (g - f).flatten(1).norm(dim=1) / f.flatten(1).norm(dim=1).clamp_min(1e-12)
                changes[kind].append(change.numpy())
                shown[kind].append(image_store.to_uint8(recon[rows]))
            shown.setdefault("input", []).append(images.read(offset, offset + len(f))[rows])
    table = pd.DataFrame([
        metrics.error_summary(np.concatenate(errors[k]), seed, representation=representation_name, perturbation=k,
                              fraction=fraction, feature_change=float(np.mean(np.concatenate(changes[k]))))
        for k in kinds
    ])
    atomic_files.write_csv(table, csv_path)
    grid = [("input", np.concatenate(shown["input"]))]
    grid += [(f"{k}\n{table.loc[i, 'error']:.3f}", np.concatenate(shown[k])) for i, k in enumerate(kinds)]
    image_grid(grid, png_path, title=analysis_title(representation_name, decoder.label, "reconstructions from "
                                                    "perturbed features (row label: normalised error)"))
    for _, row in table.iterrows():
        log.info("%s %-22s error %.4f  feature change %.3f", representation_name, row["perturbation"], row["error"],
                 row["feature_change"])
    return table


# --------------------------------------------------------------------------- §5.5 interpolation


def interpolation(representation_name: str, decoder_path: str, test_features_path: str, h5_path: str,
                  png_path: str, pairs: int = 2, steps: int = 8, n_show: int = 6, device: str = "auto") -> np.ndarray:
    """Reconstructions along the line between the features of two test images (§5.5, Figure 10).

    The pairs are the fixed figure images taken two by two; ``h5_path`` holds the strips
    (pairs, steps, 3, S, S) for the combined figure.

    Parameters
    ----------
    representation_name : str
        The representation's name, for the outputs' attributes and the figure's title.
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    test_features_path : str
        The test split's feature cache the two endpoints of each strip come from.
    h5_path, png_path : str
        Outputs: the strips (uint8) with the chosen pairs of test indices; the figure.
    pairs : int, default 2
        Image pairs to interpolate between (fewer when the test set has fewer shown images).
    steps : int, default 8
        Points along each line, the two endpoints included (Figure 10 shows 8).
    n_show : int, default 6
        Test images shown in the figures; the pairs are taken from them.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    decoder = TrainedDecoder(decoder_path, device)
    with FeatureStore(test_features_path) as feats:
        pick = show_indices(len(feats), max(2 * pairs, n_show))
        if len(pick) < 2:
            raise ValueError(f"{representation_name}: interpolation needs at least two test images, the test set "
                             f"has {len(feats)}")
        chosen = [(int(pick[2 * p]), int(pick[2 * p + 1])) for p in range(min(pairs, len(pick) // 2))]
        strips = np.stack([image_store.to_uint8(decoder(feature_ops.interpolate(torch.from_numpy(feats.take([a])[0]),
                                                                          torch.from_numpy(feats.take([b])[0]), steps)))
                           for a, b in chosen])
    with atomic_files.atomic_path(h5_path) as tmp, hdf5.create_h5(tmp) as handle:
        hdf5.create_dataset(handle, "strips", data=strips)
        hdf5.create_dataset(handle, "pairs", data=np.array(chosen))
        hdf5.write_attrs(handle, hdf5.provenance(representation=representation_name, label=decoder.label,
                                                   steps=steps))
    rows = [(f"{a} → {b}", strip) for (a, b), strip in zip(chosen, strips)]
    image_grid(rows, png_path, title=analysis_title(representation_name, decoder.label,
                                                    f"interpolating features in {steps} steps"))
    return strips


# --------------------------------------------------------------------------- §5.5 random vectors


def random_samples(representation_name: str, decoder_path: str, train_features_path: str, csv_path: str,
                   png_path: str, count: int = 8, alpha: float = 2.0, fit_images: int = 4096, bins: int = 100,
                   seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Decode random feature vectors drawn with the real per-dimension statistics (§5.5, Figure 11).

    Parameters
    ----------
    representation_name : str
        The representation's name, for the table's rows and the figure's title.
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    train_features_path : str
        The training split's feature cache the per-dimension statistics are fitted on.
    csv_path, png_path : str
        Outputs: the zero fraction and mean norm of the real and of the sampled vectors; the figure
        of the decoded samples.
    count : int, default 8
        Random vectors drawn by each sampler (per-dimension histograms, truncated Gaussian).
    alpha : float, default 2.0
        Factor the samples are multiplied by (§5.5: α = 2, for brighter, clearer images).
    fit_images : int, default 4096
        Training vectors (at most; a seeded sample) the statistics are fitted on (§5.5: 4096 images).
    bins : int, default 100
        Bins of each dimension's histogram of non-zero values (ours; the paper gives none).
    seed : int, default 0
        Seed of the sample of training vectors and of the random vectors.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    decoder = TrainedDecoder(decoder_path, device)
    with FeatureStore(train_features_path) as feats:
        rng = np.random.default_rng(seed)
        n = min(fit_images, len(feats))
        idx = np.sort(rng.choice(len(feats), size=n, replace=False))
        real = torch.from_numpy(np.concatenate([feats.read(int(i), int(i) + 1) for i in idx]))
    sampler = feature_ops.FeatureSampler.fit(real, bins=bins)
    generator = torch.Generator().manual_seed(seed)
    samples = {
        "histograms": sampler.sample(count, alpha=alpha, generator=generator),
        "truncated Gaussian": sampler.sample_truncated_gaussian(count, alpha=alpha, generator=generator),
    }
    def statistics(source: str, vectors: torch.Tensor, scale: float, number: int) -> Dict[str, object]:
        return {"representation": representation_name, "source": source, "alpha": scale, "count": number,
                "zero_fraction": float((vectors == 0).float().mean()),
                "mean_norm": float(vectors.flatten(1).norm(dim=1).mean())}

    rows = [statistics("training features", real, 1.0, n)]
    grid = []
    for name, s in samples.items():
        rows.append(statistics(name, s, alpha, count))
        grid.append((name, image_store.to_uint8(decoder(s))))
    table = pd.DataFrame(rows)
    atomic_files.write_csv(table, csv_path)
    image_grid(grid, png_path, title=analysis_title(representation_name, decoder.label,
                                                    f"random feature vectors (α = {alpha:g})"))
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
                   device: str = "auto", representation_name: str = "fc8") -> pd.DataFrame:
    """fc8 with all activations, only the top ``k``, all but the top ``k`` (§5.3, Figures 8, 16).

    Parameters
    ----------
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    test_features_path : str
        The test split's cache of the class scores (fc8, or a network's logits).
    test_images_path : str
        The test image store the reconstructions are compared with.
    csv_path, png_path : str
        Outputs: one row per variant (``all``, ``top5``, ``all_but_top5``) with the normalised
        error and its 95 % interval; the figure, titled with the shown images' predictions.
    categories : sequence of str, optional
        Class names, one per score, for the predictions in the title (None: ``class <index>``).
    k : int, default 5
        The number of largest activations kept or removed (§5.3: the top 5).
    n_show : int, default 6
        Test images shown in the figure.
    seed : int, default 0
        Seed of the bootstrap intervals.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    representation_name : str, default "fc8"
        The representation's name, for the table's rows and the figure's title.
    """
    decoder = TrainedDecoder(decoder_path, device)
    with decoder.images(test_images_path) as images, FeatureStore(test_features_path) as feats:
        normaliser = _normaliser(images)
        logits = torch.from_numpy(feats.read(0, len(feats)))
        truth = image_store.to_float(images.read(0, len(images)))
        pick = show_indices(len(images), n_show)
        inputs = images.take(pick)
    variants = {"all": "all activations", "top5": f"only the {k} largest", "all_but_top5": f"all but the {k} largest"}
    rows, grid = [], [("input\n(prediction)", inputs)]
    for variant, name in variants.items():
        recon = decoder(feature_ops.dark_knowledge(logits, variant, k=k))
        errs = metrics.normalised_error(recon, truth, normaliser)
        rows.append(metrics.error_summary(errs, seed, representation=representation_name, variant=variant, k=k,
                                          description=name))
        grid.append((f"{name}\n{rows[-1]['error']:.3f}", image_store.to_uint8(recon[pick])))
    table = pd.DataFrame(rows)
    atomic_files.write_csv(table, csv_path)
    predictions = _prediction(logits[pick], categories)
    image_grid(grid, png_path, title=analysis_title(representation_name, decoder.label,
                                                    "dark knowledge; predictions: " + "; ".join(predictions)))
    return table


# --------------------------------------------------------------------------- §5.3 hue shift


def hue_shift(representation, decoder_path: str, test_images_path: str, csv_path: str, png_path: str,
              degrees: Sequence[float] = (120, 240), categories: Optional[Sequence[str]] = None, n_show: int = 6,
              seed: int = 0, device: str = "auto", representation_name: str = "fc8",
              batch_size: int = 32) -> pd.DataFrame:
    """Reconstruct fc8 of hue-rotated test images (§5.3): if colour survives to the last layer the
    reconstruction is closer to the rotated image than to the original.

    Parameters
    ----------
    representation : preimage.features.base.Representation
        Φ, computed anew on the rotated images (moved to the decoder's device).
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    test_images_path : str
        The test image store whose images are rotated in hue.
    csv_path, png_path : str
        Outputs: one row per rotation (0° first) with the error to the rotated and to the original
        image and the fraction of images whose top class stays that of the original; the figure.
    degrees : sequence of float, default (120, 240)
        Hue rotations in degrees (§5.3: the red apple made green and blue, 120° and 240°).
    categories : sequence of str, optional
        Class names, one per score, for the predictions in the figure.
    n_show : int, default 6
        Test images shown in the figure.
    seed : int, default 0
        Seed of the bootstrap intervals.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    representation_name : str, default "fc8"
        The representation's name, for the table's rows and the figure's title.
    batch_size : int, default 32
        Images whose features are computed at a time.
    """
    decoder = TrainedDecoder(decoder_path, device)
    representation.to(decoder.device)
    normaliser, truth, pick = _shown_test_images(decoder, test_images_path, n_show)
    rows, grid, original_top1 = [], [], None
    for d in [0.0, *[float(v) for v in degrees]]:
        shifted = feature_ops.hue_shift(truth, d) if d else truth
        feats = _features_of(representation, shifted, decoder.device, batch_size)
        recon = decoder(feats)
        to_shifted = metrics.normalised_error(recon, shifted, normaliser)
        to_original = metrics.normalised_error(recon, truth, normaliser)
        top1 = feats.flatten(1).argmax(1)
        original_top1 = top1 if original_top1 is None else original_top1
        row = metrics.error_summary(to_shifted, seed, representation=representation_name, degrees=d)
        row["error_to_original"] = float(np.mean(to_original))
        row["same_top1_as_original"] = float((top1 == original_top1).float().mean())
        rows.append(row)
        preds = _prediction(feats[pick], categories) if feats.dim() == 2 and feats.shape[1] > 1 else [""] * len(pick)
        grid.append((f"input {d:g}°", image_store.to_uint8(shifted[pick])))
        grid.append((f"{representation_name} → {d:g}°\n" + "\n".join(preds[:1]), image_store.to_uint8(recon[pick])))
    table = pd.DataFrame(rows)
    atomic_files.write_csv(table, csv_path)
    image_grid(grid, png_path, title=analysis_title(representation_name, decoder.label,
                                                    f"hue-rotated inputs and their {representation_name} "
                                                    "reconstructions"))
    return table


# --------------------------------------------------------------------------- §4 brightness


def brightness(representation, decoder_path: str, test_images_path: str, csv_path: str, png_path: str,
               factors: Sequence[float] = (10.0, 0.1), n_show: int = 6, seed: int = 0, device: str = "auto",
               representation_name: str = "hog", batch_size: int = 64) -> pd.DataFrame:
    """HOG of images scaled in brightness (§4): the block normalisation makes HOG (almost)
    invariant, so the reconstructions hardly change. Rows: the error of each reconstruction to
    the original image, and its distance to the reconstruction of the unscaled image.

    Parameters
    ----------
    representation : preimage.features.base.Representation
        Φ (HOG), computed anew on the scaled images (moved to the decoder's device).
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    test_images_path : str
        The test image store whose images are scaled.
    csv_path, png_path : str
        Outputs: one row per factor (1 first); the figure.
    factors : sequence of float, default (10.0, 0.1)
        Brightness factors (§4: 10 times brighter and 10 times darker), applied without clipping.
    n_show : int, default 6
        Test images shown in the figure.
    seed : int, default 0
        Seed of the bootstrap intervals.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    representation_name : str, default "hog"
        The representation's name, for the table's rows and the figure's title.
    batch_size : int, default 64
        Images whose features are computed at a time.
    """
    decoder = TrainedDecoder(decoder_path, device)
    representation.to(decoder.device)
    normaliser, truth, pick = _shown_test_images(decoder, test_images_path, n_show)
    reference, rows, grid = None, [], [("input", image_store.to_uint8(truth[pick]))]
    for factor in [1.0, *[float(f) for f in factors]]:
        scaled = feature_ops.scale_brightness(truth, factor)
        feats = _features_of(representation, scaled, decoder.device, batch_size)
        recon = decoder(feats)
        reference = recon if reference is None else reference
        row = metrics.error_summary(metrics.normalised_error(recon, truth, normaliser), seed,
                                    representation=representation_name, factor=factor)
        row["distance_to_unscaled"] = float(np.mean(metrics.normalised_error(recon, reference, normaliser)))
        rows.append(row)
        grid.append((f"×{factor:g}\n{row['error']:.3f}", image_store.to_uint8(recon[pick])))
    table = pd.DataFrame(rows)
    atomic_files.write_csv(table, csv_path)
    image_grid(grid, png_path, title=analysis_title(representation_name, decoder.label,
                                                    "reconstructions of brightness-scaled images"))
    return table


# --------------------------------------------------------------------------- Figure 17 single units


def single_units(representation_name: str, decoder_path: str, train_features_path: str, png_path: str, count: int = 6,
                 categories: Optional[Sequence[str]] = None, device: str = "auto", sample: int = 1024) -> np.ndarray:
    """Decode vectors with a single active unit (supplementary Figure 17).

    The units are the ``count`` with the largest activation over (a sample of) the training
    features; each is set to that largest activation and every other unit to zero. Units of
    class scores (fc8, a network's logits: as many units as ``categories``) are labelled with
    their class names.

    Parameters
    ----------
    representation_name : str
        The representation's name, for the figure's title.
    decoder_path : str
        The trained decoder, ``results/{rep}/decoder.pt`` (:class:`preimage.decoding.TrainedDecoder`).
    train_features_path : str
        The training split's feature cache the units' largest activations are taken from.
    png_path : str
        Output: the figure of the decoded vectors.
    count : int, default 6
        Units decoded, those with the largest activations.
    categories : sequence of str, optional
        Class names, one per unit of a class-score layer, for the labels.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    sample : int, default 1024
        Training vectors (the first ones) the largest activations are taken over.
    """
    decoder = TrainedDecoder(decoder_path, device)
    with FeatureStore(train_features_path) as feats:
        n = min(sample, len(feats))
        real = torch.from_numpy(feats.read(0, n)).flatten(1)
    peak, _ = real.max(dim=0)
    units = torch.argsort(peak, descending=True)[:count].tolist()
    vectors = feature_ops.single_unit_vectors(real.shape[1], units, [float(peak[u]) for u in units])
    shape = tuple(decoder.meta["feature_shape"])
    recon = image_store.to_uint8(decoder(vectors.reshape(len(units), *shape)))
    named = categories is not None and len(categories) == real.shape[1]  # class scores (fc8, logits)
    labels = [f"{u}: {_class_name(categories, u)}" if named else f"unit {u}" for u in units]
    image_grid([("; ".join(labels), recon)], png_path,
               title=analysis_title(representation_name, decoder.label, "one active unit, the rest zero"))
    return recon

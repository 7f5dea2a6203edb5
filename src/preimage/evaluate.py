"""Evaluation of a trained decoder on the held-out test images (paper §3, §5.1, Table 2, Figure 7).

The paper's measure is the *average normalised reconstruction error*: the mean over test images
of ‖x − f(Φ(x))‖₂ divided by N, the mean Euclidean distance between all pairs of test images
(:mod:`preimage.metrics`). We report it with a bootstrap 95 % interval, PSNR and SSIM, and two
reference rows a reader needs to judge it:

``mean_image``
    every test image "reconstructed" as the mean training image;
``nearest_neighbour``
    the training image whose feature is closest (Euclidean) to the test image's feature.

A decoder that does not beat both has learnt nothing useful.

Every row also records ``seconds_per_image``, the time its method takes per test image here (ours):
the decoder reading the test features and decoding them, the mean of the training images, the
nearest-neighbour search. ``reconstructions.h5`` keeps each test image's nearest training image
(dataset ``nearest_neighbour``) and the mean training image (``mean_image``), so that the scorecard
(:mod:`preimage.scorecard`) scores the same neighbours, image and times without computing them again.

Every row also gets ``sharpness`` (:func:`preimage.metrics.sharpness`: the high-frequency energy of
the reconstructions relative to the test images'), and the decoders compared under Appendix A (the
``-feature`` / ``-gan`` variants and their base) the ``feature_error`` ‖Φ(x̂) − Φ(x)‖/‖Φ(x)‖ (mean over
test images; Φ(x̂) recomputed from the clamped reconstruction at the evaluated size, Φ(x) from the
feature cache), the quantity a feature-space loss minimises; NaN elsewhere. Reconstructions come from
:class:`preimage.decoding.TrainedDecoder`: clipped to the valid range [0, 1] before measuring, fc
decoders' smaller predictions upsampled bilinearly to the image size (§5.1). Everything streams in
batches. The figures of the reconstructions are drawn by :mod:`preimage.figures`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, TypeVar

import numpy as np
import pandas as pd
import torch

from preimage import atomic_files, hdf5, image_store, metrics
from preimage.decoding import TrainedDecoder
from preimage.features.cache import FeatureStore

log = logging.getLogger("preimage.evaluate")

COLUMNS = ["representation", "method", "label", "error", "ci_low", "ci_high", "psnr", "ssim", "feature_error",
           "sharpness", "n_test", "normaliser", "eval_size", "output_size", "seconds_per_image"]

#: The dataset of ``reconstructions.h5`` that holds each test image's nearest training image (its index).
NEAREST_NEIGHBOUR = "nearest_neighbour"
#: The dataset of ``reconstructions.h5`` that holds the mean training image (float32 ``(3, S, S)`` in [0, 1]).
MEAN_IMAGE = "mean_image"

T = TypeVar("T")


def _timed(items: Iterable[T], clock: Dict[str, float], key: str) -> Iterator[T]:
    """``items``, adding the seconds spent producing each item to ``clock[key]`` (not the time the
    consumer spends on it)."""
    iterator, end = iter(items), object()
    while True:
        started = time.perf_counter()
        item = next(iterator, end)
        clock[key] += time.perf_counter() - started
        if item is end:
            return
        yield item


def mean_training_image(images: image_store.ImageStore, batch_size: int = 256) -> torch.Tensor:
    total = torch.zeros(3, images.size, images.size, dtype=torch.float64)
    for _, batch in images.batches(batch_size):
        total += torch.from_numpy(batch).double().sum(0)
    return (total / len(images) / 255.0).float()


@torch.no_grad()
def nearest_neighbours(test: FeatureStore, train: FeatureStore, device: torch.device,
                       limit: Optional[int] = None, batch_size: int = 256,
                       block_bytes: int = 1 << 30) -> Tuple[np.ndarray, int]:
    """Index of the training feature nearest to each test feature (and how many were searched).

    The test features are held in blocks of at most ``block_bytes`` (all of them at once for the
    paper's 2,000 test images), so the training features are read once per block: once in all
    for a cache, and computed once for ``features.store: recompute``."""
    n_train = len(train) if limit is None else min(limit, len(train))
    best = np.zeros(len(test), dtype=np.int64)
    dim = int(np.prod(test.shape)) if test.shape else 1
    block = max(batch_size, int(block_bytes // (4 * max(1, dim))))
    for t0 in range(0, len(test), block):
        q = torch.from_numpy(test.read(t0, min(t0 + block, len(test))).reshape(-1, dim)).to(device)
        qn = (q * q).sum(1, keepdim=True)
        best_d = torch.full((len(q),), float("inf"), device=device)
        best_i = torch.zeros(len(q), dtype=torch.long, device=device)
        for r0 in range(0, n_train, batch_size):
            r = torch.from_numpy(train.read(r0, min(r0 + batch_size, n_train)).reshape(-1, dim)).to(device)
            d = qn + (r * r).sum(1)[None, :] - 2 * q @ r.T
            dmin, imin = d.min(1)
            better = dmin < best_d
            best_d = torch.where(better, dmin, best_d)
            best_i = torch.where(better, imin + r0, best_i)
        best[t0:t0 + len(q)] = best_i.cpu().numpy()
    return best, n_train


def evaluate_decoder(
    representation_name: str,
    decoder_path: str,
    test_features_path: str,
    test_images_path: str,
    train_features_path: str,
    train_images_path: str,
    error_csv: str,
    reconstructions_h5: str,
    batch_size: int = 64,
    device: str = "auto",
    nn_limit: Optional[int] = None,
    seed: int = 0,
    feature_representation: Optional[Mapping[str, Any]] = None,
) -> pd.DataFrame:
    """Write ``error.csv`` (decoder + reference rows) and ``reconstructions.h5`` (uint8).

    ``representation_name`` names the representation in the table (its slug: ``fc6``,
    ``fc6-ae``, ``resnet50@layer4``). Every row is computed on the region the representation sees
    (the decoder's ``image_size``: the centre crop for AlexNet, paper Table 1), the decoder's
    output upsampled bilinearly to it when it predicts a smaller image (§5.1); ``eval_size`` and
    ``output_size`` in the table say at which size the error was computed and at which the
    decoder predicts. ``feature_representation`` (``{"name", "params"}``) adds the decoder's
    ``feature_error``, computed with that representation.

    Parameters
    ----------
    representation_name : str
        The representation's slug, naming it in the table (``fc6``, ``fc6-ae``, ``resnet50@layer4``).
    decoder_path : str
        The trained decoder (``results/{rep}/decoder.pt``).
    test_features_path, test_images_path : str
        The test split's feature cache (the decoder's inputs) and image store (the targets).
    train_features_path, train_images_path : str
        The training split's cache and images, for the two reference rows: the mean training image
        and the training image whose features are nearest (Euclidean) to the test image's.
    error_csv : str
        Output: one row per method (``decoder``, ``mean_image``, ``nearest_neighbour``) with the
        normalised error (Table 2: ‖x̂ − x‖ over the mean distance between test images), its 95 %
        bootstrap interval, PSNR, SSIM and the method's seconds per test image.
    reconstructions_h5 : str
        Output: every test image's reconstruction, uint8 ``(N, 3, S, S)`` (``reconstructions``), the
        index of its nearest training image (``nearest_neighbour``, int64 ``(N,)``) and the mean
        training image (``mean_image``, float32 ``(3, S, S)``).
    batch_size : int, default 64
        Feature vectors decoded at a time.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    nn_limit : int, optional
        Search the nearest neighbour among the first this many training images only (None: all).
    seed : int, default 0
        Seed of the bootstrap intervals.
    feature_representation : mapping, optional
        ``{"name", "params"}`` of the representation whose feature error the table adds (the
        ``-feature``/``-gan`` variants, Appendix A); None: no feature error.
    """
    decoder = TrainedDecoder(decoder_path, device)
    label = decoder.meta.get("label") or representation_name
    output_size = decoder.output_size
    with decoder.images(test_images_path) as test_images, FeatureStore(test_features_path) as test_feats, \
            decoder.images(train_images_path) as train_images, \
            FeatureStore(train_features_path) as train_feats:
        size, n = test_images.size, len(test_images)
        normaliser = metrics.mean_pairwise_distance(test_images.float_view())
        log.info("%s: %d test images, errors on the centre %d px of %d (decoder output %d px), "
                 "mean pairwise distance %.3f", representation_name, n, size, test_images.stored_size, output_size,
                 normaliser)
        seconds = {"decoder": 0.0}
        started = time.perf_counter()
        mean_image = mean_training_image(train_images)
        seconds["mean_image"] = time.perf_counter() - started
        started = time.perf_counter()
        nn_index, searched = nearest_neighbours(test_feats, train_feats, decoder.device, nn_limit)
        seconds["nearest_neighbour"] = time.perf_counter() - started
        errs = {m: [] for m in ("decoder", "mean_image", "nearest_neighbour")}
        psnrs = {m: [] for m in errs}
        ssims = {m: [] for m in errs}
        energy = {m: [] for m in errs}
        truth_energy, feature_errors = [], []
        representation = None
        if feature_representation is not None:
            from preimage.features import create

            representation = create(feature_representation["name"],
                                    **dict(feature_representation.get("params") or {})).to(decoder.device)
        with atomic_files.atomic_path(reconstructions_h5) as tmp, hdf5.create_h5(tmp) as out:
            dataset = hdf5.create_dataset(out, "reconstructions", shape=(n, 3, size, size), dtype=np.uint8,
                                           chunks=(1, 3, size, size))
            hdf5.write_attrs(out, hdf5.provenance(representation=representation_name, label=label,
                                                    decoder=os.path.abspath(decoder_path)))
            hdf5.create_dataset(out, NEAREST_NEIGHBOUR, data=np.asarray(nn_index, dtype=np.int64))
            hdf5.create_dataset(out, MEAN_IMAGE, data=mean_image.numpy().astype(np.float32))
            for offset, recon in _timed(decoder.reconstruct(test_feats, batch_size), seconds, "decoder"):
                truth = image_store.to_float(test_images.read(offset, offset + len(recon)))
                dataset[offset:offset + len(recon)] = image_store.to_uint8(recon)
                candidates = {
                    "decoder": recon,
                    "mean_image": mean_image.expand_as(truth),
                    "nearest_neighbour": image_store.to_float(train_images.take(nn_index[offset:offset + len(recon)])),
                }
                for method, guess in candidates.items():
                    errs[method].append(metrics.normalised_error(guess, truth, normaliser))
                    psnrs[method].append(metrics.psnr(guess, truth))
                    ssims[method].append(metrics.ssim(guess, truth))
                    energy[method].append(metrics.high_frequency_energy(guess))
                truth_energy.append(metrics.high_frequency_energy(truth))
                if representation is not None:
                    with torch.no_grad():
                        phi = representation(recon.to(decoder.device)).float().cpu()
                    feature_errors.append(metrics.relative_feature_error(
                        phi, test_feats.read(offset, offset + len(recon))))
    labels = {"decoder": label, "mean_image": "mean training image",
              "nearest_neighbour": f"nearest neighbour in {representation_name} feature space "
                                   f"({searched} training images)"}
    rows = []
    reference_energy = float(np.concatenate(truth_energy).sum())
    for method in errs:
        psnr = np.concatenate(psnrs[method])
        finite_psnr = psnr[np.isfinite(psnr)]
        row = metrics.error_summary(np.concatenate(errs[method]), seed, count_key="n_test",
                                    representation=representation_name, method=method, label=labels[method])
        row.update(psnr=float(finite_psnr.mean()) if len(finite_psnr) else float("inf"),
                   ssim=float(np.concatenate(ssims[method]).mean()),
                   feature_error=(float(np.mean(np.concatenate(feature_errors)))
                                  if method == "decoder" and feature_errors else float("nan")),
                   sharpness=(float(np.concatenate(energy[method]).sum()) / reference_energy
                              if reference_energy > 0 else float("nan")),
                   normaliser=normaliser, eval_size=int(size),
                   output_size=int(output_size if method == "decoder" else size),
                   seconds_per_image=seconds[method] / max(1, n))
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    atomic_files.write_csv(table, error_csv)
    for row in rows:
        log.info("%-18s error %.4f [%.4f, %.4f]  PSNR %.2f dB  SSIM %.3f  feature error %.4f  sharpness %.3f",
                 row["method"], row["error"], row["ci_low"], row["ci_high"], row["psnr"], row["ssim"],
                 row["feature_error"], row["sharpness"])
    return table

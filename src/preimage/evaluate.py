"""Evaluation of a trained decoder on the held-out test images (paper §3, §5.1, Table 2, Figure 7).

The paper's measure is the *average normalised reconstruction error*: the mean over test images
of ‖x − f(Φ(x))‖₂ divided by N, the mean Euclidean distance between all pairs of test images
(:mod:`preimage.metrics`). We report it with a bootstrap 95 % interval, PSNR and SSIM, and two
reference rows a reader needs to judge it:

``mean_image``
    every test image "reconstructed" as the mean training image;
``nearest_neighbour``
    the training image whose feature is closest (Euclidean) to the test image's feature.

A decoder that does not beat both has learnt nothing useful. Reconstructions are clipped to the
valid range [0, 1] before measuring; fc decoders' smaller predictions are upsampled bilinearly to
the image size (§5.1). Everything streams in batches.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from preimage import metrics, store
from preimage.devices import resolve_device
from preimage.train import load_decoder

log = logging.getLogger("preimage.evaluate")

COLUMNS = ["representation", "method", "label", "error", "ci_low", "ci_high", "psnr", "ssim", "n_test", "normaliser",
           "eval_size", "output_size"]


@torch.no_grad()
def reconstruct_batches(model, meta: Dict[str, Any], features: store.FeatureStore, image_size: int,
                        batch_size: int, device: torch.device) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield ``(offset, reconstructions)`` as float CPU tensors in [0, 1] at ``image_size``."""
    for offset, f in features.batches(batch_size):
        out = model(torch.from_numpy(f).to(device) * meta["feature_scale"]).float()
        if out.shape[-1] != image_size:
            out = metrics.upsample_to(out, image_size)
        yield offset, out.clamp_(0, 1).cpu()


def mean_training_image(images: store.ImageStore, batch_size: int = 256) -> torch.Tensor:
    total = torch.zeros(3, images.size, images.size, dtype=torch.float64)
    for _, batch in images.batches(batch_size):
        total += torch.from_numpy(batch).double().sum(0)
    return (total / len(images) / 255.0).float()


@torch.no_grad()
def nearest_neighbours(test: store.FeatureStore, train: store.FeatureStore, device: torch.device,
                       limit: Optional[int] = None, batch_size: int = 256) -> Tuple[np.ndarray, int]:
    """Index of the training feature nearest to each test feature (and how many were searched)."""
    n_train = len(train) if limit is None else min(limit, len(train))
    best = np.zeros(len(test), dtype=np.int64)
    for t0, tf in test.batches(batch_size):
        q = torch.from_numpy(tf.reshape(len(tf), -1)).to(device)
        qn = (q * q).sum(1, keepdim=True)
        best_d = torch.full((len(tf),), float("inf"), device=device)
        best_i = torch.zeros(len(tf), dtype=torch.long, device=device)
        for r0 in range(0, n_train, batch_size):
            r = torch.from_numpy(train.read(r0, min(r0 + batch_size, n_train)).reshape(-1, q.shape[1])).to(device)
            d = qn + (r * r).sum(1)[None, :] - 2 * q @ r.T
            dmin, imin = d.min(1)
            better = dmin < best_d
            best_d = torch.where(better, dmin, best_d)
            best_i = torch.where(better, imin + r0, best_i)
        best[t0:t0 + len(tf)] = best_i.cpu().numpy()
    return best, n_train


def _summary(rep: str, method: str, label: str, errors: np.ndarray, psnr: np.ndarray, ssim: np.ndarray,
             normaliser: float, seed: int, eval_size: int, output_size: int) -> Dict[str, Any]:
    low, high = metrics.bootstrap_ci(errors, seed=seed)
    finite_psnr = psnr[np.isfinite(psnr)]
    return {"representation": rep, "method": method, "label": label, "error": float(errors.mean()),
            "ci_low": low, "ci_high": high, "psnr": float(finite_psnr.mean()) if len(finite_psnr) else float("inf"),
            "ssim": float(ssim.mean()), "n_test": int(len(errors)), "normaliser": normaliser,
            "eval_size": int(eval_size), "output_size": int(output_size)}


def evaluate_decoder(
    representation: str,
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
) -> pd.DataFrame:
    """Write ``error.csv`` (decoder + reference rows) and ``reconstructions.h5`` (uint8).

    Every row is computed on the region the representation sees (the decoder's ``image_size``:
    the centre crop for AlexNet, paper Table 1), the decoder's output upsampled bilinearly to it
    when it predicts a smaller image (§5.1); ``eval_size`` and ``output_size`` in the table say
    at which size the error was computed and at which the decoder predicts.
    """
    target = resolve_device(device)
    model, meta = load_decoder(decoder_path, target)
    label = meta.get("label") or representation
    crop, output_size = int(meta["image_size"]), int(meta["output_size"])
    with store.ImageStore(test_images_path, crop) as test_images, store.FeatureStore(test_features_path) as test_feats, \
            store.ImageStore(train_images_path, crop) as train_images, \
            store.FeatureStore(train_features_path) as train_feats:
        size, n = test_images.size, len(test_images)
        normaliser = metrics.mean_pairwise_distance(test_images.float_view())
        log.info("%s: %d test images, errors on the centre %d px of %d (decoder output %d px), "
                 "mean pairwise distance %.3f", representation, n, size, test_images.stored_size, output_size,
                 normaliser)
        rows, per_method = [], {}
        mean_image = mean_training_image(train_images)
        nn_index, searched = nearest_neighbours(test_feats, train_feats, target, nn_limit)
        errs = {m: [] for m in ("decoder", "mean_image", "nearest_neighbour")}
        psnrs = {m: [] for m in errs}
        ssims = {m: [] for m in errs}
        with store.atomic_path(reconstructions_h5) as tmp, store.create_h5(tmp) as out:
            dataset = out.create_dataset("reconstructions", shape=(n, 3, size, size), dtype=np.uint8,
                                         chunks=(1, 3, size, size), compression=store.COMPRESSION)
            store.write_attrs(out, store.provenance(representation=representation, label=label,
                                                    decoder=os.path.abspath(decoder_path)))
            for offset, recon in reconstruct_batches(model, meta, test_feats, size, batch_size, target):
                truth = store.to_float(test_images.read(offset, offset + len(recon)))
                dataset[offset:offset + len(recon)] = (recon * 255).round().to(torch.uint8).numpy()
                candidates = {
                    "decoder": recon,
                    "mean_image": mean_image.expand_as(truth),
                    "nearest_neighbour": store.to_float(train_images.take(nn_index[offset:offset + len(recon)])),
                }
                for method, guess in candidates.items():
                    errs[method].append(metrics.normalised_error(guess, truth, normaliser))
                    psnrs[method].append(metrics.psnr(guess, truth))
                    ssims[method].append(metrics.ssim(guess, truth))
    labels = {"decoder": label, "mean_image": "mean training image",
              "nearest_neighbour": f"nearest neighbour in {representation} feature space ({searched} training images)"}
    for method in errs:
        rows.append(_summary(representation, method, labels[method], np.concatenate(errs[method]),
                             np.concatenate(psnrs[method]), np.concatenate(ssims[method]), normaliser, seed,
                             size, output_size if method == "decoder" else size))
    table = pd.DataFrame(rows, columns=COLUMNS)
    with store.atomic_path(error_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    for row in rows:
        log.info("%-18s error %.4f [%.4f, %.4f]  PSNR %.2f dB  SSIM %.3f", row["method"], row["error"],
                 row["ci_low"], row["ci_high"], row["psnr"], row["ssim"])
    return table


def show_indices(count: int, n_show: int) -> np.ndarray:
    """The fixed test images shown in every figure: evenly spaced over the test set."""
    return np.unique(np.linspace(0, count - 1, min(n_show, count)).round().astype(int))


def _label_of(reconstructions_h5: str) -> str:
    with store.reading(reconstructions_h5) as handle:
        return str(store.read_attrs(handle).get("label", ""))


def reconstructions_png(test_images_path: str, reconstructions_h5: str, png_path: str, n_show: int) -> None:
    """Inputs above reconstructions for the fixed test images (the per-representation figure)."""
    from preimage import figures

    with store.reading(reconstructions_h5) as handle, \
            store.ImageStore(test_images_path, crop=handle["reconstructions"].shape[-1]) as images:
        pick = show_indices(len(images), n_show)
        attrs = store.read_attrs(handle)
        recon = handle["reconstructions"][np.sort(pick)]
        figures.reconstructions_figure(images.take(pick), {attrs["representation"]: recon}, png_path,
                                       title=f"{attrs['representation']}: {attrs.get('label', '')}")


def group_figure(test_images_path: str, reconstructions: Dict[str, str], png_path: str, n_show: int) -> None:
    """Inputs above one row per representation (paper Figures 3 and 5)."""
    from preimage import figures

    rows, labels = {}, set()
    with store.ImageStore(test_images_path) as images:
        pick = show_indices(len(images), n_show)
        inputs = images.take(pick)
    for rep, path in reconstructions.items():
        with store.reading(path) as handle:
            rows[rep] = handle["reconstructions"][np.sort(pick)]
            label = str(store.read_attrs(handle).get("label", ""))
            if label and label != rep:
                labels.add(label)
    # every row shows the centre region the smallest reconstruction covers (AlexNet: its crop)
    side = min([inputs.shape[-1], *(r.shape[-1] for r in rows.values())])
    inputs = store.centre_crop(inputs, side)
    rows = {rep: store.centre_crop(r, side) for rep, r in rows.items()}
    title = "Reconstructions from " + ", ".join(rows) + (f" — {'; '.join(sorted(labels))}" if labels else "")
    figures.reconstructions_figure(inputs, rows, png_path, title=title)

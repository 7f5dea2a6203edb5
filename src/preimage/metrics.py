"""Reconstruction quality metrics (paper §3 and §5.1).

The paper reports the *normalised reconstruction error*: the Euclidean distance between a
reconstruction and its original image, divided by the mean Euclidean distance between
images of the test set (so that predicting a random test image scores ≈ 1 and predicting
the mean test image scores noticeably below 1).  For fc decoders, which predict a
downsampled image, the prediction is first upsampled bilinearly to the image size (§5.1,
:func:`upsample_to`).  PSNR and SSIM are additional, standard measures; bootstrap
confidence intervals quantify the uncertainty of the mean over test images.  For the losses of
Appendix A two more measures compare methods beyond the paper's: the relative feature error
(:func:`relative_feature_error`, what a feature-space loss minimises) and :func:`sharpness` (the
high-frequency energy of reconstructions relative to the originals').

Conventions
-----------
* Images are ``(N, 3, H, W)`` float arrays (torch tensors or numpy arrays) with values
  in ``[0, 1]``.  Anything indexable by slices with a ``.shape`` (e.g. an ``h5py`` dataset
  or a ``numpy.memmap``) is accepted by :func:`mean_pairwise_distance`, which reads it in
  chunks.
* Per-image metrics return a 1-D float64 numpy array of length N; means return a float.
* Everything is computed in float64.
* ``x`` is the reconstruction, ``y`` the ground truth; the normaliser of
  :func:`normalised_error` is computed from ``y`` (the test images) unless given.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "bootstrap_ci",
    "error_summary",
    "high_frequency_energy",
    "mean_normalised_error",
    "mean_pairwise_distance",
    "normalised_error",
    "psnr",
    "relative_feature_error",
    "sharpness",



    "sample_diversity",
    "ssim",
    "upsample_to",
]


def _as_tensor(a: Any) -> torch.Tensor:
    """float64 CPU tensor view/copy of a torch tensor or array-like."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim < 2:
        raise ValueError(f"expected a batch of images (N, ...), got shape {tuple(x.shape)}")


def _flat(a: Any) -> torch.Tensor:
    t = _as_tensor(a)
    return t.reshape(t.shape[0], -1)


# --------------------------------------------------------------------------- distances


def mean_pairwise_distance(images: Any, chunk_size: int = 128) -> float:
    """Mean Euclidean distance ``‖y_i − y_j‖₂`` over all ordered pairs ``i ≠ j``.

    Exact (no sampling).  Computed block by block over a symmetric block grid with the
    Gram identity ``‖a−b‖² = ‖a‖² + ‖b‖² − 2a·b`` in float64 (negative rounding residue
    clipped to 0, diagonal set to 0), so at most two blocks of ``chunk_size`` images are in
    memory at once (≈ 200 MB each for 128 images of 3×256×256 in float64) whatever N is.
    ``images`` may be a tensor, an array, an ``h5py`` dataset or a memmap.
    """
    n = int(images.shape[0])
    if n < 2:
        raise ValueError("need at least two images for a pairwise distance")
    if chunk_size < 1:
        raise ValueError("chunk_size must be ≥ 1")
    starts = list(range(0, n, chunk_size))
    total = 0.0
    for bi, a0 in enumerate(starts):
        a = _flat(images[a0 : a0 + chunk_size])
        na = (a * a).sum(dim=1)
        for b0 in starts[bi:]:
            if b0 == a0:
                b, nb = a, na
            else:
                b = _flat(images[b0 : b0 + chunk_size])
                nb = (b * b).sum(dim=1)
            d2 = na[:, None] + nb[None, :] - 2.0 * (a @ b.T)
            d2.clamp_(min=0.0)
            if b0 == a0:
                d2.fill_diagonal_(0.0)
                total += float(d2.sqrt().sum())  # both (i, j) and (j, i) are in the block
            else:
                total += 2.0 * float(d2.sqrt().sum())
    return total / (n * (n - 1))


def normalised_error(x: Any, y: Any, normaliser: Optional[float] = None) -> np.ndarray:
    """Per-image normalised error ``‖x_i − y_i‖₂ / N``.

    ``x``: reconstructions, ``y``: original test images (same shape).  ``N`` is
    ``normaliser`` if given, else :func:`mean_pairwise_distance` of ``y`` — the mean
    Euclidean distance between the test images (paper §5.1).
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt)
    if normaliser is None:
        normaliser = mean_pairwise_distance(yt)
    if not normaliser > 0:
        raise ValueError(f"normaliser must be positive, got {normaliser}")
    err = (xt - yt).reshape(xt.shape[0], -1).norm(dim=1)
    return (err / float(normaliser)).numpy()


def mean_normalised_error(x: Any, y: Any, normaliser: Optional[float] = None) -> float:
    """Mean over images of :func:`normalised_error`."""
    return float(np.mean(normalised_error(x, y, normaliser)))


def relative_feature_error(features: Any, targets: Any) -> np.ndarray:
    """Per-image ``‖Φ(x̂)_i − Φ(x)_i‖₂ / ‖Φ(x)_i‖₂``: ``features`` are the representation's features of
    the reconstructions, ``targets`` those of the originals (any per-image shape, flattened). The
    feature-space error of Mahendran & Vedaldi's comparison and of Appendix A's losses; a target
    of norm 0 gives ``inf`` (or 0 when the features are 0 too)."""
    ft, tt = _flat(features), _flat(targets)
    _check_pair(ft, tt)
    num, den = (ft - tt).norm(dim=1), tt.norm(dim=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (num / den).numpy()
    out[(den == 0).numpy() & (num == 0).numpy()] = 0.0
    return out


#: Radial frequency (cycles per pixel) above which :func:`high_frequency_energy` counts: a quarter
#: of the Nyquist frequency (0.5). Below the Nyquist frequency of every decoder's native output
#: measured on the evaluated grid (the fc decoders predict about half-size images: 0.25 cycles per
#: pixel at 64 px, 0.28 at 227 px), so the measure compares detail the decoders can draw rather
#: than their output resolution.
SHARPNESS_CUTOFF = 0.125


def high_frequency_energy(images: Any, cutoff: float = SHARPNESS_CUTOFF) -> np.ndarray:
    """Per-image energy of the spatial frequencies above ``cutoff`` cycles per pixel.

    Each ``(C, H, W)`` image, every channel separately: subtract the channel's mean, multiply by a
    separable Hann window (``w(n) = sin²(π·n/N)``, n = 0 … N−1: periodic, so that the image's
    borders add no spurious edges to the periodic DFT), take the 2-D DFT ``X(u, v)`` and sum
    ``|X(u, v)|² / (H·W)`` over the frequencies whose radius ``√(fu² + fv²)`` (``fu = u/H`` folded
    to ``[−½, ½)``, likewise ``fv``) exceeds ``cutoff``; the channels are summed. By Parseval the
    sum over all frequencies would be the windowed image's squared norm.
    """
    t = _as_tensor(images)
    if t.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(t.shape)}")
    h, w = t.shape[-2:]
    window = (torch.sin(torch.pi * torch.arange(h, dtype=torch.float64) / h) ** 2)[:, None] * \
             (torch.sin(torch.pi * torch.arange(w, dtype=torch.float64) / w) ** 2)[None, :]
    centred = (t - t.mean(dim=(-2, -1), keepdim=True)) * window
    power = torch.fft.fft2(centred).abs() ** 2 / (h * w)
    fu = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fv = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    high = (fu ** 2 + fv ** 2).sqrt() > cutoff
    return (power * high).sum(dim=(1, 2, 3)).numpy()


def sharpness(x: Any, y: Any, cutoff: float = SHARPNESS_CUTOFF) -> float:
    """High-frequency energy of the reconstructions ``x`` relative to that of the originals ``y``:
    ``Σ_i E(x_i) / Σ_i E(y_i)`` with E = :func:`high_frequency_energy` above ``cutoff`` cycles per
    pixel (both sets of the same shape, compared at the same size).

    1: as much fine detail as the originals; below 1: blurred (a decoder trained on eq. (1) averages
    the details it cannot locate, §5.1, Figure 6); above 1: more than the originals (noise,
    artefacts). A ratio of sums, not a mean of per-image ratios, so that nearly flat originals
    (a patch of sky) cannot dominate it. NaN when the originals have no such energy at all.
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt)
    den = float(high_frequency_energy(yt, cutoff).sum())
    return float(high_frequency_energy(xt, cutoff).sum()) / den if den > 0 else float("nan")



def sample_diversity(samples: Any, normaliser: float) -> np.ndarray:
    """Per code, the spread of several reconstructions of it (Mahendran & Vedaldi's "several
    pre-images per code"): the mean Euclidean distance over all pairs of its ``K`` reconstructions,
    divided by ``normaliser`` like :func:`normalised_error` (the mean distance between test
    images), so that 1 is the spread of unrelated test images and 0 identical samples.

    ``samples``: ``(N, K, ...)`` with ``K ≥ 2``. Returns ``(N,)`` float64.
    """
    t = _as_tensor(samples)
    if t.ndim < 3 or t.shape[1] < 2:
        raise ValueError(f"expected (N, K >= 2, ...) samples, got shape {tuple(t.shape)}")
    if not normaliser > 0:
        raise ValueError(f"normaliser must be positive, got {normaliser}")
    flat = t.reshape(t.shape[0], t.shape[1], -1)
    distances = torch.cdist(flat, flat)  # (N, K, K)
    k = t.shape[1]
    return (distances.sum(dim=(1, 2)) / (k * (k - 1)) / float(normaliser)).numpy()


# --------------------------------------------------------------------------- psnr / ssim


def psnr(x: Any, y: Any, data_range: float = 1.0) -> np.ndarray:
    """Per-image PSNR in dB: ``10·log10(data_range² / MSE_i)`` (``inf`` where MSE is 0)."""
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt)
    mse = ((xt - yt) ** 2).reshape(xt.shape[0], -1).mean(dim=1).numpy()
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / mse)


def ssim(x: Any, y: Any, data_range: float = 1.0, **kwargs: Any) -> np.ndarray:
    """Per-image SSIM via :func:`skimage.metrics.structural_similarity`.

    Each ``(3, H, W)`` image is compared with ``channel_axis=0`` (SSIM averaged over the
    colour channels), ``data_range`` as given (1.0 for ``[0, 1]`` images) and skimage's
    defaults otherwise (7×7 uniform window, K1=0.01, K2=0.03); extra ``kwargs`` (e.g.
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` for the Wang et al.
    variant) are passed through.  Images must be at least 7×7.
    """
    from skimage.metrics import structural_similarity

    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt)
    if xt.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(xt.shape)}")
    xa, ya = xt.numpy(), yt.numpy()
    out = np.empty(xa.shape[0], dtype=np.float64)
    for i in range(xa.shape[0]):
        out[i] = structural_similarity(xa[i], ya[i], channel_axis=0, data_range=float(data_range), **kwargs)
    return out


# --------------------------------------------------------------------------- statistics


def bootstrap_ci(
    values: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, chunk: int = 256
) -> Tuple[float, float]:
    """Percentile bootstrap ``(1 − alpha)`` confidence interval of the mean of ``values``.

    Resamples ``values`` with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``,
    so the result is deterministic for a seed) and returns the ``alpha/2`` and
    ``1 − alpha/2`` quantiles of the resampled means.  Non-finite values are rejected.
    """
    v = np.asarray(_as_tensor(values).reshape(-1).numpy(), dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci of an empty array")
    if not np.all(np.isfinite(v)):
        raise ValueError("bootstrap_ci needs finite values")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError("n_boot must be ≥ 1")
    rng = np.random.default_rng(seed)
    n = v.size
    means = np.empty(n_boot, dtype=np.float64)
    for s in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s)
        idx = rng.integers(0, n, size=(m, n))
        means[s : s + m] = v[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def error_summary(errors: Any, seed: int = 0, count_key: str = "n", **fields: Any) -> Dict[str, Any]:
    """One table row for per-image normalised errors: ``fields`` first, then ``error`` (their
    mean), ``ci_low``/``ci_high`` (the :func:`bootstrap_ci` of that mean with ``seed``) and the
    number of images under ``count_key``. Every error table of the workflow (``error.csv``, the
    analyses, the Mahendran & Vedaldi comparison) is built from these rows."""
    values = np.asarray(errors, dtype=np.float64)
    low, high = bootstrap_ci(values, seed=seed)
    return {**fields, "error": float(np.mean(values)), "ci_low": low, "ci_high": high, count_key: int(len(values))}


# --------------------------------------------------------------------------- resizing


def upsample_to(images: Any, size: int | Tuple[int, int]) -> Any:
    """Bilinearly resize ``(N, C, h, w)`` images to ``size`` (paper §5.1, fc predictions).

    ``align_corners=False`` (pixel-area convention, as ``cv2.resize``/PIL); antialiased
    when shrinking.  Returns the same type as the input (torch tensor — keeping its dtype
    and device, and differentiable — or numpy array).
    """
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    is_numpy = not isinstance(images, torch.Tensor)
    if is_numpy:
        images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) == hw:
        return images  # already the right size: returned unchanged (no copy)
    t = torch.as_tensor(images) if is_numpy else images
    src = t if t.is_floating_point() else t.to(torch.float32)
    shrink = t.shape[-2] > hw[0] and t.shape[-1] > hw[1]
    out = F.interpolate(src, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    return out.numpy() if is_numpy else out

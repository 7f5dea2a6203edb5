"""The operations on features and images that the analyses apply (paper §4, §5.3-5.5).

Perturbations of §5.4 (:func:`perturb`: binarise, dropout and the drop-then-binarise variants),
the interpolation and random feature vectors of §5.5 (:func:`interpolate`, :class:`FeatureSampler`),
the dark-knowledge masks of §5.3 (:func:`dark_knowledge`), the image operations of §4 and §5.3
(:func:`hue_shift`, :func:`scale_brightness`) and the one-hot vectors of supplementary Figure 17
(:func:`single_unit_vectors`). The pipeline steps that run them over stored features and a
trained decoder are in :mod:`preimage.analyses`.

Pure tensor functions, no I/O. Vector operations act per sample: dim 0 is the batch and all other
dims are flattened (an AlexNet conv map is one vector); the result has the input's shape and
device, and dtype float32 (float64 stays float64; float16, bfloat16 and integer inputs are computed
and returned as float32). Inputs are never modified. Randomness comes only from an explicit ``torch.Generator``: draws are made on the
generator's device (CPU when none is given) and then moved to the data's device, so a CPU
generator seeded the same gives the same result whatever device the features live on.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

PERTURBATIONS = ("binarise", "dropout", "drop_small_binarise", "drop_random_binarise")
DARK_KNOWLEDGE = ("all", "top5", "all_but_top5")

# rows per chunk when fitting a FeatureSampler: about 4M entries in flight at a time
_FIT_CHUNK_ENTRIES = 1 << 22


# --------------------------------------------------------------------------- helpers


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype results are computed and returned in: the inputs' promoted floating dtype, but at
    least float32 (float16 feature caches would overflow in norms of conv-sized vectors)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(N, D) view/copy of a batch of features in a floating dtype."""
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(features).__name__}")
    if features.dim() < 2:
        raise ValueError(f"expected a batch of features (N, ...), got shape {tuple(features.shape)}")
    return features.reshape(len(features), math.prod(features.shape[1:])).to(_float_dtype(features))


def _check_fraction(fraction: float) -> float:
    if not isinstance(fraction, numbers.Real) or not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be a number in [0, 1], not {fraction!r}")
    return float(fraction)


def _check_count(n: int, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {n!r}")
    return int(n)


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number, not {alpha!r}")
    return float(alpha)


def _random(shape: Tuple[int, ...], generator: Optional[torch.Generator], device: torch.device,
            dtype: torch.dtype = torch.float32, normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) draws on the generator's device, moved to ``device``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, not {type(generator).__name__}")
    source = generator.device if generator is not None else torch.device("cpu")
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=generator, device=source, dtype=dtype).to(device)


# --------------------------------------------------------------------------- §5.4 perturbations


def binarise(features: torch.Tensor, norm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """§5.4, Figure 7 ("Bin"): keep each entry's sign and give every non-zero entry of a sample the
    same magnitude ‖f‖ / √nnz, so the sample's Euclidean norm is unchanged. Zeros stay zero; an
    all-zero sample stays zero. ``norm`` (one value per sample) sets the norm to reach instead of
    ‖f‖: the drop-then-binarise variants pass the norm of the features before dropping."""
    f = _flat(features)
    nonzero = (f != 0).sum(dim=1, keepdim=True)
    target = f.norm(dim=1, keepdim=True) if norm is None else norm.reshape(len(f), 1).to(f.dtype)
    magnitude = target / nonzero.clamp_min(1).to(f.dtype).sqrt()
    return (torch.sign(f) * magnitude).reshape(features.shape)


def _random_keep_mask(f: torch.Tensor, fraction: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """(N, D) bool, False at exactly round(fraction·D) entries per sample, chosen uniformly
    without replacement (independently per sample)."""
    fraction = _check_fraction(fraction)
    n, d = f.shape
    drop = int(round(fraction * d))
    scores = _random((n, d), generator, f.device)
    dropped = scores.argsort(dim=1)[:, :drop]
    keep = torch.ones(n, d, dtype=torch.bool, device=f.device)
    keep.scatter_(1, dropped, False)
    return keep


def dropout(features: torch.Tensor, fraction: float = 0.5,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """§5.4, Figure 7 ("Drop50"): zero exactly round(fraction·D) entries of each sample, chosen
    uniformly without replacement, then rescale the sample to its original Euclidean norm. (If
    every surviving entry is zero the sample cannot be rescaled and comes back all zero.)"""
    f = _flat(features)
    g = f * _random_keep_mask(f, fraction, generator)
    norm, kept = f.norm(dim=1, keepdim=True), g.norm(dim=1, keepdim=True)
    g = torch.where(kept > 0, g * (norm / torch.where(kept > 0, kept, torch.ones_like(kept))), g)
    return g.reshape(features.shape)


def drop_small_binarise(features: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """§5.4, Figure 7: per sample, among the non-zero entries zero the round(fraction·nnz) with the
    smallest magnitude (ties broken by position), then :func:`binarise` to the norm of the features
    before dropping (§5.4: the perturbations keep the Euclidean norm)."""
    fraction = _check_fraction(fraction)
    f = _flat(features)
    magnitude = f.abs()
    nonzero = magnitude > 0
    drop = torch.round(nonzero.sum(dim=1).double() * fraction).long()
    # rank the non-zero entries by magnitude (zeros last), drop the first `drop` of each row
    key = torch.where(nonzero, magnitude, torch.full_like(magnitude, math.inf))
    order = key.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(f.shape[1], device=f.device).expand_as(order).contiguous())
    g = torch.where(rank < drop[:, None], torch.zeros_like(f), f)
    return binarise(g, norm=f.norm(dim=1)).reshape(features.shape)


def drop_random_binarise(features: torch.Tensor, fraction: float = 0.5,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """§5.4, Figure 7: :func:`dropout`'s random zeroing of round(fraction·D) entries, then
    :func:`binarise` to the norm of the features before dropping (§5.4: the perturbations keep the
    Euclidean norm)."""
    f = _flat(features)
    return binarise(f * _random_keep_mask(f, fraction, generator), norm=f.norm(dim=1)).reshape(features.shape)


def perturb(features: torch.Tensor, kind: str, generator: Optional[torch.Generator] = None,
            fraction: float = 0.5) -> torch.Tensor:
    """§5.4, Figures 7 and 9: apply one of :data:`PERTURBATIONS` by name, or ``"none"`` (an
    unchanged copy). ``fraction`` is passed to the three dropping variants."""
    if kind == "none":
        _flat(features)  # same input validation as the others
        return features.to(_float_dtype(features), copy=True)
    if kind == "binarise":
        return binarise(features)
    if kind == "dropout":
        return dropout(features, fraction, generator)
    if kind == "drop_small_binarise":
        return drop_small_binarise(features, fraction)
    if kind == "drop_random_binarise":
        return drop_random_binarise(features, fraction, generator)
    raise ValueError(f"unknown perturbation {kind!r}; known: none, {', '.join(PERTURBATIONS)}")


# --------------------------------------------------------------------------- §5.5 interpolation


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """§5.5, Figures 10, 19, 20: (steps, *shape) with rows (1 − t)·a + t·b for
    t = linspace(0, 1, steps); the first row is a and the last is b exactly. ``a`` and ``b`` are
    single features (no batch dim) of the same shape."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError("interpolation endpoints must be torch tensors")
    if a.shape != b.shape:
        raise ValueError(f"interpolation endpoints differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, not {steps!r}")
    dtype = _float_dtype(a, b)
    a, b = a.to(dtype), b.to(dtype=dtype, device=a.device)
    t = torch.linspace(0, 1, int(steps), dtype=dtype, device=a.device).reshape(-1, *([1] * a.dim()))
    out = (1 - t) * a[None] + t * b[None]
    out[0], out[-1] = a, b
    return out


# --------------------------------------------------------------------------- §5.5 random vectors


@dataclass(eq=False)
class FeatureSampler:
    """§5.5, Figures 11, 21: independent per-dimension model of a feature distribution.

    Each dimension keeps its fraction of exact zeros (the ReLU sparsity) and a histogram of its
    non-zero values (``bins`` equal-width bins between that dimension's smallest and largest
    non-zero value). Dimensions never non-zero in the training set always sample 0. Sampling draws
    each dimension independently, so correlations are lost; the paper scales samples by α = 2 to
    compensate for the resulting weak, averaged images.

    The "single shifted truncated Gaussian" alternative is fitted at the same time: σ is the
    standard deviation of all non-zero training values pooled over dimensions (μ their mean), and
    the Gaussian is centred at ``gaussian_loc`` = −σ·Φ⁻¹(s), i.e. μ shifted so that a draw is ≤ 0
    with probability exactly s, the overall fraction of zeros (clamped to [1e-6, 1 − 1e-6]).
    Negative draws become 0.
    """

    shape: Tuple[int, ...]
    zero_fraction: torch.Tensor  # (D,)
    edges: torch.Tensor  # (D, bins + 1) bin edges of the non-zero values
    cumulative: torch.Tensor  # (D, bins) float64 cumulative bin probabilities, last = 1
    has_values: torch.Tensor  # (D,) bool: the dimension was non-zero at least once
    overall_sparsity: float  # fraction of zeros over all dimensions and samples
    gaussian_mean: float  # μ: mean of all non-zero training values
    gaussian_std: float  # σ: their standard deviation
    gaussian_loc: float  # centre of the shifted Gaussian, −σ·Φ⁻¹(overall_sparsity)

    @classmethod
    def fit(cls, features: torch.Tensor, bins: int = 100) -> "FeatureSampler":
        """Fit from training features (N, *shape), N ≥ 1. Memory stays bounded: rows are
        processed in chunks (two passes: range, then histogram counts)."""
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
            raise ValueError(f"bins must be a positive integer, not {bins!r}")
        bins = int(bins)
        f = _flat(features)
        n, d = f.shape
        if n < 1 or d < 1:
            raise ValueError(f"FeatureSampler needs at least one non-empty feature vector, got shape "
                             f"{tuple(features.shape)}")
        device = f.device
        chunk = max(1, _FIT_CHUNK_ENTRIES // d)

        # pass 1: per-dimension count of non-zeros and range; pooled sum and sum of squares
        count = torch.zeros(d, dtype=torch.float64, device=device)
        low = torch.full((d,), math.inf, dtype=torch.float64, device=device)
        high = torch.full((d,), -math.inf, dtype=torch.float64, device=device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        total_sq = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, n, chunk):
            x = f[start:start + chunk]
            nonzero = x != 0
            count += nonzero.sum(dim=0)
            low = torch.minimum(low, torch.where(nonzero, x, math.inf).min(dim=0).values.double())
            high = torch.maximum(high, torch.where(nonzero, x, -math.inf).max(dim=0).values.double())
            values = x[nonzero].double()
            total += values.sum()
            total_sq += (values * values).sum()
        has_values = count > 0
        low = torch.where(has_values, low, torch.zeros_like(low))
        high = torch.where(has_values, high, torch.zeros_like(high))
        width = high - low

        # pass 2: histogram counts by one scatter_add per chunk
        counts = torch.zeros(d * bins, dtype=torch.float64, device=device)
        offset = torch.arange(d, device=device) * bins
        scale = torch.where(width > 0, bins / torch.where(width > 0, width, torch.ones_like(width)),
                            torch.zeros_like(width))
        low_f, scale_f = low.to(f.dtype), scale.to(f.dtype)
        for start in range(0, n, chunk):
            x = f[start:start + chunk]
            nonzero = x != 0
            index = ((x - low_f) * scale_f).floor_().clamp_(0, bins - 1).long() + offset
            counts.scatter_add_(0, index[nonzero], torch.ones(int(nonzero.sum()), dtype=torch.float64,
                                                                device=device))
        counts = counts.reshape(d, bins)
        cumulative = counts.cumsum(dim=1) / counts.sum(dim=1, keepdim=True).clamp_min(1)
        cumulative[:, -1] = 1.0
        edges = low[:, None] + width[:, None] * torch.linspace(0, 1, bins + 1, dtype=torch.float64,
                                                               device=device)[None, :]
        edges[:, -1] = high

        # the single shifted truncated Gaussian
        m = float(count.sum())
        sparsity = 1.0 - m / (n * d)
        mean = float(total) / m if m > 0 else 0.0
        var = (float(total_sq) - m * mean * mean) / (m - 1) if m > 1 else 0.0
        std = math.sqrt(max(var, 0.0))
        if std == 0.0:  # fewer than two distinct non-zero values: use their magnitude as the scale
            std = abs(mean) if mean != 0 else 1.0
        clamped = min(max(sparsity, 1e-6), 1 - 1e-6)
        quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(clamped, dtype=torch.float64)).item()
        loc = -std * quantile

        return cls(shape=tuple(features.shape[1:]), zero_fraction=1 - count.to(f.dtype) / n,
                   edges=edges.to(f.dtype), cumulative=cumulative, has_values=has_values,
                   overall_sparsity=sparsity, gaussian_mean=mean, gaussian_std=std, gaussian_loc=loc)

    @property
    def dimension(self) -> int:
        return int(self.zero_fraction.numel())

    @property
    def bins(self) -> int:
        return int(self.cumulative.shape[1])

    @property
    def sparsity(self) -> torch.Tensor:
        """Per-dimension fraction of zeros, in the features' shape."""
        return self.zero_fraction.reshape(self.shape)

    def sample(self, n: int, alpha: float = 2.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """§5.5, Figure 11: (n, *shape). Each dimension independently is 0 with its own zero
        fraction, else drawn from its histogram of non-zero values (bin by its frequency, uniform
        within the bin); the whole sample is multiplied by ``alpha``."""
        n, alpha = _check_count(n), _check_alpha(alpha)
        d, device = self.dimension, self.zero_fraction.device
        zero = _random((n, d), generator, device) < self.zero_fraction[None, :].float()
        pick = _random((n, d), generator, device, dtype=torch.float64)
        within = _random((n, d), generator, device).to(self.edges.dtype)
        # batched search: row i of `cumulative` against the n picks of dimension i; right=True
        # gives the bin with c[i-1] <= p < c[i], so empty bins are never chosen
        bin_index = torch.searchsorted(self.cumulative, pick.t().contiguous(), right=True)
        bin_index = bin_index.clamp_(max=self.bins - 1).t()
        dims = torch.arange(d, device=device)[None, :]
        left, right = self.edges[dims, bin_index], self.edges[dims, bin_index + 1]
        values = left + (right - left) * within
        values = torch.where(zero | ~self.has_values[None, :], torch.zeros_like(values), values)
        return (alpha * values).reshape(n, *self.shape)

    def sample_truncated_gaussian(self, n: int, alpha: float = 2.0,
                                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """§5.5, Figure 21: the paper's "single shifted truncated Gaussian for all dimensions":
        every entry is drawn from N(gaussian_loc, gaussian_std²) (see the class docstring), negative
        draws are set to 0, and the sample is multiplied by ``alpha``. If the training features
        were all zero the samples are all zero."""
        n, alpha = _check_count(n), _check_alpha(alpha)
        d, device = self.dimension, self.zero_fraction.device
        if not bool(self.has_values.any()):
            return torch.zeros(n, *self.shape, dtype=self.edges.dtype, device=device)
        draws = _random((n, d), generator, device, normal=True).to(self.edges.dtype)
        draws = draws * self.gaussian_std + self.gaussian_loc
        return (alpha * draws.clamp_min(0)).reshape(n, *self.shape)


# --------------------------------------------------------------------------- §5.3 dark knowledge


def top_k_mask(logits: torch.Tensor, k: int = 5, keep: bool = True) -> torch.Tensor:
    """§5.3, Figures 8, 16: per sample keep only the ``k`` largest entries and zero the rest
    (``keep=True``), or zero the ``k`` largest and keep the rest (``keep=False``). Exactly k
    positions are selected even with ties (``torch.topk``'s choice)."""
    f = _flat(logits)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= f.shape[1]:
        raise ValueError(f"k must be an integer between 1 and the dimension {f.shape[1]}, not {k!r}")
    top = f.topk(int(k), dim=1).indices
    mask = torch.zeros_like(f, dtype=torch.bool).scatter_(1, top, True)
    return torch.where(mask if keep else ~mask, f, torch.zeros_like(f)).reshape(logits.shape)


def dark_knowledge(logits: torch.Tensor, variant: str, k: int = 5) -> torch.Tensor:
    """§5.3, Figures 8, 16: ``all`` (a copy), ``top5`` (only the k largest activations),
    ``all_but_top5`` (the k largest set to 0); the names say 5, ``k`` sets the number."""
    if variant == "all":
        _flat(logits)
        return logits.to(_float_dtype(logits), copy=True)
    if variant == "top5":
        return top_k_mask(logits, k, keep=True)
    if variant == "all_but_top5":
        return top_k_mask(logits, k, keep=False)
    raise ValueError(f"unknown dark-knowledge variant {variant!r}; known: {', '.join(DARK_KNOWLEDGE)}")


# --------------------------------------------------------------------------- images


def _check_images(images: torch.Tensor, channels: Optional[int] = None) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or (channels is not None and images.shape[1] != channels):
        want = f"(N, {channels}, H, W)" if channels else "(N, C, H, W)"
        raise ValueError(f"expected images {want}, got shape {tuple(images.shape)}")


def hue_shift(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """§5.3: rotate the hue of RGB images (N, 3, H, W) in [0, 1] by ``degrees`` in HSV space
    (vectorised; hue wraps around modulo 360°). Saturation and value are unchanged and gray pixels
    stay exactly as they are; multiples of 360° return an exact copy."""
    _check_images(images, 3)
    if not isinstance(degrees, numbers.Real) or not math.isfinite(degrees):
        raise ValueError(f"degrees must be a finite number, not {degrees!r}")
    if float(degrees) % 360.0 == 0.0:
        return images.to(_float_dtype(images), copy=True)
    x = images.to(_float_dtype(images))
    r, g, b = x.unbind(1)
    value = x.max(dim=1).values
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # hue in sextants [0, 6); `%` is torch.remainder, non-negative for a positive divisor
    hue = torch.where(value == r, ((g - b) / safe) % 6,
                      torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue + float(degrees) / 60.0) % 6

    def channel(m: float) -> torch.Tensor:  # HSV → RGB with the same value and chroma
        k = (m + hue) % 6
        return value - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    out = torch.stack([channel(5), channel(3), channel(1)], dim=1)
    return torch.where(chroma[:, None] > 0, out, x)


def scale_brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """§4 (HOG's invariance to brightness): multiply images (N, C, H, W) by ``factor`` > 0 with NO
    clipping. Our HOG takes float images and its block normalisation makes it invariant to the
    scale up to its small ε; clipping at 1 would saturate the image and break that invariance."""
    _check_images(images)
    if not isinstance(factor, numbers.Real) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"brightness factor must be a positive finite number, not {factor!r}")
    return images.to(_float_dtype(images)) * float(factor)


def single_unit_vectors(dimension: int, units: Sequence[int],
                        value: Union[float, Sequence[float]] = 1.0) -> torch.Tensor:
    """Supplementary Figure 17: (len(units), dimension) float32 zeros with ``value`` at each
    unit's index; ``value`` is one number for all units or one per unit."""
    if isinstance(dimension, bool) or not isinstance(dimension, numbers.Integral) or dimension < 1:
        raise ValueError(f"dimension must be a positive integer, not {dimension!r}")
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < dimension]
    if bad:
        raise ValueError(f"units {bad} are out of range for dimension {dimension}")
    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        values = [float(value)] * len(units)
    else:
        values = [float(v) for v in value]
    if len(values) != len(units):
        raise ValueError(f"{len(values)} values for {len(units)} units")
    out = torch.zeros(len(units), int(dimension))
    if units:
        out[torch.arange(len(units)), torch.tensor(units, dtype=torch.long)] = torch.tensor(values)
    return out

"""Operations on feature vectors and images behind the paper's analyses (§4, §5.3-5.5).

Pure tensor functions, no I/O. Vector operations act per sample: dim 0 is the batch and all other
dims are flattened (an AlexNet conv map is one vector), the result has the input's shape. Inputs
are never modified; randomness comes only from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

PERTURBATIONS = ("binarise", "dropout", "drop_small_binarise", "drop_random_binarise")
DARK_KNOWLEDGE = ("all", "top5", "all_but_top5")


def _flat(features: torch.Tensor) -> torch.Tensor:
    if features.dim() < 2:
        raise ValueError(f"expected a batch of features (N, ...), got shape {tuple(features.shape)}")
    return features.reshape(len(features), -1).float()


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], not {fraction}")


# --------------------------------------------------------------------------- §5.4 perturbations


def binarise(features: torch.Tensor) -> torch.Tensor:
    """Keep each entry's sign, give every non-zero entry of a sample the same magnitude, chosen so
    that the sample's Euclidean norm is unchanged (§5.4: "binarized" features). Zeros stay zero."""
    f = _flat(features)
    nonzero = (f != 0).sum(dim=1, keepdim=True)
    magnitude = f.norm(dim=1, keepdim=True) / nonzero.clamp_min(1).sqrt()
    return (torch.sign(f) * magnitude).reshape(features.shape)


def _random_keep_mask(f: torch.Tensor, fraction: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """False at exactly round(fraction·D) entries per sample, chosen uniformly without replacement."""
    _check_fraction(fraction)
    n, d = f.shape
    drop = int(round(fraction * d))
    scores = torch.rand(n, d, generator=generator)
    dropped = scores.argsort(dim=1)[:, :drop]
    keep = torch.ones(n, d, dtype=torch.bool)
    keep.scatter_(1, dropped, False)
    return keep


def dropout(features: torch.Tensor, fraction: float = 0.5, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero a random ``fraction`` of each sample's entries, then rescale the sample to its
    original Euclidean norm (§5.4, "Drop50")."""
    f = _flat(features)
    g = f * _random_keep_mask(f, fraction, generator)
    norm, kept = f.norm(dim=1, keepdim=True), g.norm(dim=1, keepdim=True)
    g = torch.where(kept > 0, g * norm / kept.clamp_min(1e-30), g)
    return g.reshape(features.shape)


def drop_small_binarise(features: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Zero the ``fraction`` of each sample's non-zero entries with the smallest magnitude
    (round(fraction·nnz)), then :func:`binarise` (§5.4, Figure 7)."""
    _check_fraction(fraction)
    f = _flat(features)
    magnitude = f.abs()
    nonzero = magnitude > 0
    drop = torch.round(nonzero.sum(dim=1).float() * fraction).long()
    # rank the non-zero entries by magnitude (zeros last), drop the first `drop` of each row
    key = torch.where(nonzero, magnitude, torch.full_like(magnitude, math.inf))
    order = key.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(f.shape[1]).expand_as(order).contiguous())
    g = torch.where(rank < drop[:, None], torch.zeros_like(f), f)
    return binarise(g.reshape(features.shape))


def drop_random_binarise(features: torch.Tensor, fraction: float = 0.5,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero a random ``fraction`` of the entries, then :func:`binarise` (§5.4, Figure 7)."""
    f = _flat(features)
    return binarise((f * _random_keep_mask(f, fraction, generator)).reshape(features.shape))


def perturb(features: torch.Tensor, kind: str, generator: Optional[torch.Generator] = None,
            fraction: float = 0.5) -> torch.Tensor:
    """Dispatch to one of :data:`PERTURBATIONS` (or ``"none"``: an unchanged copy)."""
    if kind == "none":
        return features.clone()
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
    """(steps, *shape): (1 − t)·a + t·b for t = 0 … 1 (§5.5, Figure 10); the ends are a and b exactly."""
    if a.shape != b.shape:
        raise ValueError(f"interpolation endpoints differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, not {steps}")
    t = torch.linspace(0, 1, steps).reshape(-1, *([1] * a.dim()))
    out = (1 - t) * a.float()[None] + t * b.float()[None]
    out[0], out[-1] = a, b
    return out


# --------------------------------------------------------------------------- §5.5 random vectors


@dataclass
class FeatureSampler:
    """Independent per-dimension model of a feature distribution (§5.5, Figure 11).

    Each dimension keeps its fraction of exact zeros (the ReLU sparsity) and a histogram of its
    non-zero values. Sampling draws each dimension independently, so correlations are lost: the
    paper scales samples by α = 2 to compensate for the resulting weak, averaged images.
    """

    shape: Tuple[int, ...]
    zero_fraction: torch.Tensor  # (D,)
    edges: torch.Tensor  # (D, bins + 1)
    cumulative: torch.Tensor  # (D, bins) cumulative bin probabilities of the non-zero values
    has_values: torch.Tensor  # (D,) bool
    gaussian: Tuple[float, float, float]  # mean, std, shift of the single truncated Gaussian

    @classmethod
    def fit(cls, features: torch.Tensor, bins: int = 100) -> "FeatureSampler":
        if bins < 1:
            raise ValueError(f"bins must be positive, not {bins}")
        f = _flat(features)
        if len(f) < 1:
            raise ValueError("FeatureSampler needs at least one feature vector")
        n, d = f.shape
        nonzero = f != 0
        zero_fraction = 1 - nonzero.float().mean(dim=0)
        big = torch.finfo(torch.float32).max
        low = torch.where(nonzero, f, torch.full_like(f, big)).min(dim=0).values
        high = torch.where(nonzero, f, torch.full_like(f, -big)).max(dim=0).values
        has_values = nonzero.any(dim=0)
        low = torch.where(has_values, low, torch.zeros_like(low))
        high = torch.where(has_values, high, torch.zeros_like(high))
        width = (high - low).clamp_min(1e-12)
        # bin index of every non-zero entry, then per-dimension counts by one scatter_add
        index = ((f - low) / width * bins).floor().clamp(0, bins - 1).long()
        counts = torch.zeros(d, bins)
        flat_index = (torch.arange(d)[None, :] * bins + index)[nonzero]
        counts.view(-1).scatter_add_(0, flat_index, torch.ones(len(flat_index)))
        cumulative = counts.cumsum(dim=1) / counts.sum(dim=1, keepdim=True).clamp_min(1)
        edges = low[:, None] + width[:, None] * torch.linspace(0, 1, bins + 1)[None, :]
        values = f[nonzero].double()
        mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) > 1 else 1.0
        sparsity = float(zero_fraction.mean())
        # shift so that P(draw <= 0) equals the overall sparsity: mean + shift + std·Φ⁻¹(sparsity) = 0
        quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(min(max(sparsity, 1e-6), 1 - 1e-6))).item()
        shift = -mean - std * quantile
        return cls(tuple(features.shape[1:]), zero_fraction, edges, cumulative, has_values, (mean, std, shift))

    @property
    def sparsity(self) -> torch.Tensor:
        """Per-dimension fraction of zeros, in the features' shape."""
        return self.zero_fraction.reshape(self.shape)

    def sample(self, n: int, alpha: float = 2.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(n, *shape): each dimension zero with its own probability, else a value drawn from its
        histogram (uniform within the bin), all multiplied by ``alpha``."""
        d, bins = self.cumulative.shape
        u = torch.rand(n, d, generator=generator)
        zero = u < self.zero_fraction[None, :]
        pick = torch.rand(n, d, generator=generator)
        bin_index = torch.searchsorted(self.cumulative.repeat(n, 1), pick.reshape(-1, 1)).reshape(n, d)
        bin_index = bin_index.clamp(max=bins - 1)
        left = torch.gather(self.edges.expand(n, d, bins + 1), 2, bin_index[..., None]).squeeze(-1)
        right = torch.gather(self.edges.expand(n, d, bins + 1), 2, (bin_index + 1)[..., None]).squeeze(-1)
        within = torch.rand(n, d, generator=generator)
        values = left + (right - left) * within
        values = torch.where(zero | ~self.has_values[None, :], torch.zeros_like(values), values)
        return (alpha * values).reshape(n, *self.shape)

    def sample_truncated_gaussian(self, n: int, alpha: float = 2.0,
                                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The paper's alternative: one Gaussian for all dimensions (mean and std of all non-zero
        training values), shifted so that a draw is ≤ 0 with the overall sparsity; negative draws
        are set to zero; multiplied by ``alpha``."""
        mean, std, shift = self.gaussian
        d = self.zero_fraction.numel()
        draws = torch.randn(n, d, generator=generator) * std + mean + shift
        return (alpha * draws.clamp_min(0)).reshape(n, *self.shape)


# --------------------------------------------------------------------------- §5.3 dark knowledge


def top_k_mask(logits: torch.Tensor, k: int = 5, keep: bool = True) -> torch.Tensor:
    """Keep only each sample's ``k`` largest entries (``keep=True``) or zero them (``keep=False``)."""
    f = _flat(logits)
    if not 1 <= k <= f.shape[1]:
        raise ValueError(f"k must be between 1 and the dimension {f.shape[1]}, not {k}")
    top = f.topk(k, dim=1).indices
    mask = torch.zeros_like(f, dtype=torch.bool).scatter_(1, top, True)
    return torch.where(mask if keep else ~mask, f, torch.zeros_like(f)).reshape(logits.shape)


def dark_knowledge(logits: torch.Tensor, variant: str, k: int = 5) -> torch.Tensor:
    """``all`` (a copy), ``top5`` (only the k largest), ``all_but_top5`` (§5.3, Figure 8)."""
    if variant == "all":
        return logits.clone()
    if variant == "top5":
        return top_k_mask(logits, k, keep=True)
    if variant == "all_but_top5":
        return top_k_mask(logits, k, keep=False)
    raise ValueError(f"unknown dark-knowledge variant {variant!r}; known: {', '.join(DARK_KNOWLEDGE)}")


# --------------------------------------------------------------------------- images


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got shape {tuple(images.shape)}")


def hue_shift(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate the hue of RGB images in [0, 1] by ``degrees`` in HSV space (§5.3); saturation and
    value are unchanged, gray pixels stay gray."""
    _check_images(images)
    x = images.float()
    r, g, b = x.unbind(1)
    value, _ = x.max(dim=1)
    minimum, _ = x.min(dim=1)
    chroma = value - minimum
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6,
                      torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue + degrees / 60.0) % 6
    # HSV → RGB with the same value and chroma
    def channel(n: float) -> torch.Tensor:
        k = (n + hue) % 6
        return value - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    out = torch.stack([channel(5), channel(3), channel(1)], dim=1)
    return torch.where(chroma[:, None] > 0, out, x).to(images.dtype)


def scale_brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply by ``factor`` without clipping (§4): our HOG takes floats and its block
    normalisation makes it invariant up to its small ε; clipping at 1 would destroy that."""
    _check_images(images)
    if factor <= 0:
        raise ValueError(f"brightness factor must be positive, not {factor}")
    return images * factor


def single_unit_vectors(dimension: int, units: Sequence[int], value: float | Sequence[float] = 1.0) -> torch.Tensor:
    """(len(units), dimension): zeros with ``value`` at each unit (supplementary Figure 17)."""
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < dimension]
    if bad:
        raise ValueError(f"units {bad} are out of range for dimension {dimension}")
    values = [float(value)] * len(units) if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != len(units):
        raise ValueError(f"{len(values)} values for {len(units)} units")
    out = torch.zeros(len(units), dimension)
    out[torch.arange(len(units)), torch.tensor(units, dtype=torch.long)] = torch.tensor(values)
    return out

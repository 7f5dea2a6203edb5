"""Optimisation-based inversion after Mahendran & Vedaldi (CVPR 2015), the paper's comparison (§2, Table 2).

For a target code Φ0 find an image by gradient descent from noise on

    E(x) = C · ‖Φ(img(x)) − Φ0‖² / ‖Φ0‖²  +  Rα(x) / (H·W·B^α)  +  λTV · R_TV^β(x) / (H·W·V^β)

* ``x`` is the mean-subtracted image in 0-255 units (M&V's parametrisation); ``img(x) = (x + μ)/255``
  with μ the ImageNet mean colour is what Φ sees (it takes RGB in [0, 1]). B = 128 bounds the
  pixel range of ``x`` and V = B/6.5 is M&V's typical gradient magnitude, so both priors are about
  one for a natural image; α = 6, β = 2 are their values.
* Rα(x) = Σ |x|^α (the α-norm prior keeps pixels in range); R_TV^β(x) = Σ_ij ((x_{i,j+1} − x_ij)² +
  (x_{i+1,j} − x_ij)²)^{β/2} (the total-variation prior, β = 2 as in M&V's CNN inversions).
* The data term's weight C grows towards the lower layers, as in M&V (a strong data term where the
  code is rich, a strong prior where it is poor). Our values in :data:`DEFAULT_LAMBDAS` are our
  choice in that spirit, not M&V's published numbers, which were tuned for CaffeNet and their code.
* Momentum gradient descent (M&V's μ = 0.9; 0.5 for HOG, see :data:`DEFAULT_LAMBDAS`) with a learning rate lowered ten-fold for the last third of
  the iterations, as M&V. Each image's gradient is divided by its RMS before the step (so the step
  is ``lr`` pixel units whatever the layer's scale), which makes one learning rate work for HOG and
  every AlexNet layer. This normalisation is ours.
* Batched: many images optimise at once, each with its own objective and its own seeded noise
  start, so the result does not depend on the batch size.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

#: ImageNet mean colour in 0-255 units (the mean M&V subtract).
MEAN_RGB = (123.675, 116.28, 103.53)
PIXEL_BOUND = 128.0  # B
TV_SCALE = PIXEL_BOUND / 6.5  # V

#: (C, λTV, lr, momentum) per representation: the data term's weight, the TV prior's weight, the
#: step in pixel units and the momentum (our choice, see above). HOG uses momentum 0.5: with
#: normalised gradients 0.9 oscillated on HOG's non-smooth normalisation (embedded default, 8
#: images, 200 iterations: feature error 0.51 with 0.9 vs 0.42 with 0.5), while on AlexNet layers
#: M&V's 0.9 is as good or better (conv3 0.091 vs 0.096, fc6 0.27 vs 0.29).
DEFAULT_LAMBDAS: Dict[str, tuple] = {
    "hog": (100.0, 1.0, 2.0, 0.5),
    "conv1": (300.0, 1.0, 4.0, 0.9),
    "conv2": (300.0, 1.0, 4.0, 0.9),
    "conv3": (100.0, 1.0, 4.0, 0.9),
    "conv4": (100.0, 1.0, 4.0, 0.9),
    "conv5": (20.0, 1.0, 4.0, 0.9),
    "fc6": (5.0, 1.0, 4.0, 0.9),
    "fc7": (5.0, 1.0, 4.0, 0.9),
    "fc8": (2.0, 1.0, 4.0, 0.9),
}
FALLBACK = (10.0, 1.0, 4.0, 0.9)


@dataclasses.dataclass
class MVConfig:
    """Settings of the optimisation (``baselines.mahendran_vedaldi`` in the config); ``None``
    takes the representation's entry of :data:`DEFAULT_LAMBDAS`."""

    iterations: int = 200
    lr: Optional[float] = None  # pixel units (0-255 scale) per step, after gradient normalisation
    momentum: Optional[float] = None
    alpha: float = 6.0
    beta: float = 2.0
    lambda_alpha: Optional[float] = None  # None: 1 (the normalised prior)
    lambda_tv: Optional[float] = None
    data_weight: Optional[float] = None
    seed: int = 0
    batch_size: int = 16
    decay_at: float = 2 / 3  # fraction of the iterations after which lr is divided by 10
    log_every: int = 50


@dataclasses.dataclass
class InversionResult:
    images: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    history: List[Dict[str, float]]
    seconds: float
    seconds_per_image: float


def alpha_norm(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per image Σ |x|^α."""
    return x.abs().pow(alpha).flatten(1).sum(dim=1)


def tv_beta(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Per image Σ ((x_{i,j+1} − x_ij)² + (x_{i+1,j} − x_ij)²)^{β/2} over pixels with both neighbours."""
    dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    squared = dx * dx + dy * dy
    if beta == 2:
        return squared.flatten(1).sum(dim=1)
    return (squared + 1e-8).pow(beta / 2).flatten(1).sum(dim=1)


def _mean(device, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(MEAN_RGB, device=device, dtype=dtype).view(1, 3, 1, 1)


def to_image(x: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted 0-255 parametrisation → RGB in [0, 1] (unclipped)."""
    return (x + _mean(x.device, x.dtype)) / 255.0


def objective(representation: Callable, x: torch.Tensor, targets: torch.Tensor, data_weight: float,
              lambda_alpha: float, lambda_tv: float, alpha: float, beta: float) -> Dict[str, torch.Tensor]:
    """Per-image terms of M&V's energy and their sum (``total``)."""
    h, w = x.shape[-2:]
    features = representation(to_image(x)).flatten(1)
    t = targets.flatten(1)
    data = (features - t).pow(2).sum(dim=1) / t.pow(2).sum(dim=1).clamp_min(1e-12)
    prior_alpha = alpha_norm(x, alpha) / (h * w * PIXEL_BOUND ** alpha)
    prior_tv = tv_beta(x, beta) / (h * w * TV_SCALE ** beta)
    total = data_weight * data + lambda_alpha * prior_alpha + lambda_tv * prior_tv
    return {"total": total, "data": data, "alpha": prior_alpha, "tv": prior_tv}


def _settings(layer: str, config: MVConfig) -> Dict[str, float]:
    c, tv, lr, momentum = DEFAULT_LAMBDAS.get(layer.split("-")[0], FALLBACK)

    def pick(value, default):
        return float(default if value is None else value)

    return {"data_weight": pick(config.data_weight, c), "lambda_alpha": pick(config.lambda_alpha, 1.0),
            "lambda_tv": pick(config.lambda_tv, tv), "lr": pick(config.lr, lr), "momentum": pick(config.momentum, momentum)}


def _start(index: int, size: int, seed: int) -> torch.Tensor:
    """The seeded noise start of image ``index`` (independent of the batch it lands in)."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    return torch.randn(3, size, size, generator=generator) * (PIXEL_BOUND / 20)


def _invert_batch(representation, targets: torch.Tensor, starts: torch.Tensor, settings: Dict[str, float],
                  config: MVConfig, history: List[Dict[str, float]], offset: int) -> torch.Tensor:
    x = starts.clone().requires_grad_(True)
    velocity = torch.zeros_like(x)
    decay_step = int(round(config.iterations * config.decay_at))
    for step in range(config.iterations):
        terms = objective(representation, x, targets, settings["data_weight"], settings["lambda_alpha"],
                          settings["lambda_tv"], config.alpha, config.beta)
        (grad,) = torch.autograd.grad(terms["total"].sum(), x)
        rms = grad.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
        lr = settings["lr"] if step < decay_step else settings["lr"] / 10
        with torch.no_grad():
            velocity.mul_(settings["momentum"]).add_(grad / rms, alpha=-lr)
            x.add_(velocity)
        if offset == 0 and (step % max(1, config.log_every) == 0 or step == config.iterations - 1):
            history.append({"iteration": step, **{k: float(v.detach().mean()) for k, v in terms.items()}})
    return x.detach()


def invert(representation, targets: torch.Tensor, image_size: int, layer: str, config: Optional[MVConfig] = None,
           device: str | torch.device = "cpu", progress: Optional[Callable[[int, int], None]] = None) -> InversionResult:
    """Invert the codes ``targets`` (N, *feature_shape) of ``representation`` by optimisation.

    ``layer`` picks the default weights of :data:`DEFAULT_LAMBDAS`. Returns images in [0, 1]
    (clipped at the end), the mean energy terms every ``log_every`` iterations of the first batch,
    and the wall time.
    """
    config = config or MVConfig()
    if config.iterations < 1 or config.batch_size < 1:
        raise ValueError("iterations and batch_size must be positive")
    device = torch.device(device)
    settings = _settings(layer, config)
    targets = targets.to(device, torch.float32)
    started = time.perf_counter()
    history: List[Dict[str, float]] = []
    out = []
    for offset in range(0, len(targets), config.batch_size):
        batch = targets[offset:offset + config.batch_size]
        starts = torch.stack([_start(offset + i, image_size, config.seed) for i in range(len(batch))]).to(device)
        x = _invert_batch(representation, batch, starts, settings, config, history, offset)
        out.append(to_image(x).clamp(0, 1).cpu())
        if progress is not None:
            progress(offset + len(batch), len(targets))
    seconds = time.perf_counter() - started
    images = torch.cat(out) if out else torch.empty(0, 3, image_size, image_size)
    return InversionResult(images, history, seconds, seconds / max(1, len(targets)))


@torch.no_grad()
def feature_space_error(representation, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Per image ‖Φ(x) − Φ0‖ / ‖Φ0‖ for images in [0, 1]: what the optimisation minimises."""
    errors = []
    for start in range(0, len(images), batch_size):
        f = representation(images[start:start + batch_size]).flatten(1).float()
        t = targets[start:start + batch_size].to(f.device).flatten(1).float()
        errors.append(((f - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-12)).cpu().numpy())
    return np.concatenate(errors) if errors else np.empty(0)

"""The baseline of paper Table 2: Mahendran & Vedaldi's optimisation-based pre-images (CVPR 2015).

:func:`mahendran_vedaldi` is the step of ``rules/baselines.smk``: it decodes the features of a few
test images with our trained decoder (:class:`preimage.decoding.TrainedDecoder`), finds pre-images
of the same features by optimisation (:func:`optimise_preimage`) and reports both methods' image
and feature errors and their time per image. The rest of this module is that optimisation.

Dosovitskiy & Brox compare their decoders with the method of Mahendran & Vedaldi (M&V),
"Understanding Deep Image Representations by Inverting Them", CVPR 2015: for a target code Φ0
find an image by gradient descent, starting from noise, on

    E(x) = ‖Φ(img(x)) − Φ0‖² / ‖Φ0‖²  +  λα · Rα(x)  +  λTV · R_TV^β(x)

with M&V's normalised priors (their "balancing the different terms", in the form written out in
their IJCV 2016 follow-up, "Visualizing deep convolutional neural networks using natural
pre-images")

    Rα(x)     = Σ |x|^α / (H·W·B^α)                                         α = 6
    R_TV^β(x) = Σ_ij ((x_{i,j+1} − x_ij)² + (x_{i+1,j} − x_ij)²)^{β/2} / (H·W·V^β)   β = 2

Image parametrisation and the σ scaling
---------------------------------------
M&V's final objective is ``‖Φ(σx) − Φ0‖² / ‖Φ0‖² + λα Rα(x) + λV R_V^β(x)``: the variable ``x`` is
a normalised image and σ, "the average Euclidean norm of natural images in a training set", scales
it back into the range the representation was built for (the first layers of a CNN have biases
tuned to a natural working range). In their code (``core/invert_nn.m``) σ is ``x0_sigma`` = 27098,
the mean norm of their mean-subtracted 227×227×3 images in 0-255 units, one value for every layer
and for HOG/DSIFT; the noise start has norm σ, and the data and prior gradients are rescaled by
σ as the substitution ``x → σx`` implies. Here (our exact choice):

* the variable ``u`` of the descent relates to the image by ``img(u) = μ + σ·u`` (in the ``[0, 1]``
  scale of the representations' inputs, μ the ImageNet mean colour :data:`MEAN_RGB`), so the data
  term is ``‖Φ(μ + σu) − Φ0‖² / ‖Φ0‖²``: M&V's ``Φ(σx)`` with the mean subtraction of their
  input normalisation made explicit;
* σ is per pixel (so that it does not depend on the image size): M&V's ``x0_sigma`` divided by
  ``√(227·227·3)`` and by 255, :data:`MV_SIGMA` = 0.27 (the RMS of a mean-subtracted natural image
  in ``[0, 1]`` units); ``baselines.mahendran_vedaldi.sigma`` sets it per representation;
* the priors are evaluated on the image deviation ``σu`` with the bounds B and V below, so λα and
  λTV keep their meaning whatever σ (equivalently: priors on ``u`` with bounds ``B/σ``, ``V/σ``);
* the learning rate :attr:`MVConfig.lr` and the noise start :attr:`MVConfig.init_std` are in units
  of ``u``, as M&V's: a larger σ means larger steps and a larger noise start in the image. The
  defaults (:data:`DEFAULT_LR`, ``init_std``) are the steps we calibrated in image units (0.01 and
  0.02, below) divided by :data:`MV_SIGMA`, so with the default σ the image moves as calibrated.
* No clamping during the optimisation (M&V do not clamp either; the α-norm prior keeps pixels in
  range); the returned images are clamped to ``[0, 1]`` once at the end.
* Grey representations (:data:`GREY_REPRESENTATIONS`: ``hog``, ``hogb``, ``dsift``) are inverted,
  like M&V's HOG and DSIFT experiments, as one grey channel around μ = 0.5 (M&V:
  ``255·gray − 128``) that is repeated into R, G and B; they see only luma, so colour would be
  left to the priors alone.
* B = :data:`PIXEL_BOUND` = 0.5, half the range of a pixel (a mean-subtracted pixel lies in about
  ``[−0.5, 0.5]``; 128 in 0-255 units). V = :data:`TV_SCALE` = B / 6.5, M&V's typical
  gradient magnitude. H, W are the image size; sums run over all pixels and channels.
* The TV differences use M&V's boundary convention: the difference past the last row/column is 0
  (replicated border), so every pixel contributes one term.

Weights (details at :data:`DEFAULT_LAMBDAS`)
--------------------------------------------
λTV and λα are M&V's own choices, converted from their code into this normalisation: TV weight
growing tenfold from the shallow (HOG, conv1) to the middle (conv2-conv4) to the deep layers
(conv5-fc8), a small α-norm weight. M&V chose them for the network's input resolution (227 px).
Our CNN representations upsample smaller images to their crop (the embedded default inverts 64-px
images through 227-px AlexNet inputs), which multiplies image gradients by ``crop / S`` at the
network's input; so that the prior weighs the same per network-input pixel, λTV is multiplied by
``(S / crop)^β`` there (:func:`tv_resolution_factor`, ``MVConfig.scale_tv``; 1 when ``S >= crop``,
e.g. 256-px images centre-cropped to 227, and for HOG, which does not resize).

Optimisation (M&V's momentum gradient descent)
----------------------------------------------
Gradient descent with momentum 0.9 from small Gaussian noise (std :attr:`MVConfig.init_std` in units
of ``u``, 0.02 in the image at the default σ; seeded per image and restart), ``iterations`` steps
(200 by default; M&V ran 400 for the CNN and 800 for HOG).
The learning rate starts at ``lr`` and is divided by 10 at the fractions :attr:`MVConfig.decay_at`
of the run: by default after 1/4 and 3/4, M&V's CNN schedule (100 + 200 + 100 iterations at rates
1, 0.1, 0.01). As in M&V's code the momentum buffer is reset whenever the rate changes (the stale
velocity overshoots otherwise; measured on HOG: final objective 0.273 with the reset, 0.336
without).

Gradient normalisation (ours): each image's gradient is divided by its root mean square before the
momentum update, so ``lr`` is a step in units of ``u`` (``σ·lr`` in the ``[0, 1]`` image scale)
whatever the scale of the representation. M&V's absolute rates were tuned for their units (CaffeNet
in MatConvNet) and do not carry over; with the normalisation one schedule serves HOG and every AlexNet layer
(:data:`DEFAULT_LR`). It changes the path, not which image is optimal.

Several reconstructions per code (M&V's ``numRepeats``, their Figure 7): with
:attr:`MVConfig.restarts` = K every code is inverted K times from different noise (restart ``k`` of
image ``i`` starts from noise seeded by ``(seed, i, k)``; restart 0 from ``(seed, i)``, the single
run's start). The spread of the K pre-images is what the representation is invariant to;
:func:`mahendran_vedaldi` reports it as a diversity (:func:`preimage.metrics.sample_diversity`).

Partial codes (M&V's ``neigh`` and ``filterGroup``, their Figures 9 and 10): with a ``mask`` the data
term compares only the masked activations, ``‖(Φ(img(u)) − Φ0)⊙m‖² / ‖Φ0⊙m‖²``; the other
activations are free (:mod:`preimage.locality`).

Batching: batches of ``batch_size`` images run through one forward/backward; each image has its own
objective (the energies are summed, so gradients do not mix), its own ``‖Φ0‖²``, its own gradient
normalisation and a noise start seeded from ``(seed, image index)``. So the result does not depend
on the batch size beyond float rounding. ``history`` holds, every ``log_every`` iterations and at the
last, the mean over all images of the objective and its terms (evaluated before that step's update).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from preimage import atomic_files, hdf5, image_store, metrics
from preimage.decoding import TrainedDecoder
from preimage.plotting import analysis_title, image_grid, show_indices
from preimage.weights import IMAGENET_MEAN

__all__ = [
    "DEFAULT_LAMBDAS", "DEFAULT_LR", "GREY_REPRESENTATIONS", "MVConfig", "PreimageResult", "alpha_norm",
    "feature_space_error", "mahendran_vedaldi", "objective", "optimise_preimage", "tv_beta",
]

log = logging.getLogger("preimage.baselines")

#: ImageNet mean colour (RGB, ``[0, 1]`` scale): μ of the parametrisation ``img(x) = μ + x``.
MEAN_RGB = IMAGENET_MEAN
#: Mean of the grey parametrisation (M&V invert HOG as ``255·gray − 128``).
MEAN_GREY = 0.5
#: B: bound of a mean-subtracted pixel (half the ``[0, 1]`` range).
PIXEL_BOUND = 0.5
#: V = B / 6.5: M&V's typical gradient magnitude, which normalises the TV prior.
TV_SCALE = PIXEL_BOUND / 6.5
#: Representations that see only luma: optimised as one grey channel repeated into RGB.
GREY_REPRESENTATIONS = ("hog", "hogb", "dsift")
#: σ of M&V's ``Φ(σx)`` per pixel: their ``x0_sigma`` (27098, the mean norm of a mean-subtracted
#: 227×227×3 image in 0-255 units, ``experiments/x0_sigma.mat`` of their code) / √(227·227·3) / 255.
MV_SIGMA = 0.27
#: The image step (``[0, 1]`` scale, RMS-normalised gradient) and the std of the noise start that
#: we calibrated (below); the defaults of ``lr`` and ``init_std`` are these divided by σ.
PIXEL_STEP = 0.01
PIXEL_INIT_STD = 0.02

#: Prior weights ``{"lambda_alpha": λα, "lambda_tv": λTV}`` per representation (the data term has
#: weight 1).
#:
#: λTV follows M&V's released code (``deep-goggle``, ``experiments/experiment_cnn.m`` and
#: ``experiment_shallow.m``): TV weight 1 for CaffeNet conv1 to relu2 and for HOG (their main HOG
#: reconstruction), 10 for pool2 to
#: relu4, 100 for conv5 to fc8, applied as ``λ/2 · TV(x) / ‖x̄‖²`` with ``‖x̄‖`` the norm of a
#: typical image (their ``x0_sigma``). With ``‖x̄‖² ≈ 3·H·W·s²`` for a per-pixel standard deviation
#: s ≈ 0.23 (ImageNet's std, 58 in 0-255 units) that is ``λ/2 · V² / (3 s²) ≈ 0.019 λ`` in our
#: normalisation: 0.02, 0.2 and 2. Our layers end at conv1 → pool1 (M&V's group 1), conv2 → pool2,
#: conv3, conv4 (group 2), conv5 → pool5, fc6, fc7, fc8 (group 3). HOGb and DSIFT get M&V's
#: weight for them (``experiment_shallow.m``: λTV = 1, as HOG).
#:
#: λα: M&V's α-norm weight ``8e-10/2`` on ``Σ x⁶`` (0-255 units) over the same ``‖x̄‖²`` is
#: ``4e-10 · (128)⁶ / (3 · 58²) ≈ 0.17`` in our normalisation, the same for every layer (small
#: next to the data term: it only bites on pixels beyond B).
#:
#: Their ``x0_sigma.mat`` itself gives s = 0.27 (:data:`MV_SIGMA`), with which the same conversion
#: would give λTV 0.014, 0.14, 1.4 and λα 0.12; the values here (converted with ImageNet's std)
#: are within a factor 1.5 of those and are kept, as the calibration below was made with them.
DEFAULT_LAMBDAS: Dict[str, Dict[str, float]] = {
    "hog": {"lambda_alpha": 0.17, "lambda_tv": 0.02},
    "hogb": {"lambda_alpha": 0.17, "lambda_tv": 0.02},
    "dsift": {"lambda_alpha": 0.17, "lambda_tv": 0.02},
    "conv1": {"lambda_alpha": 0.17, "lambda_tv": 0.02},
    "conv2": {"lambda_alpha": 0.17, "lambda_tv": 0.2},
    "conv3": {"lambda_alpha": 0.17, "lambda_tv": 0.2},
    "conv4": {"lambda_alpha": 0.17, "lambda_tv": 0.2},
    "conv5": {"lambda_alpha": 0.17, "lambda_tv": 2.0},
    "fc6": {"lambda_alpha": 0.17, "lambda_tv": 2.0},
    "fc7": {"lambda_alpha": 0.17, "lambda_tv": 2.0},
    "fc8": {"lambda_alpha": 0.17, "lambda_tv": 2.0},
}
#: Weights for representations not in :data:`DEFAULT_LAMBDAS` (e.g. ``torchvision:…`` nodes).
FALLBACK_LAMBDAS = {"lambda_alpha": 0.17, "lambda_tv": 0.2}

#: Initial learning rate per representation, in units of ``u`` per step of the RMS-normalised gradient,
#: before momentum (which multiplies the stationary step by 10): :data:`PIXEL_STEP` / :data:`MV_SIGMA`.
#: The image step was chosen by us on the embedded 64-px images, 200 iterations (final mean objective;
#: 8 images for HOG, 2 for conv3, random weights): HOG 0.284 / 0.273 / 0.289 at image steps 0.003 /
#: 0.01 / 0.03; conv3 0.102 / 0.098 / 0.097. One step, 0.01, for all: HOG's best, within 1 % of the
#: best for conv3.
DEFAULT_LR: Dict[str, float] = {name: PIXEL_STEP / MV_SIGMA for name in DEFAULT_LAMBDAS}
FALLBACK_LR = PIXEL_STEP / MV_SIGMA


@dataclasses.dataclass
class MVConfig:
    """Settings of the M&V optimisation (``baselines.mahendran_vedaldi`` in the workflow config).

    ``lr``, ``lambda_alpha`` and ``lambda_tv`` left at ``None`` take the representation's entry of
    :data:`DEFAULT_LR` / :data:`DEFAULT_LAMBDAS`, ``sigma`` :data:`MV_SIGMA` (the workflow resolves
    a per-representation mapping of ``sigma`` before it gets here).
    """

    iterations: int = 200
    lr: Optional[float] = None  # initial step in units of u (image step σ·lr) of the RMS-normalised gradient
    sigma: Optional[float] = None  # img = μ + σ·u; None: MV_SIGMA
    restarts: int = 1  # reconstructions per code, from different noise
    momentum: float = 0.9
    alpha: float = 6.0
    beta: float = 2.0
    lambda_alpha: Optional[float] = None
    lambda_tv: Optional[float] = None
    seed: int = 0
    batch_size: int = 16
    decay_at: Union[float, Sequence[float]] = (0.25, 0.75)  # fractions of the run where lr is divided
    decay_factor: float = 0.1
    reset_momentum: bool = True  # zero the velocity when the rate changes (M&V)
    normalize_gradient: bool = True  # divide each image's gradient by its RMS
    init_std: float = PIXEL_INIT_STD / MV_SIGMA  # std of the Gaussian noise start, units of u
    grey: Optional[bool] = None  # None: grey exactly for GREY_REPRESENTATIONS
    scale_tv: bool = True  # λTV given at the network's input resolution (see tv_resolution_factor)
    log_every: int = 25  # history every this many iterations (and the last)


@dataclasses.dataclass
class PreimageResult:
    """Images ``(N, 3, S, S)`` in ``[0, 1]`` (clamped at the end; restart 0), ``samples``
    ``(N, K, 3, S, S)`` all K restarts (``samples[:, 0]`` is ``images``); ``history``: per logged
    iteration the mean over all images and restarts of the objective and its terms; wall time in
    seconds (``seconds_per_image`` per reconstruction); the effective settings (:func:`settings`)."""

    images: torch.Tensor
    history: List[Dict[str, float]]
    seconds: float
    seconds_per_image: float
    settings: Dict[str, float] = dataclasses.field(default_factory=dict)  # effective lr, σ, λα, λTV, grey
    samples: Optional[torch.Tensor] = None


# --------------------------------------------------------------------------- priors


def alpha_norm(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per image ``Σ |x|^α`` over channels and pixels: ``(N, ...)`` → ``(N,)``."""
    return x.abs().pow(alpha).flatten(1).sum(dim=1)


def tv_beta(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Per image ``Σ_ij ((x_{i,j+1} − x_ij)² + (x_{i+1,j} − x_ij)²)^{β/2}`` of ``(N, C, H, W)``, summed over
    channels; differences past the last column/row are 0 (M&V's replicated border). Exact zero
    for a constant image and a finite gradient there for any β > 0."""
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    squared = dx * dx + dy * dy
    if beta == 2:
        values = squared
    else:
        nonzero = squared > 0
        values = torch.where(nonzero, torch.where(nonzero, squared, torch.ones_like(squared)).pow(beta / 2),
                             torch.zeros_like(squared))
    return values.flatten(1).sum(dim=1)


# --------------------------------------------------------------------------- objective


def _mean(channels: int, device, dtype=torch.float32) -> torch.Tensor:
    values = (MEAN_GREY,) if channels == 1 else MEAN_RGB
    return torch.tensor(values, device=device, dtype=dtype).view(1, channels, 1, 1)


def to_image(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Parametrisation → RGB image in ``[0, 1]`` scale (not clamped): ``μ + σ·x``, grey repeated to RGB."""
    image = (x * sigma if sigma != 1 else x) + _mean(x.shape[1], x.device, x.dtype)
    return image.expand(-1, 3, -1, -1) if x.shape[1] == 1 else image


def from_image(images: torch.Tensor, grey: bool = False, sigma: float = 1.0) -> torch.Tensor:
    """RGB images in ``[0, 1]`` → the parametrisation ``(img − μ)/σ`` (grey: BT.601 luma, as HOG sees it)."""
    if grey:
        weights = torch.tensor((0.299, 0.587, 0.114), device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        images = (images * weights).sum(dim=1, keepdim=True)
    return (images - _mean(images.shape[1], images.device, images.dtype)) / sigma


def objective(representation: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
              lambda_alpha: float, lambda_tv: float, alpha: float = 6.0, beta: float = 2.0, sigma: float = 1.0,
              mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Per-image terms of M&V's energy at ``x`` (the parametrisation ``u``, ``(N, 1 or 3, H, W)``).

    Returns ``(N,)`` tensors: ``feature_loss`` ‖(Φ(μ + σx) − Φ0)⊙m‖²/‖Φ0⊙m‖² (``m`` = ``mask``,
    broadcastable to the features, or all ones), the normalised priors of the image deviation
    ``σx``, ``alpha_prior`` Rα and ``tv_prior`` R_TV^β (unweighted), and ``objective`` their
    weighted sum.

    Parameters
    ----------
    representation : callable
        Φ, from images ``(N, 3, H, W)`` in [0, 1] to features (differentiable).
    x : torch.Tensor
        The parametrisation u of the images sought, ``(N, 1 or 3, H, W)`` (grey: one channel).
    targets : torch.Tensor
        The codes Φ0 to match, ``(N, *feature_shape)``.
    lambda_alpha, lambda_tv : float
        Weights λα and λTV of the α-norm and total-variation priors in M&V's objective
        ‖Φ(σx) − Φ0‖²/‖Φ0‖² + λα Rα(x) + λTV R_TV^β(x) (their per-representation values:
        :data:`DEFAULT_LAMBDAS`).
    alpha : float, default 6.0
        Exponent of the α-norm prior (M&V: α = 6).
    beta : float, default 2.0
        Exponent of the TV prior (M&V: β = 2).
    sigma : float, default 1.0
        σ of the parametrisation: images are μ + σ·u (M&V's ``x0_sigma``, :data:`MV_SIGMA` in practice).
    mask : torch.Tensor, optional
        0/1 weights broadcastable to the features: the data term counts only the kept activations
        (M&V's locality experiment); None: all of them.
    """
    h, w = x.shape[-2:]
    features = representation(to_image(x, sigma))
    t = targets.to(features.device, features.dtype)
    difference = features - t
    if mask is not None:
        m = mask.to(features.device, features.dtype)
        difference, t = difference * m, t * m
    feature_loss = difference.flatten(1).pow(2).sum(dim=1) / t.flatten(1).pow(2).sum(dim=1).clamp_min(1e-12)
    deviation = x * sigma if sigma != 1 else x
    alpha_prior = alpha_norm(deviation, alpha) / (h * w * PIXEL_BOUND ** alpha)
    tv_prior = tv_beta(deviation, beta) / (h * w * TV_SCALE ** beta)
    total = feature_loss + lambda_alpha * alpha_prior + lambda_tv * tv_prior
    return {"objective": total, "feature_loss": feature_loss, "alpha_prior": alpha_prior, "tv_prior": tv_prior}


# --------------------------------------------------------------------------- settings


def tv_resolution_factor(representation, image_size: int, beta: float = 2.0) -> float:
    """``min(1, S / crop)^β`` for a representation that resizes its input up to ``crop`` pixels, else 1.

    λTV is meant at the network's input resolution (M&V's 227 px): an ``S``-px image that a CNN
    upsamples bilinearly to ``crop`` px has its gradients multiplied by ``crop / S`` there, so the
    same prior strength per network-input pixel needs ``λTV · (S / crop)^β`` on the ``S``-px image.
    """
    crop = getattr(representation, "crop", None)
    if not isinstance(crop, (int, float)) or crop <= 0 or image_size >= crop:
        return 1.0
    return float((image_size / crop) ** beta)


def settings(base_name: str, config: MVConfig, representation=None,
             image_size: Optional[int] = None) -> Dict[str, float]:
    """The effective ``lr``, ``sigma``, ``lambda_alpha``, ``lambda_tv`` (after :func:`tv_resolution_factor` when
    ``config.scale_tv`` and a representation and image size are given) and ``grey`` for the
    representation configured as ``base_name`` (``hog``, ``conv1`` … ``fc8``; a variant such as
    ``fc6-ae`` passes its base representation's name, ``RepresentationSpec.name``, and so shares
    its defaults; other names take :data:`FALLBACK_LAMBDAS` and :data:`FALLBACK_LR`)."""
    lambdas = DEFAULT_LAMBDAS.get(base_name, FALLBACK_LAMBDAS)
    factor = 1.0
    if config.scale_tv and representation is not None and image_size is not None:
        factor = tv_resolution_factor(representation, int(image_size), config.beta)
    lambda_tv = float(lambdas["lambda_tv"] if config.lambda_tv is None else config.lambda_tv)
    return {
        "lr": float(DEFAULT_LR.get(base_name, FALLBACK_LR) if config.lr is None else config.lr),
        "sigma": float(MV_SIGMA if config.sigma is None else config.sigma),
        "lambda_alpha": float(lambdas["lambda_alpha"] if config.lambda_alpha is None else config.lambda_alpha),
        "lambda_tv": lambda_tv * factor,
        "tv_resolution_factor": factor,
        "grey": bool(base_name in GREY_REPRESENTATIONS if config.grey is None else config.grey),
    }


def lr_schedule(config: MVConfig, lr: float) -> List[float]:
    """The learning rate of every iteration: ``lr`` divided by ``1/decay_factor`` at each decay point."""
    points = [config.decay_at] if isinstance(config.decay_at, (int, float)) else list(config.decay_at)
    steps = sorted(int(round(float(p) * config.iterations)) for p in points)
    return [lr * config.decay_factor ** sum(t >= s for s in steps) for t in range(config.iterations)]


def noise_start(index: int, channels: int, size: int, config: MVConfig, restart: int = 0) -> torch.Tensor:
    """The seeded noise start of image ``index``, restart ``restart`` (from ``(config.seed, index)``
    for restart 0, ``(config.seed, index, restart)`` otherwise; whatever its batch)."""
    key = [int(config.seed), int(index)] + ([int(restart)] if restart else [])
    state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] % (2**63)))
    return torch.randn(channels, size, size, generator=generator) * config.init_std


# --------------------------------------------------------------------------- optimisation


def _optimise_batch(representation, targets: torch.Tensor, start: torch.Tensor, chosen: Dict[str, float],
                    config: MVConfig, schedule: List[float], sums: Dict[int, Dict[str, float]],
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    x = start.clone().requires_grad_(True)
    velocity = torch.zeros_like(x)
    previous_lr = None
    last = config.iterations - 1
    for step, lr in enumerate(schedule):
        if config.reset_momentum and previous_lr is not None and lr != previous_lr:
            velocity.zero_()
        previous_lr = lr
        terms = objective(representation, x, targets, chosen["lambda_alpha"], chosen["lambda_tv"],
                          config.alpha, config.beta, chosen["sigma"], mask)
        (grad,) = torch.autograd.grad(terms["objective"].sum(), x)
        if config.normalize_gradient:
            rms = grad.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-20)
            grad = grad / rms.view(-1, *([1] * (grad.dim() - 1)))
        with torch.no_grad():
            velocity.mul_(config.momentum).add_(grad, alpha=-lr)
            x.add_(velocity)
        if step % max(1, config.log_every) == 0 or step == last:
            entry = sums.setdefault(step, {"lr": lr})
            for key, value in terms.items():
                entry[key] = entry.get(key, 0.0) + float(value.detach().sum())
            entry["feature_error"] = entry.get("feature_error", 0.0) + float(terms["feature_loss"].detach().sqrt().sum())
    return x.detach()


def optimise_preimage(representation, targets: torch.Tensor, image_size: int, base_name: str,
                      config: Optional[MVConfig] = None, device: Union[str, torch.device] = "cpu",
                      progress: Optional[Callable[[int, int], None]] = None,
                      mask: Optional[torch.Tensor] = None, seeds: Optional[Sequence[int]] = None) -> PreimageResult:
    """Pre-images of the codes ``targets`` (``(N, *feature_shape)``, Φ0) of ``representation`` by M&V's
    optimisation, ``config.restarts`` of them per code.

    ``image_size`` is the side S of the images sought; ``base_name`` (``hog``, ``conv1`` … ``fc8``:
    the configured name of the representation, ``fc6`` for ``fc6-ae``) picks the defaults of
    :data:`DEFAULT_LAMBDAS` and :data:`DEFAULT_LR` (:func:`settings`). ``mask`` (``(1 or N,
    *feature_shape)``, 0/1) restricts the data term to the masked activations. ``seeds`` (default
    ``0 … N−1``) is the index each code's noise start is seeded with (:func:`noise_start`): codes
    with the same seed index start from the same noise. ``progress(done, total)`` is called after
    every batch (counting reconstructions).

    Parameters
    ----------
    representation : callable
        Φ, differentiable, from images in [0, 1] to features; moved to ``device`` when it can be.
    targets : torch.Tensor
        The codes Φ0, ``(N, *feature_shape)``.
    image_size : int
        Side S in pixels of the images sought.
    base_name : str
        The configured name of the representation (``hog``, ``conv1`` … ``fc8``; ``fc6`` for
        ``fc6-ae``), which picks the defaults of :func:`settings`.
    config : MVConfig, optional
        Iterations, step sizes, priors, restarts (None: :class:`MVConfig`'s defaults).
    device : str or torch.device, default "cpu"
        Where the optimisation runs.
    progress : callable, optional
        ``progress(done, total)`` after every batch.
    mask : torch.Tensor, optional
        ``(1 or N, *feature_shape)`` 0/1 mask of the data term (M&V's locality experiment).
    seeds : sequence of int, optional
        The seed index of each code's noise start (default ``0 … N−1``).
    """
    config = config or MVConfig()
    if config.iterations < 1 or config.batch_size < 1 or config.restarts < 1:
        raise ValueError(f"iterations, batch_size and restarts must be positive (got {config.iterations}, "
                         f"{config.batch_size}, {config.restarts})")
    device = torch.device(device)
    if hasattr(representation, "to"):
        representation.to(device)
    chosen = settings(base_name, config, representation, image_size)
    schedule = lr_schedule(config, chosen["lr"])
    channels = 1 if chosen["grey"] else 3
    n, k = len(targets), int(config.restarts)
    if mask is not None and mask.shape[0] not in (1, n):
        raise ValueError(f"mask has {mask.shape[0]} rows for {n} codes")
    seeds = list(range(n)) if seeds is None else [int(v) for v in seeds]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} codes")
    jobs = [(i, r) for r in range(k) for i in range(n)]  # restart-major: restart 0 of every image first
    started = time.perf_counter()
    sums: Dict[int, Dict[str, float]] = {}
    out = []
    with torch.enable_grad():
        for offset in range(0, len(jobs), config.batch_size):
            part = jobs[offset:offset + config.batch_size]
            rows = torch.tensor([i for i, _ in part])
            batch = targets[rows].to(device, torch.float32)
            part_mask = None if mask is None else (mask if mask.shape[0] == 1 else mask[rows]).to(device)
            start = torch.stack([noise_start(seeds[i], channels, image_size, config, r) for i, r in part])
            x = _optimise_batch(representation, batch, start.to(device), chosen, config, schedule, sums, part_mask)
            out.append(to_image(x, chosen["sigma"]).clamp(0, 1).cpu())
            if progress is not None:
                progress(offset + len(part), len(jobs))
    seconds = time.perf_counter() - started
    history = [{"iteration": step, **{key: (v if key == "lr" else v / len(jobs)) for key, v in entry.items()}}
               for step, entry in sorted(sums.items())]
    flat = torch.cat(out) if out else torch.empty(0, 3, image_size, image_size)
    samples = flat.view(k, n, *flat.shape[1:]).transpose(0, 1)
    return PreimageResult(images=samples[:, 0].contiguous(), history=history, seconds=seconds,
                          seconds_per_image=seconds / max(1, len(jobs)), settings=dict(chosen),
                          samples=samples.contiguous())


@torch.no_grad()
def feature_space_error(representation, images: torch.Tensor, targets: torch.Tensor,
                        batch_size: int = 32, mask: Optional[torch.Tensor] = None) -> np.ndarray:
    """Per image ``‖(Φ(x) − Φ0)⊙m‖ / ‖Φ0⊙m‖`` for images ``(N, 3, S, S)`` in ``[0, 1]`` (any method's
    reconstructions); ``m`` = ``mask`` (``(1, *feature_shape)``) or all ones."""
    return np.sqrt(_feature_distances(representation, images, targets, batch_size, mask)[0])


@torch.no_grad()
def _feature_distances(representation, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 32,
                       mask: Optional[torch.Tensor] = None) -> tuple:
    """Per image (``‖(Φ(x) − Φ0)⊙m‖² / ‖Φ0⊙m‖²``, ``‖(Φ(x) − Φ0)⊙m‖²``) as float64 arrays."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    device = getattr(representation, "device", None)
    relative, squared = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].float()
        if isinstance(device, torch.device):
            chunk = chunk.to(device)
        f = representation(chunk).float()
        t = targets[start:start + batch_size].to(f.device, torch.float32)
        if mask is not None:
            m = mask.to(f.device, torch.float32)
            f, t = f * m, t * m
        d2 = (f - t).flatten(1).double().pow(2).sum(dim=1)
        relative.append((d2 / t.flatten(1).double().pow(2).sum(dim=1).clamp_min(1e-24)).cpu().numpy())
        squared.append(d2.cpu().numpy())
    if not relative:
        return np.empty(0), np.empty(0)
    return np.concatenate(relative), np.concatenate(squared)


def mv_normalised_error(squared_distances: np.ndarray, targets: torch.Tensor) -> np.ndarray:
    """M&V's normalised reconstruction error per image: ``‖Φ(x̂_i) − Φ0_i‖²`` over the mean squared
    distance between the codes ``Φ0_j``, ``Φ0_l`` of the evaluated images, averaged over all
    ``N×N`` pairs including ``j = l`` as in their evaluation code
    (``experiment_shallow_quantitative.m``: ``mean(pdist2(y0, y0).^2)``). This is the measure
    behind their "the error rarely exceeds 20 %" for CNN layers; needs two codes or more."""
    t = targets.flatten(1).double()
    if len(t) < 2:
        raise ValueError("M&V's normalised error needs the codes of two images or more")
    gram = t @ t.T
    norms = gram.diagonal()
    mean_sq = float((norms[:, None] + norms[None, :] - 2 * gram).clamp_min(0).mean())
    return np.asarray(squared_distances, dtype=np.float64) / max(mean_sq, 1e-24)


# --------------------------------------------------------------------------- the pipeline step


def figure_codes(decoder: TrainedDecoder, representation, test_images_path: str,
                 images: int) -> Tuple[float, np.ndarray, torch.Tensor, torch.Tensor]:
    """The codes both methods invert: the first ``images`` figure images
    (:func:`preimage.plotting.show_indices`) of the test store, seen as ``decoder`` sees them
    (its crop). Returns the error's normaliser (mean distance between all test images), their
    indices, the images (N, 3, S, S) in [0, 1] and Φ0 = Φ(x) on the CPU; ``representation`` is
    moved to the decoder's device."""
    representation.to(decoder.device)
    with decoder.images(test_images_path) as test_images:
        normaliser = metrics.mean_pairwise_distance(test_images.float_view())
        pick = show_indices(len(test_images), max(images, 1))[:images]
        truth = image_store.to_float(test_images.take(pick))
    with torch.no_grad():
        targets = representation(truth.to(decoder.device)).cpu()
    return normaliser, pick, truth, targets


def mahendran_vedaldi(representation_name: str, representation, base_name: str, decoder_path: str,
                      test_images_path: str, csv_path: str, h5_path: str, png_path: str, mv_config: MVConfig,
                      images: int = 8, n_show: int = 6, seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Our decoder against Mahendran & Vedaldi's optimisation on the same test images (Table 2).

    Both methods get Φ0 = Φ(x) of the first ``images`` figure images. Reported for each: the
    image-space normalised error (the paper's measure, where the decoder wins), the feature-space
    error ‖Φ(x̂) − Φ0‖/‖Φ0‖ (what the optimisation minimises, where it wins), M&V's own normalised
    feature error (``mv_error``, :func:`mv_normalised_error`, the measure of their "≤ 20 %") and
    the seconds per reconstruction, measured in the same run. With ``mv_config.restarts`` = K > 1
    the optimisation's rows average over its K reconstructions per code, ``diversity`` is their
    spread (:func:`preimage.metrics.sample_diversity`) and the HDF5 store keeps them all
    (``mahendran_vedaldi_samples``, drawn by :func:`preimage.figures.mahendran_vedaldi_samples`). ``representation_name`` names
    the rows (the slug, ``fc6-ae``); ``base_name`` is the configured name of its base representation (``fc6``), which picks the optimisation's defaults
    (:func:`settings`).

    Parameters
    ----------
    representation_name : str
        The slug that names the table's rows (``fc6``, ``fc6-ae``).
    representation : callable
        Φ, differentiable (for an autoencoder: its fine-tuned encoder).
    base_name : str
        The configured name of the base representation (``fc6`` for ``fc6-ae``): the
        optimisation's defaults (:func:`settings`).
    decoder_path : str
        Our trained decoder of the same representation (``results/{rep}/decoder.pt``).
    test_images_path : str
        The test image store the codes are computed from.
    csv_path, h5_path, png_path : str
        Outputs: the two methods' rows; every reconstruction (``mahendran_vedaldi_samples``); the
        figure of inputs, our reconstructions and M&V's.
    mv_config : MVConfig
        The optimisation's settings (``baselines.mahendran_vedaldi``).
    images : int, default 8
        Figure images inverted by both methods (the paper's config: 100).
    n_show : int, default 6
        Images shown in the figure.
    seed : int, default 0
        Seed of the bootstrap intervals.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    decoder = TrainedDecoder(decoder_path, device)
    normaliser, pick, truth, targets = figure_codes(decoder, representation, test_images_path, images)
    started = time.perf_counter()
    decoded = decoder(targets)
    decoder_seconds = time.perf_counter() - started
    done = {"n": 0}

    def progress(finished: int, total: int) -> None:
        if finished > done["n"]:
            done["n"] = finished
            log.info("%s: Mahendran & Vedaldi %d/%d reconstructions", representation_name, finished, total)

    result = optimise_preimage(representation, targets.to(decoder.device), decoder.image_size, base_name, mv_config,
                               device=decoder.device, progress=progress)
    samples = result.samples.cpu()  # (N, K, 3, S, S)
    n, k = samples.shape[:2]
    rows = []
    for method, recon, seconds in (("decoder", decoded.unsqueeze(1), decoder_seconds / len(truth)),
                                   ("mahendran_vedaldi", samples, result.seconds_per_image)):
        flat, repeated = recon.flatten(0, 1), targets.repeat_interleave(recon.shape[1], dim=0)
        errors = metrics.normalised_error(flat, truth.repeat_interleave(recon.shape[1], dim=0), normaliser)
        row = metrics.error_summary(errors.reshape(n, -1).mean(axis=1), seed, representation=representation_name,
                                    method=method)
        relative, squared = _feature_distances(representation, flat.to(decoder.device), repeated.to(decoder.device))
        row["feature_error"] = float(np.mean(np.sqrt(relative).reshape(n, -1).mean(axis=1)))
        row["mv_error"] = float(np.mean(mv_normalised_error(squared, repeated) if n > 1 else np.nan))
        row["restarts"] = int(recon.shape[1])
        row["diversity"] = (float(np.mean(metrics.sample_diversity(recon, normaliser))) if recon.shape[1] > 1
                            else float("nan"))
        row["sigma"] = result.settings["sigma"] if method == "mahendran_vedaldi" else float("nan")
        row["seconds_per_image"] = float(seconds)
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_files.write_csv(table, csv_path)
    optimised = samples[:, 0]
    with atomic_files.atomic_path(h5_path) as tmp, hdf5.create_h5(tmp) as handle:
        hdf5.create_dataset(handle, "indices", data=np.asarray(pick))
        hdf5.create_dataset(handle, "decoder", data=image_store.to_uint8(decoded))
        hdf5.create_dataset(handle, "mahendran_vedaldi", data=image_store.to_uint8(optimised))
        if k > 1:
            hdf5.create_dataset(handle, "mahendran_vedaldi_samples",
                                 data=image_store.to_uint8(samples.flatten(0, 1)).reshape(n, k, *samples.shape[2:]))
        hdf5.write_attrs(handle, hdf5.provenance(representation=representation_name, label=decoder.label,
                                                   settings=result.settings,
                                                   history=result.history[-1:] if result.history else []))
    show = slice(0, min(n_show, len(truth)))
    d, m = rows
    image_grid([
        ("input", image_store.to_uint8(truth[show])),
        (f"our decoder\n{d['error']:.3f} / {d['feature_error']:.3f}", image_store.to_uint8(decoded[show])),
        (f"Mahendran &\nVedaldi\n{m['error']:.3f} / {m['feature_error']:.3f}", image_store.to_uint8(optimised[show])),
    ], png_path, title=analysis_title(representation_name, decoder.label,
                                      "decoder vs optimisation (row label: image error / feature error)"))
    for row in rows:
        log.info("%s %-18s image error %.4f  feature error %.4f  M&V error %.4f  diversity %.4f  %.4f s/image",
                 representation_name, row["method"], row["error"], row["feature_error"], row["mv_error"],
                 row["diversity"], row["seconds_per_image"])
    return table

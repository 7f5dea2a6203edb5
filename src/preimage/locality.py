"""Where a layer stores its information: reconstructions from groups of its neurons, by both methods.

Mahendran & Vedaldi (CVPR 2015, "locality" experiments, their Figures 9 and 10) reconstruct an
image from a selected group of neurons of a convolutional layer: a small spatial window of the
feature map at its centre (their ``neigh`` option, 5×5 neurons in the figure) or one of the two
groups of channels of AlexNet (``filterGroup``), everything else left unconstrained. Their
findings: a window reconstructs (a blurry version of) its receptive field only, and the two
channel groups keep different things (one mostly colour, the other mostly edges).

:func:`locality` is the step of ``rules/locality.smk`` (settings: ``analyses.locality``): for a few test
images and one layer it reconstructs from

* ``all``: the whole code (the reference);
* ``window``: the centred ``window × window`` cells of the feature map, all channels (M&V's
  centring rule: the window starts at cell ``ceil((F − n + 1)/2) − 1``, 0-based);
* ``channels``: the first ``ceil(channels · C)`` channels, all positions (M&V's first filter
  group for ``channels: 0.5``),

by both methods:

* the decoder gets the masked code, the other activations set to zero (it was trained on whole
  codes, so this asks what the decoder makes of a partial one, as the paper's dark-knowledge
  probe does for fc8);
* M&V's optimisation matches Φ0 on the selected activations only, the rest of the code is free
  (their masked objective, :func:`preimage.baselines.optimise_preimage` with ``mask``).

Reported per variant and method: the image error (the paper's normalised error on the whole
image), the feature error on the selected activations ``‖(Φ(x̂) − Φ0)⊙m‖/‖Φ0⊙m‖`` and on the whole
code. The figure shows the inputs with the window's footprint (its cells mapped onto the image
region the representation sees; the receptive field is larger) above one row per variant and
method. What is M&V's: the experiment and its two kinds of groups; ours: the channel fraction as
a parameter (AlexNet's two GPU groups do not exist in other networks), the decoder rows, the
error columns.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from preimage import atomic_files, image_store, metrics
from preimage.baselines import MVConfig, feature_space_error, figure_codes, optimise_preimage
from preimage.decoding import TrainedDecoder
from preimage.plotting import analysis_title, image_grid

__all__ = ["VARIANTS", "channel_mask", "locality", "window_bounds", "window_mask"]

log = logging.getLogger("preimage.locality")

#: The codes reconstructed from, in table order.
VARIANTS = ("all", "window", "channels")
_FRAME = np.array([255, 40, 40], dtype=np.uint8)  # colour of the window's footprint in the figure


def window_bounds(side: int, size: int) -> Tuple[int, int]:
    """``[start, stop)`` of M&V's centred window of ``size`` cells on an axis of ``side`` cells
    (``invert_nn.m``: ``(0:n−1) + ceil((F − n + 1)/2)``, 1-based); ``size`` is capped at ``side``."""
    n = min(int(size), int(side))
    start = math.ceil((side - n + 1) / 2) - 1
    return start, start + n


def window_mask(feature_shape: Sequence[int], size: int) -> torch.Tensor:
    """``(1, C, h, w)`` float mask: 1 on the centred ``size × size`` window, all channels."""
    c, h, w = _spatial(feature_shape)
    mask = torch.zeros(1, c, h, w)
    (y0, y1), (x0, x1) = window_bounds(h, size), window_bounds(w, size)
    mask[..., y0:y1, x0:x1] = 1
    return mask


def channel_mask(feature_shape: Sequence[int], fraction: float) -> torch.Tensor:
    """``(1, *feature_shape)`` float mask: 1 on the first ``ceil(fraction · C)`` channels (the
    first axis of the code), every position."""
    if not 0 < fraction <= 1:
        raise ValueError(f"channel fraction must be in (0, 1], got {fraction}")
    shape = tuple(int(v) for v in feature_shape)
    mask = torch.zeros(1, *shape)
    mask[:, : max(1, math.ceil(fraction * shape[0]))] = 1
    return mask


def _spatial(feature_shape: Sequence[int]) -> Tuple[int, int, int]:
    shape = tuple(int(v) for v in feature_shape)
    if len(shape) != 3:
        raise ValueError(f"a spatial window needs a feature map (C, h, w), got shape {shape}")
    return shape


def _masks(feature_shape: Sequence[int], window: int, channels: float) -> Dict[str, Tuple[Optional[torch.Tensor], str]]:
    """The variants that apply to ``feature_shape``: name → (mask or None, description)."""
    shape = tuple(int(v) for v in feature_shape)
    masks: Dict[str, Tuple[Optional[torch.Tensor], str]] = {"all": (None, "the whole code")}
    if len(shape) == 3 and shape[1] * shape[2] > 1:
        (y0, y1), (x0, x1) = window_bounds(shape[1], window), window_bounds(shape[2], window)
        masks["window"] = (window_mask(shape, window),
                           f"centre {y1 - y0}×{x1 - x0} of {shape[1]}×{shape[2]} cells")
    else:
        log.info("locality: features of shape %s have no spatial extent; no window variant", shape)
    kept = max(1, math.ceil(channels * shape[0]))
    masks["channels"] = (channel_mask(shape, channels), f"first {kept} of {shape[0]} channels")
    return masks


def _frame(images: np.ndarray, bounds: Tuple[int, int, int, int]) -> np.ndarray:
    """uint8 ``(n, 3, S, S)`` with a one-pixel frame around rows ``y0:y1``, columns ``x0:x1``."""
    out = images.copy()
    y0, y1, x0, x1 = bounds
    y1, x1 = max(y1 - 1, y0), max(x1 - 1, x0)
    colour = _FRAME.reshape(1, 3, 1)
    out[:, :, y0, x0:x1 + 1] = colour
    out[:, :, y1, x0:x1 + 1] = colour
    out[:, :, y0:y1 + 1, x0] = colour
    out[:, :, y0:y1 + 1, x1] = colour
    return out


def optimisation_config(iterations: int, optimisation: Mapping[str, Any]) -> MVConfig:
    """The optimisation's settings for this experiment: ``optimisation`` (the settings of
    ``baselines.mahendran_vedaldi``, None where unset: :class:`preimage.baselines.MVConfig`'s
    defaults) with the experiment's own ``iterations``."""
    return MVConfig(iterations=iterations, **{k: v for k, v in optimisation.items() if v is not None})


def locality(representation_name: str, representation, base_name: str, decoder_path: str, test_images_path: str,
             csv_path: str, png_path: str, mv_config: MVConfig, images: int = 2, window: int = 3,
             channels: float = 0.5, n_show: int = 6, seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Reconstructions from a window and from a subset of channels of one layer, by both methods
    (see the module docstring). ``images``: how many figure images (the first of
    :func:`preimage.plotting.show_indices`); ``window``: side of the window in feature cells;
    ``channels``: the fraction of channels kept; ``mv_config``: the optimisation's settings
    (iterations, σ, …); ``base_name`` picks its defaults (:func:`preimage.baselines.settings`).

    Parameters
    ----------
    representation_name : str
        The slug that names the table's rows and the figure (``conv5``, ``efficientnet_lite0@stages.3``).
    representation : callable
        Φ, differentiable (the optimisation needs its gradient).
    base_name : str
        The configured name of the base representation, which picks the optimisation's defaults.
    decoder_path : str
        Our trained decoder of the layer (``results/{rep}/decoder.pt``).
    test_images_path : str
        The test image store the codes Φ0 are computed from.
    csv_path, png_path : str
        Outputs: one row per variant (``all``, ``window``, ``channels``) and method with the image
        error and the feature errors on the kept activations and on the whole code; the figure.
    mv_config : MVConfig
        M&V's optimisation settings (``baselines.mahendran_vedaldi``; iterations from
        ``analyses.locality.iterations``).
    images : int, default 2
        Figure images reconstructed (the first of :func:`preimage.figures.show_indices`).
    window : int, default 3
        Side of the centred window in feature cells (M&V's figure: 5; ours smaller, for small maps).
    channels : float, default 0.5
        Fraction of the channels kept, the first ones (0.5: M&V's first filter group of AlexNet).
    n_show : int, default 6
        Images shown in the figure (at most ``images``).
    seed : int, default 0
        Seed of the bootstrap intervals.
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    decoder = TrainedDecoder(decoder_path, device)
    normaliser, pick, truth, targets = figure_codes(decoder, representation, test_images_path, images)
    shape = tuple(targets.shape[1:])
    variants = _masks(shape, window, channels)
    show = slice(0, min(n_show, len(truth)))
    inputs = image_store.to_uint8(truth[show])
    rows: List[dict] = []
    grid: List[Tuple[str, np.ndarray]] = []
    # one optimisation for every variant (the codes stacked, one mask per row: small batches are
    # dominated by per-step overhead); variant v of image i starts from image i's noise
    n = len(targets)
    ones = torch.ones(1, *shape)
    masks = torch.cat([(ones if mask is None else mask).expand(n, *shape) for mask, _ in variants.values()])
    result = optimise_preimage(representation, targets.repeat(len(variants), *([1] * len(shape))).to(decoder.device),
                               decoder.image_size, base_name, mv_config, device=decoder.device,
                               mask=masks.to(decoder.device), seeds=list(range(n)) * len(variants))
    optimised = result.images.cpu().view(len(variants), n, *result.images.shape[1:])
    for v, (variant, (mask, description)) in enumerate(variants.items()):
        kept = 1.0 if mask is None else float(mask.mean())
        decoded = decoder(targets if mask is None else targets * mask)
        for method, recon in (("decoder", decoded), ("mahendran_vedaldi", optimised[v])):
            row = metrics.error_summary(metrics.normalised_error(recon, truth, normaliser), seed,
                                        representation=representation_name, variant=variant, method=method,
                                        description=description, active_fraction=kept)
            on_device = recon.to(decoder.device), targets.to(decoder.device)
            row["feature_error"] = float(np.mean(feature_space_error(
                representation, *on_device, mask=None if mask is None else mask.to(decoder.device))))
            row["feature_error_whole_code"] = float(np.mean(feature_space_error(representation, *on_device)))
            rows.append(row)
            label = "decoder" if method == "decoder" else "M&V"
            grid.append((f"{variant}: {label}\n{row['error']:.3f} / {row['feature_error']:.3f}",
                         image_store.to_uint8(recon[show])))
        log.info("%s locality %-8s (%s): decoder %.4f, M&V %.4f image error", representation_name, variant,
                 description, rows[-2]["error"], rows[-1]["error"])
    log.info("%s locality: the optimisation took %.1f s", representation_name, result.seconds)
    if "window" in variants:
        side = truth.shape[-1]
        (y0, y1), (x0, x1) = window_bounds(shape[1], window), window_bounds(shape[2], window)
        bounds = (y0 * side // shape[1], y1 * side // shape[1], x0 * side // shape[2], x1 * side // shape[2])
        inputs = _frame(inputs, bounds)
    table = pd.DataFrame(rows)
    atomic_files.write_csv(table, csv_path)
    image_grid([("input\n(window\nfootprint)" if "window" in variants else "input", inputs), *grid], png_path,
               title=analysis_title(representation_name, decoder.label,
                                    "reconstruction from a window / a subset of channels "
                                    "(row label: image error / feature error on the kept activations)"))
    return table

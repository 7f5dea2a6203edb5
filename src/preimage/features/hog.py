"""HOG: the Felzenszwalb et al. (UoCTTI) histogram of oriented gradients, as VLFeat's ``vl_hog``.

Paper: Dosovitskiy & Brox, "Inverting Visual Representations with Convolutional Networks",
CVPR 2016, §2 ("HOG ... we use the implementation from VLFeat, 31-dimensional UoCTTI variant,
cell size 8, 9 orientations") and the supplementary material, "Shallow features details"
(for a 256x256 image HOG is a 32x32x31 array). This module is a pure-PyTorch, batched,
differentiable re-implementation that reproduces VLFeat 0.9.21 ``vl_hog`` (``vl/hog.c``,
``VlHogVariantUoctti``, ``numOrientations = 9``, ``transposed = VL_FALSE``, default hard
orientation assignment) on a single grey channel.

What is computed (and how it matches ``vl/hog.c``)
--------------------------------------------------
* **Grey image.** RGB in ``[0, 1]`` is converted with ITU-R BT.601 luma weights
  ``0.299 R + 0.587 G + 0.114 B`` (MATLAB's ``rgb2gray``), in float32, and *not* rescaled: the
  HOG of the ``[0, 1]`` grey image. The reference comparison (``tests/test_hog.py``) feeds
  VLFeat exactly this float32 grey image (same ``[0, 1]`` scale), so the block-normalisation
  epsilon acts identically. A ``(N, 1, H, W)`` input is taken as already grey.
* **Cell grid.** ``hogW = (W + cell//2) // cell`` and ``hogH = (H + cell//2) // cell`` (the last
  cell is at least half inside the image), as VLFeat. This equals ``ceil(W / cell)`` unless
  ``W mod cell`` is in ``(0, cell/2)``, where it is one less (e.g. 67 px -> 8 cells, not 9);
  :meth:`HOG.output_shape` declares VLFeat's count. 256 px -> 32 cells.
* **Gradients.** Central differences without the 1/2 factor, ``I(x+1) - I(x-1)``, computed only
  at interior pixels ``1 <= x <= W-2``, ``1 <= y <= H-2``; the one-pixel border contributes
  nothing (VLFeat does not pad).
* **Orientation binning.** VLFeat scores the raw (not normalised) gradient against the 9
  directions ``(cos(k pi/9), sin(k pi/9))``: ``score_k = gx * cos_k + gy * sin_k`` with each
  product and the sum rounded to float32 (y axis pointing down), keeps the largest ``|score|``
  (the first, lowest ``k``, on ties: a strict ``>``), ``+9`` if that score is negative: a hard
  assignment to the nearest of 18 directed bins. Here the nearest bin comes from ``atan2``; the
  few pixels within ``1e-4`` bin widths of a bin edge (where float rounding decides) are
  re-decided with exactly VLFeat's float32 scores (:func:`_vlfeat_bins`), and exactly vertical
  gradients (``gx == 0``, which lie exactly on the 80/100 degree edge and tie in VLFeat) get
  VLFeat's tie-break, so the bin of every pixel is VLFeat's. The scores must be those of the raw
  gradient: scoring the unit vector ``g / |g|`` rounds differently and puts about one pixel in 50
  photographs of 256x256 on the other side of an edge (a feature error up to ~7e-2 in the cells
  around it). The magnitude ``sqrt(gx^2 + gy^2)`` votes with weight 1.
* **Spatial interpolation.** Each pixel votes into the four nearest cell centres with bilinear
  weights, ``hx = (x + 0.5)/cell - 0.5``; votes that fall outside the grid are dropped (they
  land in a one-cell margin that is cropped). Implemented as four ``scatter_add`` (one per
  corner, each with the same index tensor into a shifted view of the histogram) -- on one CPU
  core this is several times faster than one-hot orientation maps pooled with a bilinear
  kernel, which materialise 18 full-resolution channels. On CUDA ``scatter_add`` uses atomics,
  so the summation order (and the last bit) is not deterministic there.
* **Normalisation.** ``n = ||h_d[0:9] + h_d[9:18]||^2`` per cell (undirected histogram); each
  cell has four 2x2 blocks (neighbour indices clamped at the border), factor
  ``1/sqrt(sum of the 4 cell norms + 1e-4)``. For every factor the directed (18), undirected
  (9) histograms are scaled and truncated at 0.2; features are ``0.5 *`` the sum over the four
  factors; the texture terms are ``sum_k(truncated undirected) / sqrt(18)`` per factor.
* **Channel order** (31): ``0..17`` directed orientations ``k pi/9``, ``18..26`` undirected,
  ``27..30`` texture terms for the blocks (up-left, up-right, down-left, down-right).

Agreement with VLFeat: identical up to float32 rounding and summation order (VLFeat
accumulates votes pixel by pixel and normalises in double); measured ``max |ours - vlfeat|``
``3.3e-7`` over 500 ImageNet photographs at 256 px (values lie in ``[0, 0.42]``;
``docs/reliability-hog.md``, ``python bench/bench_hog.py --agreement``); ``tests/test_hog.py`` and
``tests/test_hog_ties.py`` (gradients on the bin edges) assert ``< 2e-6``.

Speed: on CPU the batch is processed in chunks of about 2 images of 256x256 (working set in
cache); on one core this outruns VLFeat's C ``vl_hog`` on 256x256 images (README, "Speed";
``python bench/bench_hog.py`` measures both). On CUDA the whole batch is processed at once.

Differentiability: gradients flow to the image through the gradient magnitudes (votes, norms,
truncation). The choice of orientation bin is piecewise constant (as in VLFeat), so no
gradient flows through the orientation itself.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, Tuple

from preimage.deferred import F, torch
from preimage.features.base import Representation, register

__all__ = ["HOG", "gradient_magnitude", "hog", "hog_grid", "rgb_to_gray", "GRAY_WEIGHTS", "NUM_ORIENTATIONS", "HOG_DIM"]

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as MATLAB rgb2gray
NUM_ORIENTATIONS = 9
HOG_DIM = 3 * NUM_ORIENTATIONS + 4  # 31
_EPS = 1e-4  # added to the squared block norm (UoCTTI / VLFeat)
_TRUNC = 0.2
_TEXTURE_SCALE = 1.0 / math.sqrt(18.0)
_N_CODES = 2 * NUM_ORIENTATIONS + 1  # orientation codes 9..27, see _orientation_codes
_BOUNDARY_MARGIN = 1e-4  # bin widths; atan2 + floor is exact farther than this from an edge
_MAX_EXACT_INDEX = 2**24  # scatter indices are formed in float32: exact below this
_CPU_CHUNK_PIXELS = 2 * 256 * 256  # CPU: images per chunk so that the working set stays in cache


@functools.lru_cache(maxsize=None)
def _orientation_table() -> Tuple[torch.Tensor, torch.Tensor]:
    """VLFeat's bin directions ``(float)cos(k pi/9)``, ``(float)sin(k pi/9)``, ``k = 0..8``
    (made on first use, so that importing the module does not load torch)."""
    angle = torch.arange(NUM_ORIENTATIONS, dtype=torch.float64) * math.pi / NUM_ORIENTATIONS
    return torch.cos(angle).to(torch.float32), torch.sin(angle).to(torch.float32)


# A gradient with gx == 0 scores |gy * sin(4 pi/9)| and |gy * sin(5 pi/9)| for bins 4 and 5.
# Both sines round to the same float32, so the scores tie exactly and VLFeat keeps the first,
# bin 4. In code units (see _orientation_codes) such a gradient sits exactly on an edge; it is
# moved by a quarter bin towards bin 4 (tests/test_hog_ties.py checks this against the rule).
_VERTICAL_SHIFT = -0.25


def hog_grid(height: int, width: int, cell_size: int = 8) -> Tuple[int, int]:
    """VLFeat's number of HOG cells ``(hogH, hogW)`` for an image of ``height x width``."""
    return (height + cell_size // 2) // cell_size, (width + cell_size // 2) // cell_size


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB -> ``(N, H, W)`` grey with :data:`GRAY_WEIGHTS`; ``(N, 1, H, W)`` passes.

    Computed as ``(0.299 R + 0.587 G) + 0.114 B`` with separate float multiplies and adds, so
    the result of a pixel does not depend on the batch it is in.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images[:, 0]
    gray = images[:, 0] * GRAY_WEIGHTS[0]
    gray = gray + images[:, 1] * GRAY_WEIGHTS[1]
    return gray + images[:, 2] * GRAY_WEIGHTS[2]


_CACHE: Dict[tuple, object] = {}


def _cached(key: tuple, make):
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 64:
            _CACHE.clear()
        hit = _CACHE[key] = make()
    return hit


def _axis_votes(n: int, cell: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For pixel coordinates ``x = 1 .. n-2`` (the interior): the left cell centre ``binx`` and
    the bilinear weight ``wx1`` towards it (``wx2 = 1 - wx1`` goes to ``binx + 1``), as
    ``vl/hog.c`` computes them (``hx = (x + 0.5)/cell - 0.5`` rounded to float)."""
    x = torch.arange(1, n - 1, dtype=torch.float64)
    hx = ((x + 0.5) / cell - 0.5).to(torch.float32)
    binx = torch.floor(hx)
    wx2 = hx - binx
    wx1 = (1.0 - wx2.double()).to(torch.float32)
    return binx.long(), wx1


def _spatial_plan(n: int, height: int, width: int, cell: int, device: torch.device, dtype: torch.dtype):
    """Scatter plan of the bilinear spatial votes for ``n`` images (cached).

    Returns ``(base, weights, offsets)``. ``base`` ``(n, H-2, W-2)`` float32 is, per interior
    pixel, the flat index of its upper-left cell in image ``i``'s block of ``_N_CODES`` planes
    of ``(hh+2) x (hw+2)`` cells (a one-cell margin catches the votes VLFeat drops), minus
    ``9 * plane`` (the orientation code ``f`` in ``9..27`` adds ``f * plane``). ``weights``
    ``(4, n, H-2, W-2)`` are the bilinear weights of the corners up-left, up-right, down-left,
    down-right and ``offsets`` their constant flat offsets ``(0, 1, hw+2, hw+3)``.
    """

    def make():
        hh, hw = hog_grid(height, width, cell)
        plane = (hh + 2) * (hw + 2)
        by, wy1 = _axis_votes(height, cell)
        bx, wx1 = _axis_votes(width, cell)
        wy = torch.stack([wy1, (1.0 - wy1.double()).float()])  # weights to biny, biny+1
        wx = torch.stack([wx1, (1.0 - wx1.double()).float()])
        # VLFeat forms grad * ow * wx * wy left to right in float (ow = 1); here wx * wy is
        # formed first, so a vote may differ from VLFeat's in the last bit.
        weights = torch.stack([wy[dy].view(-1, 1) * wx[dx].view(1, -1) for dy in (0, 1) for dx in (0, 1)])
        cell_index = (by + 1).view(-1, 1) * (hw + 2) + (bx + 1).view(1, -1) - NUM_ORIENTATIONS * plane
        image_offset = torch.arange(n, dtype=torch.int64).view(n, 1, 1) * (_N_CODES * plane)
        base = (cell_index.unsqueeze(0) + image_offset).to(device=device, dtype=torch.float32)
        weights = weights.unsqueeze(1).expand(4, n, -1, -1).to(device=device, dtype=dtype).contiguous()
        return base, weights, (0, 1, hw + 2, hw + 3)

    return _cached(("plan", n, height, width, cell, str(device), dtype), make)


def _orientation_codes(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """VLFeat's hard assignment to one of the 18 directed bins, as a float code ``f`` in
    ``{9, ..., 27}`` with directed bin ``f mod 18`` (folded later on the small histograms).

    ``f = floor(atan2(gy, gx) * 9/pi + 18.5)`` is the nearest bin. Exactly vertical gradients
    are moved off their edge towards VLFeat's tie-break; pixels within ``_BOUNDARY_MARGIN`` of an
    edge are re-decided with VLFeat's float32 scores (:func:`_vlfeat_bins`).
    """
    u = torch.atan2(gy, gx).mul_(NUM_ORIENTATIONS / math.pi).add_(2 * NUM_ORIENTATIONS + 0.5)  # [9.5, 27.5]
    not_vertical = torch.sign(gx).abs_()  # 0 where gx == 0, else 1 (float ops: cheap)
    u.add_(not_vertical, alpha=-_VERTICAL_SHIFT).add_(_VERTICAL_SHIFT)  # exact for non-vertical
    code = torch.floor(u)
    dist = u.sub_(code).sub_(0.5).abs_()  # distance from the bin centre, [0, 0.5]
    threshold = 0.5 - _BOUNDARY_MARGIN
    width = dist.shape[-1]
    row_max = dist.amax(dim=-1).view(-1)
    if float(row_max.max()) > threshold:  # rare pixels: find them in the few flagged rows
        rows = torch.nonzero(row_max > threshold).squeeze(1)
        cols = torch.nonzero(dist.view(-1, width)[rows] > threshold)
        sel = rows[cols[:, 0]].mul_(width).add_(cols[:, 1])
        directed = _vlfeat_bins(gx.reshape(-1)[sel], gy.reshape(-1)[sel])
        directed += (directed < NUM_ORIENTATIONS) * (2 * NUM_ORIENTATIONS)
        code.view(-1)[sel] = directed.to(code.dtype)
    return code


def _vlfeat_bins(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """VLFeat's directed bin (int64 in ``0..17``) of 1-D gradients, with its float32 operations:
    scores ``gx * cos(k pi/9) + gy * sin(k pi/9)`` of the raw gradient (each product and the sum
    rounded to float32, as ``vl_hog_put_image``), the first largest ``|score|`` wins (VLFeat
    replaces its best only on a strictly larger score), ``+9`` if that score is negative."""
    gx, gy = gx.unsqueeze(1), gy.unsqueeze(1)
    ox, oy = _orientation_table()
    scores = gx * ox.to(gx.device, gx.dtype) + gy * oy.to(gx.device, gx.dtype)  # (K, 9)
    k = scores.abs().argmax(dim=1, keepdim=True)  # first maximum on ties, as VLFeat's strict '>'
    negative = scores.gather(1, k) < 0
    return (k + negative * NUM_ORIENTATIONS).squeeze(1)


@functools.lru_cache(maxsize=None)
def _magnitude_function() -> type:
    """The autograd function of :func:`gradient_magnitude`, defined on first use (it derives from
    ``torch.autograd.Function``, and importing this module does not load torch)."""

    class Magnitude(torch.autograd.Function):
        @staticmethod
        def forward(ctx, gx, gy):  # type: ignore[override]
            mag = torch.sqrt(gx * gx + gy * gy)
            ctx.save_for_backward(gx, gy, mag)
            return mag

        @staticmethod
        def backward(ctx, grad):  # type: ignore[override]
            gx, gy, mag = ctx.saved_tensors
            positive = mag > 0
            scale = torch.where(positive, grad / torch.where(positive, mag, torch.ones_like(mag)), torch.zeros_like(mag))
            return scale * gx, scale * gy

    return Magnitude


def gradient_magnitude(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """``sqrt(gx^2 + gy^2)`` (float, as VLFeat) with a zero gradient where the magnitude is 0."""
    return _magnitude_function().apply(gx, gy)


def hog(images: torch.Tensor, cell_size: int = 8) -> torch.Tensor:
    """UoCTTI HOG of a batch, as VLFeat ``vl_hog(gray, cell_size)``; see the module docstring.

    ``images``: float ``(N, 3, H, W)`` RGB in ``[0, 1]`` (or ``(N, 1, H, W)`` grey), any device.
    Returns ``(N, 31, (H + cell//2)//cell, (W + cell//2)//cell)``; differentiable w.r.t. ``images``.
    """
    return hog_from_histograms(images, cell_size, _histograms, "hog")


def hog_from_histograms(images: torch.Tensor, cell_size: int, histograms, name: str) -> torch.Tensor:
    """Checks ``images``, computes ``histograms(part, cell, hh, hw)`` (the padded per-cell
    orientation histograms of one orientation-assignment rule) in chunks that keep the float32
    scatter indices exact and CPU buffers small, and applies UoCTTI's normalisation. Shared by
    :func:`hog` and :func:`preimage.features.hogb.hogb`."""
    if not torch.is_floating_point(images):
        raise TypeError(f"{name} expects a floating point image tensor")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    cell = int(cell_size)
    height, width = images.shape[-2:]
    hh, hw = hog_grid(height, width, cell)
    if cell < 1 or height <= 3 or width <= 3 or hh < 1 or hw < 1:
        raise ValueError(f"image {height}x{width} too small for HOG with cell size {cell}")
    per_image = _N_CODES * (hh + 2) * (hw + 2)
    chunk = max(1, (_MAX_EXACT_INDEX - per_image) // per_image)  # float32 indices stay exact
    if images.device.type == "cpu":
        chunk = min(chunk, max(1, _CPU_CHUNK_PIXELS // (height * width)))
    if images.shape[0] <= chunk:
        return _normalise(histograms(images, cell, hh, hw))
    return _normalise(torch.cat([histograms(part, cell, hh, hw) for part in images.split(chunk)]))


def image_gradients(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``vl_hog_put_image``'s gradients: the grey image (N, H, W), central differences ``gx``,
    ``gy`` at the interior pixels (N, H-2, W-2; the border pixels vote nothing) and their
    magnitude (with :func:`gradient_magnitude`'s gradient when the image needs one)."""
    gray = rgb_to_gray(images)
    gx = gray[:, 1:-1, 2:] - gray[:, 1:-1, :-2]
    gy = gray[:, 2:, 1:-1] - gray[:, :-2, 1:-1]
    if gx.requires_grad:
        mag = gradient_magnitude(gx, gy)
    else:
        mag = gx * gx
        mag += gy * gy
        mag.sqrt_()
    return gray, gx, gy, mag


def _histograms(images: torch.Tensor, cell: int, hh: int, hw: int) -> torch.Tensor:
    """Directed orientation histograms ``(N, 18, hh, hw)`` of the cells (``vl_hog_put_image``)."""
    n = images.shape[0]
    height, width = images.shape[-2:]
    gray, gx, gy, mag = image_gradients(images)

    # Votes are accumulated per orientation code f = 9..27 (directed bin f mod 18) in planes of
    # (hh+2) x (hw+2) cells; flat index of a vote: image * _N_CODES * plane + (f-9) * plane + cell.
    plane = (hh + 2) * (hw + 2)
    base, weights, offsets = _spatial_plan(n, height, width, cell, gray.device, gray.dtype)
    with torch.no_grad():  # the bin choice is piecewise constant (as in VLFeat)
        code = _orientation_codes(gx.detach(), gy.detach())
        index = torch.add(base, code, alpha=plane).long().view(-1)

    # One scatter per corner (same index) into the flat histogram shifted by the corner offset.
    size = n * _N_CODES * plane
    flat = torch.zeros(size + offsets[-1], device=gray.device, dtype=gray.dtype)
    for corner, offset in enumerate(offsets):
        flat[offset : offset + size].scatter_add_(0, index, (mag * weights[corner]).view(-1))
    h = flat[:size].view(n, _N_CODES, hh + 2, hw + 2)[:, :, 1:-1, 1:-1]
    nine = NUM_ORIENTATIONS  # fold the codes: directed bin b <- code b + 18 (b < 9), code b (b >= 9), 27 -> 9
    return torch.cat([h[:, nine : 2 * nine], h[:, :1] + h[:, 2 * nine :], h[:, 1:nine]], dim=1)


def _normalise(h: torch.Tensor) -> torch.Tensor:
    """UoCTTI block normalisation (``vl_hog_extract``) of directed histograms ``(N, 18, hh, hw)``."""
    und = h[:, :NUM_ORIENTATIONS] + h[:, NUM_ORIENTATIONS:]
    hist = torch.cat([h, und], dim=1)  # (N, 27, hh, hw)
    norm = und.square().sum(dim=1, keepdim=True)  # (N, 1, hh, hw)
    norm = F.pad(norm, (1, 1, 1, 1), mode="replicate")  # VLFeat clamps the neighbour indices
    block = norm[..., :-1, :-1] + norm[..., :-1, 1:]
    block = block + norm[..., 1:, :-1]
    block = block + norm[..., 1:, 1:]
    inv = torch.rsqrt(block.add_(_EPS))  # (N, 1, hh+1, hw+1)
    factors = torch.cat(
        [inv[..., :-1, :-1], inv[..., :-1, 1:], inv[..., 1:, :-1], inv[..., 1:, 1:]], dim=1
    )  # (N, 4, hh, hw): blocks up-left, up-right, down-left, down-right of each cell
    normed = hist.unsqueeze(1) * factors.unsqueeze(2)  # (N, 4, 27, hh, hw)
    if normed.requires_grad:
        normed = torch.clamp_max(normed, _TRUNC)
    else:
        normed.clamp_(max=_TRUNC)
    features = normed.sum(dim=1).mul_(0.5)  # (N, 27, hh, hw)
    texture = normed[:, :, 2 * NUM_ORIENTATIONS :].sum(dim=2).mul_(_TEXTURE_SCALE)  # (N, 4, hh, hw)
    return torch.cat([features, texture], dim=1)


@register("hog")
class HOG(Representation):
    """UoCTTI HOG (31 channels) as VLFeat ``vl_hog``; parameter ``cell_size`` (default 8)."""

    family = "hog"

    @classmethod
    def decoder_kind(cls, feature_shape) -> str:
        """Supplementary Table 3."""
        return "two_stream"

    name = "hog"
    differentiable = True

    def __init__(self, cell_size: int = 8, **params) -> None:
        if params:
            raise TypeError(f"unknown HOG parameters: {sorted(params)}")
        super().__init__(cell_size=int(cell_size))
        self.cell_size = int(cell_size)

    def output_shape(self, height: int, width: int) -> Tuple[int, ...]:
        hh, hw = hog_grid(height, width, self.cell_size)
        return (HOG_DIM, hh, hw)

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        return hog(images, self.cell_size)

    def identity(self) -> Dict[str, str]:
        ident = super().identity()
        ident.update(
            implementation="preimage.features.hog (VLFeat 0.9.21 vl_hog UoCTTI, 9 orientations)",
            gray_weights=",".join(str(w) for w in GRAY_WEIGHTS),
        )
        return ident

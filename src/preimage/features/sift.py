"""SIFT keypoints + descriptors on a 4×4-pixel grid (paper §2, "SIFT"), sparse storage.

The paper extracted SIFT with VLFeat's defaults and arranged the keypoints on a grid of
4×4-pixel cells: a cell with a keypoint holds its 128-d descriptor, its position inside the cell
(x mod 4, y mod 4), its orientation (sin α, cos α) and log scale — 133 values; an empty cell is
all zeros; when several keypoints fall into one cell one of them is kept at random. Output
``(N, 133, ceil(H/4), ceil(W/4))``; channels 0–127 descriptor, 128 ``x mod 4``, 129 ``y mod 4``,
130 ``sin α``, 131 ``cos α``, 132 ``log σ``.

We detect with OpenCV (``cv2.SIFT_create``), configured as close to VLFeat 0.9.21 as its API
allows (measured against ``libvl`` in ``tests/test_sift.py`` / ``bench/bench_sift.py``):

* 3 levels per octave (``nOctaveLayers=3``; VLFeat ``Levels``), base smoothing σ = 1.6
  (VLFeat: ``sigma0 = 1.6·2^(1/3)`` for level 0, i.e. 1.6 at level −1 — the same pyramid),
  nominal camera blur 0.5 in both.
* Peak threshold 0 (``contrastThreshold=0``; VLFeat ``PeakThresh`` default 0) and edge threshold 10
  (``edgeThreshold=10``; VLFeat ``EdgeThresh`` default 10).
* **First octave 0.** OpenCV always detects from octave −1 (image upsampled 2×) and has no
  parameter for it. We run it with ``enable_precise_upscale=True`` (upsampling maps x → 2x exactly,
  otherwise every keypoint is shifted by +0.25 px against VLFeat) and *drop* the keypoints of octave
  −1. Octave 0 is then OpenCV's downsampled octave −1 level, which has the same nominal blur as
  VLFeat's directly smoothed octave 0. Cost: the octave −1 work (≈ 3/4 of the pyramid) is wasted.
* Octaves automatic in both (OpenCV: ``log2(min(H, W)) - 2`` counted from octave −1; VLFeat
  ``floor(log2(min(H, W))) - 2``: at 256 px VLFeat may produce one extra, nearly empty octave).

Remaining differences (not configurable in OpenCV):

* OpenCV discards keypoints within 5 px of the border (``SIFT_IMG_BORDER``), VLFeat within 1 px.
* Extremum test and sub-pixel refinement follow each library's own code (per their sources:
  OpenCV accepts ties with neighbours and gives up after 5 unconverged refinement steps; VLFeat
  requires a strict extremum and rejects offsets ≥ 1.5 after at most 5 moves).
* OpenCV removes duplicate keypoints (same x, y, size, angle); VLFeat does not.
* Orientation histogram smoothing and peak interpolation differ slightly (both 36 bins, up to
  4 orientations / peaks ≥ 0.8·max, each a separate keypoint in both).
* Descriptor: OpenCV's layout/orientation conventions differ from VLFeat's (bin order), and OpenCV
  rounds the clipped, renormalised descriptor ×512 to integers 0..255. We store
  ``descriptor / 512`` (≈ VLFeat's float descriptor: unit L2 norm, entries ≤ 0.2 before renorm).
* Angle: ``α = radians(kp.angle)`` matches VLFeat's angle convention (checked on matched keypoints).
* Scale: ``σ = kp.size / 2`` equals VLFeat's σ (``sigma0·2^(o + s/S)``).
* Gray: ``cv2.cvtColor(RGB2GRAY)`` on uint8 (VLFeat in MATLAB: ``rgb2gray`` then single).

Measured (8 skimage.data photos at 256 px, ``bench/bench_sift.py``): OpenCV finds 0.79–1.05× VLFeat's
keypoint count per image (0.88× overall, 1562 vs 1785), median σ within 5 % (≈ 2.5 px in both),
with the deficit spread over all scales; about 40 % of it (80 of 194) are VLFeat keypoints inside
OpenCV's 5-px-per-octave border, the rest the extremum/refinement/orientation differences below.

Coordinates: pixel centres on integers, pixel (0, 0) centred at (0, 0); keypoint (x, y) goes to
cell ``(floor(y/4), floor(x/4))`` (clipped to the grid) and stores ``x - 4·col``, ``y - 4·row``.

Randomness: the keypoint kept in a crowded cell is drawn with ``numpy.random.default_rng((seed,
crc32(gray image)))`` — seeded per image by its *content*, so results do not depend on batching,
worker count or order.

Sparse storage: :meth:`SIFT.compute_sparse` returns ``table`` float32 ``(K, 135)`` — columns
``row, col`` then the 133 channel values of each occupied cell — and ``offsets`` int64 ``(N+1,)``
(image ``i`` owns rows ``offsets[i]:offsets[i+1]``). :func:`densify` turns a range of images back
into the dense tensor.
"""

from __future__ import annotations

import math
import threading
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from preimage.deferred import torch
from preimage.features.base import Representation, register

DESCRIPTOR_SIZE = 128
NUM_CHANNELS = DESCRIPTOR_SIZE + 5  # descriptor, x mod c, y mod c, sin, cos, log sigma
TABLE_COLUMNS = NUM_CHANNELS + 2  # row, col + channels
DESCRIPTOR_SCALE = 1.0 / 512.0

_local = threading.local()


def _detector(params: Tuple) -> "object":
    """A per-thread (and per-process) cached ``cv2.SIFT`` for the given parameters."""
    import cv2

    cache: Dict = getattr(_local, "detectors", None) or {}
    _local.detectors = cache
    if params not in cache:
        layers, contrast, edge, sigma = params
        cache[params] = cv2.SIFT_create(0, layers, contrast, edge, sigma, True)
    return cache[params]


def detect(gray: np.ndarray, params: Tuple = (3, 0.0, 10.0, 1.6)) -> Tuple[np.ndarray, np.ndarray]:
    """OpenCV SIFT on a uint8 gray image with octave −1 dropped (see module docstring).

    Returns ``frames`` float64 ``(K, 4)`` = ``(x, y, sigma, angle_rad)`` and ``descriptors`` float32
    ``(K, 128)`` scaled by 1/512.
    """
    keypoints, descriptors = _detector(params).detectAndCompute(gray, None)
    if not keypoints:
        return np.zeros((0, 4)), np.zeros((0, DESCRIPTOR_SIZE), np.float32)
    raw = np.array([(k.pt[0], k.pt[1], k.size, k.angle, k.octave) for k in keypoints], dtype=np.float64)
    octave = ((raw[:, 4].astype(np.int64) & 255) ^ 128) - 128  # OpenCV packs a signed byte
    keep = octave >= 0
    frames = np.stack([raw[keep, 0], raw[keep, 1], raw[keep, 2] / 2.0, np.deg2rad(raw[keep, 3])], axis=1)
    return frames, descriptors[keep].astype(np.float32) * DESCRIPTOR_SCALE


def image_table(rgb: np.ndarray, cell_size: int = 4, seed: int = 0, params: Tuple = (3, 0.0, 10.0, 1.6)) -> np.ndarray:
    """One image ``(3, H, W)`` uint8 RGB → its sparse rows ``(k, 135)`` float32 (one per occupied
    cell, sorted by cell)."""
    import cv2

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) uint8 image, got {rgb.shape} {rgb.dtype}")
    _, height, width = rgb.shape
    gray = cv2.cvtColor(np.ascontiguousarray(rgb.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
    frames, descriptors = detect(gray, params)
    return arrange(frames, descriptors, height, width, cell_size, _image_rng(seed, gray))


def _image_rng(seed: int, gray: np.ndarray) -> np.random.Generator:
    return np.random.default_rng((int(seed), zlib.crc32(np.ascontiguousarray(gray).tobytes())))


def arrange(
    frames: np.ndarray,
    descriptors: np.ndarray,
    height: int,
    width: int,
    cell_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Keypoints → sparse rows: one keypoint per occupied cell (uniformly at random among those that
    fall into it), columns ``row, col, descriptor(128), x mod c, y mod c, sin α, cos α, log σ``."""
    rows_n, cols_n = math.ceil(height / cell_size), math.ceil(width / cell_size)
    if len(frames) == 0:
        return np.zeros((0, TABLE_COLUMNS), np.float32)
    x, y, sigma, angle = frames.T
    col = np.clip(np.floor(x / cell_size), 0, cols_n - 1).astype(np.int64)
    row = np.clip(np.floor(y / cell_size), 0, rows_n - 1).astype(np.int64)
    cell = row * cols_n + col
    order = np.lexsort((rng.random(len(cell)), cell))  # by cell, random within a cell
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    pick = order[first]
    table = np.empty((len(pick), TABLE_COLUMNS), np.float32)
    table[:, 0] = row[pick]
    table[:, 1] = col[pick]
    table[:, 2 : 2 + DESCRIPTOR_SIZE] = descriptors[pick]
    c = 2 + DESCRIPTOR_SIZE
    table[:, c] = x[pick] - cell_size * col[pick]
    table[:, c + 1] = y[pick] - cell_size * row[pick]
    table[:, c + 2] = np.sin(angle[pick])
    table[:, c + 3] = np.cos(angle[pick])
    table[:, c + 4] = np.log(sigma[pick])
    return table


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _worker(args: Tuple) -> np.ndarray:
    return image_table(*args)


def densify(
    table: np.ndarray,
    offsets: np.ndarray,
    index_range: Optional[Tuple[int, int]],
    height: int,
    width: int,
    cell_size: int = 4,
) -> torch.Tensor:
    """Sparse rows of images ``index_range = (start, stop)`` (all when ``None``) → dense float32
    ``(stop - start, 133, ceil(height/c), ceil(width/c))``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    start, stop = (0, len(offsets) - 1) if index_range is None else (int(index_range[0]), int(index_range[1]))
    if not 0 <= start <= stop <= len(offsets) - 1:
        raise IndexError(f"index_range {index_range} outside 0..{len(offsets) - 1}")
    rows_n, cols_n = math.ceil(height / cell_size), math.ceil(width / cell_size)
    dense = torch.zeros((stop - start, rows_n, cols_n, NUM_CHANNELS), dtype=torch.float32)
    part = np.asarray(table[offsets[start] : offsets[stop]], dtype=np.float32)
    if len(part):
        image = np.repeat(np.arange(stop - start), np.diff(offsets[start : stop + 1]))
        r = part[:, 0].astype(np.int64)
        c = part[:, 1].astype(np.int64)
        if (r < 0).any() or (r >= rows_n).any() or (c < 0).any() or (c >= cols_n).any():
            raise ValueError("sparse table has cells outside the grid of the given height/width")
        dense[torch.from_numpy(image), torch.from_numpy(r), torch.from_numpy(c)] = torch.from_numpy(part[:, 2:])
    return dense.permute(0, 3, 1, 2).contiguous()


@register("sift")
class SIFT(Representation):
    """SIFT on a 4×4 grid (OpenCV detector, VLFeat-like settings), ``(N, 133, ceil(H/4), ceil(W/4))``.

    Parameters
    ----------
    cell_size : int, default 4
        Side in pixels of the grid's cells (§2: s = 4).
    seed : int, default 0
        Seed of the keypoint kept in a crowded cell (drawn per image from its content, module docstring).
    workers : int, default 1
        Threads (or processes) running OpenCV over a batch's images.
    pool : {"thread", "process"}, default "thread"
        How ``workers`` > 1 run.
    levels : int, default 3
        Scale levels per octave (VLFeat's ``Levels``).
    peak_threshold : float, default 0.0
        Contrast threshold of the detector (VLFeat's ``PeakThresh``, default 0).
    edge_threshold : float, default 10.0
        Edge-response threshold (VLFeat's ``EdgeThresh``, default 10).
    sigma : float, default 1.6
        Base smoothing of the pyramid (VLFeat's σ0 at level −1).
    **params
        Further parameters, recorded with the representation's parameters.
    """

    family = "sift"

    @classmethod
    def decoder_kind(cls, feature_shape) -> str:
        """Supplementary Table 4."""
        return "sift"

    name = "sift"
    differentiable = False
    sparse = True
    sparse_width = 2 + NUM_CHANNELS  # cell row, cell column, then the 133 values

    def __init__(
        self,
        cell_size: int = 4,
        seed: int = 0,
        workers: int = 1,
        pool: str = "thread",
        levels: int = 3,
        peak_threshold: float = 0.0,
        edge_threshold: float = 10.0,
        sigma: float = 1.6,
        **params,
    ) -> None:
        super().__init__(
            cell_size=int(cell_size),
            seed=int(seed),
            levels=int(levels),
            peak_threshold=float(peak_threshold),
            edge_threshold=float(edge_threshold),
            sigma=float(sigma),
            **params,
        )
        if pool not in ("thread", "process"):
            raise ValueError("pool must be 'thread' or 'process'")
        self.cell_size = int(cell_size)
        self.seed = int(seed)
        self.workers = int(workers)
        self.pool = pool
        self.cv_params = (int(levels), float(peak_threshold), float(edge_threshold), float(sigma))

    def identity(self) -> Dict[str, str]:
        import cv2

        ident = super().identity()
        ident["opencv"] = cv2.__version__
        return ident

    def output_shape(self, height: int, width: int) -> Tuple[int, ...]:
        return (NUM_CHANNELS, math.ceil(height / self.cell_size), math.ceil(width / self.cell_size))

    def compute_sparse(self, images_uint8: np.ndarray, workers: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(N, 3, H, W)`` uint8 RGB → ``(table (K, 135) float32, offsets (N+1,) int64)``.

        ``workers > 1`` runs OpenCV in a thread pool (OpenCV releases the GIL; ``cv2.setNumThreads(1)``
        for the duration) or, with ``pool="process"``, a process pool whose workers each use one
        OpenCV thread.
        """
        import cv2

        images = np.asarray(images_uint8)
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected (N, 3, H, W) uint8 images, got {images.shape} {images.dtype}")
        workers = self.workers if workers is None else int(workers)
        jobs = [(images[i], self.cell_size, self.seed, self.cv_params) for i in range(len(images))]
        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            if workers <= 1 or len(jobs) <= 1:
                parts: List[np.ndarray] = [_worker(job) for job in jobs]
            elif self.pool == "thread":
                with ThreadPoolExecutor(max_workers=workers) as executor:
                    parts = list(executor.map(_worker, jobs))
            else:
                with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as executor:
                    parts = list(executor.map(_worker, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
        finally:
            cv2.setNumThreads(previous)
        return _concat(parts)

    def densify(
        self,
        table: np.ndarray,
        offsets: np.ndarray,
        index_range: Optional[Tuple[int, int]],
        height: int,
        width: int,
    ) -> torch.Tensor:
        return densify(table, offsets, index_range, height, width, self.cell_size)

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        as_uint8 = (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        table, offsets = self.compute_sparse(as_uint8)
        height, width = images.shape[-2:]
        with torch.no_grad():
            return self.densify(table, offsets, None, height, width).to(images.device)


def _concat(parts: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    table = np.concatenate(parts, axis=0) if parts else np.zeros((0, TABLE_COLUMNS), np.float32)
    return table.astype(np.float32, copy=False), offsets

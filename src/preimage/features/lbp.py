"""Uniform local binary patterns, VLFeat flavour (paper §2: "LBP", 16×16×58 at 256 px).

A pure-PyTorch, vectorised re-implementation of VLFeat 0.9.21's ``vl_lbp_process`` with the
``VlLbpUniform`` mapping (the paper computed LBP with VLFeat). Runs on CPU and CUDA.

Algorithm (matches VLFeat; checked against ``libvl`` in ``tests/test_lbp.py``)
------------------------------------------------------------------------------
1. Grayscale: ``0.2989 R + 0.5870 G + 0.1140 B`` (MATLAB ``rgb2gray`` weights; VLFeat itself only
   takes gray images) in float32. LBP only compares pixels, so the scale is irrelevant.
2. For each pixel ``(x, y)`` with ``1 <= x < W-1`` and ``1 <= y < H-1`` (the one-pixel image border
   produces no pattern, as in VLFeat) an 8-bit string: bit ``k`` is 1 iff neighbour ``k`` is
   *strictly* brighter than the centre; neighbours in VLFeat's order, image y pointing down:
   bit 0 = E ``(x+1, y)``, 1 = SE ``(x+1, y+1)``, 2 = S, 3 = SW, 4 = W, 5 = NW, 6 = N, 7 = NE.
3. Uniform quantisation into 58 bins (VLFeat's indices): the string made of ``j`` consecutive ones
   (``1 <= j <= 7``) starting at bit ``i`` (wrapping round) goes to bin ``7 i + j - 1``
   (bins 0–55); the two constant strings ``0x00`` / ``0xff`` to bin 56; every other string to 57.
4. Histograms over cells of ``cell_size`` pixels with bilinear spatial weights: pixel ``x`` has the
   continuous cell coordinate ``u = (x + 0.5) / cell_size - 0.5`` and gives ``1 - frac(u)`` to cell
   ``floor(u)`` and ``frac(u)`` to cell ``floor(u) + 1`` (same in y; weights multiply).
5. Per cell: ``h ← sqrt(h) / (sqrt(Σ_b h_b) + 1e-10)`` (unit L2 norm of the square-rooted histogram).

Cell count / border (the one deviation from VLFeat, on purpose)
----------------------------------------------------------------
VLFeat makes ``floor(H/cell) × floor(W/cell)`` cells and drops everything beyond them. We make
``ceil(H/cell) × ceil(W/cell)`` cells (the project convention, 16×16 at 256 px either way) using the
same interpolation rule for the extra partial row/column of cells. Because a cell only receives
weight from pixels whose interpolation footprint touches it, the first ``floor × floor`` cells are
*exactly* VLFeat's cells (up to float summation order); the extra row/column holds the pixels VLFeat
ignores. ``cells="floor"`` gives VLFeat's shape instead.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch

from preimage.features.base import Representation, register

NUM_BINS = 58
CONSTANT_BIN = 56
OTHER_BIN = 57
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
CPU_CHUNK = 2  # images per vectorised pass on CPU (bounds the working set to a few MiB)

# (dx, dy) of the neighbour that sets bit k (image y points down), VLFeat's order.
NEIGHBOURS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


def uniform_mapping() -> torch.Tensor:
    """The 256 → 58 table of VLFeat's ``VlLbpUniform`` (non-transposed) as a ``uint8`` tensor."""
    table = torch.full((256,), OTHER_BIN, dtype=torch.uint8)
    table[0x00] = CONSTANT_BIN
    table[0xFF] = CONSTANT_BIN
    for i in range(8):  # position of the first one (the bit after the single 0→1 transition)
        for j in range(1, 8):  # length of the run of ones
            run = ((1 << j) - 1) << i
            run = (run | (run >> 8)) & 0xFF  # wrap around the circle
            table[run] = 7 * i + j - 1
    return table


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB → ``(N, H, W)`` float32 gray with :data:`GRAY_WEIGHTS`."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    gray = torch.empty((n, h * w), dtype=torch.float32, device=images.device)
    _gray_into(images.float().reshape(n, images.shape[1], h * w), gray)
    return gray.view(n, h, w)


def _gray_into(flat: torch.Tensor, gray: torch.Tensor) -> None:
    """``(n, C, H*W)`` → ``gray`` ``(n, H*W)``; the single code path for the gray conversion, so the
    VLFeat comparison sees bit-identical gray values (LBP ties depend on the last bit)."""
    if flat.shape[1] == 3:
        torch.mul(flat[:, 0], GRAY_WEIGHTS[0], out=gray)
        gray.add_(flat[:, 1], alpha=GRAY_WEIGHTS[1]).add_(flat[:, 2], alpha=GRAY_WEIGHTS[2])
    else:
        gray.copy_(flat[:, 0])


def lbp_codes(gray: torch.Tensor) -> torch.Tensor:
    """8-bit LBP strings of the interior pixels: ``(N, H, W)`` → ``(N, H-2, W-2)`` uint8 (reference
    formulation, used by the tests; :func:`lbp_histograms` uses the flattened equivalent)."""
    n, h, w = gray.shape
    centre = gray[:, 1 : h - 1, 1 : w - 1]
    code = torch.zeros((n, h - 2, w - 2), dtype=torch.uint8, device=gray.device)
    for k, (dx, dy) in enumerate(NEIGHBOURS):
        neighbour = gray[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
        code.add_(torch.gt(neighbour, centre).view(torch.uint8), alpha=1 << k)
    return code


def _float32_cells(positions: torch.Tensor, cell_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """VLFeat's continuous cell coordinate in float32: ``floor(u)`` and ``frac(u)`` of
    ``u = (p + 0.5) / cell_size - 0.5``."""
    u = (positions.to(torch.float32) + 0.5) / float(cell_size) - 0.5
    lower = torch.floor(u)
    return lower.long(), u - lower


def _moment_halves(cell_size: int) -> List[List[Tuple[int, int, int]]]:
    """How the four per-block moments (count, Σpx, Σpy, Σpx·py) are bit-packed: a list of 31-bit
    *halves* (two per int64 word, low half first), each a list of ``(moment, shift, bits)``. Fields
    never straddle a half, so sums never carry across one and each half decodes as an int32.
    ``cell_size = 16`` needs one int64 per pixel (count|Σpx in the low half, Σpy|Σpx·py in the high)."""
    cs = cell_size
    bounds = [cs * cs, cs * cs * (cs - 1), cs * cs * (cs - 1), cs * cs * (cs - 1) ** 2]
    halves: List[List[Tuple[int, int, int]]] = [[]]
    used = 0
    for moment, bound in enumerate(bounds):
        bits = max(1, int(bound).bit_length())
        if bits > 31:
            raise ValueError(f"cell_size {cell_size} too large for the packed LBP accumulation")
        if used + bits > 31:
            halves.append([])
            used = 0
        halves[-1].append((moment, used, bits))
        used += bits
    return halves


class _Plan:
    """Everything that depends only on ``(H, W, cell_size, cells, device)``.

    The image is processed *flattened*: the centre of pixel ``p = y W + x`` is compared with
    ``p + dy W + dx``, for ``p`` in ``[W + 1, H W - W - 1)``, so every operation runs on contiguous
    1-D runs (the two border columns wrap round and are masked out).

    Accumulation without per-pixel weights. A pixel's bilinear footprint is fixed by its *block*:
    the ``cell × cell`` pixels that share the lower cell ``(ky, kx)`` (in a grid padded by one guard
    cell before the first cell). Inside a block the weights are affine in the pixel's position
    ``(px, py)``: ``w_upper_x = (px + c) / cell``, ``w_lower_x = 1 - w_upper_x`` (same in y). So the
    four corner sums of a block and bin follow exactly from four integer moments — count, Σpx, Σpy,
    Σpx·py — which we bit-pack into one int64 per pixel (a constant of the plan) and accumulate with a
    single integer ``index_add_`` keyed by ``(block, code)``, straight from the raw 8-bit code
    (the 256 → 58 mapping is applied to the small block table afterwards; packed sums stay
    decodable since the moment bounds hold per block). Integer sums are exact and deterministic on
    CUDA too.
    """

    def __init__(self, height: int, width: int, cell_size: int, rows: int, cols: int, device: torch.device):
        self.height, self.width, self.rows, self.cols, self.cell_size = height, width, rows, cols, cell_size
        cs = cell_size
        self.start = width + 1
        self.length = height * width - 2 * width - 2
        self.origin = math.ceil(-cs / 2 - 0.5)  # first pixel of block 0 (lower cell -1), x and y alike
        self.offset = self.origin + 0.5 + cs / 2  # w_upper = (position in block + offset) / cs
        self.blocks = (rows + 1) * (cols + 1)
        self.table_size = self.blocks * NUM_BINS
        self.halves = _moment_halves(cs)
        self.num_words = (len(self.halves) + 1) // 2

        p = torch.arange(self.start, self.start + self.length)
        y, x = p // width, p % width
        ky = torch.div(y - self.origin, cs, rounding_mode="floor")
        kx = torch.div(x - self.origin, cs, rounding_mode="floor")
        py, px = y - self.origin - cs * ky, x - self.origin - cs * kx
        valid = (x >= 1) & (x <= width - 2) & (ky <= rows) & (kx <= cols)
        base = (ky * (cols + 1) + kx) * NUM_BINS
        self.base = base.to(device)
        self.valid = valid.to(device)
        moments = [torch.ones_like(px), px, py, px * py]
        words = [torch.zeros_like(px) for _ in range(self.num_words)]
        for h, fields in enumerate(self.halves):
            for moment, shift, _ in fields:
                words[h // 2] |= moments[moment] << (shift + 32 * (h % 2))
        self.values = [torch.where(valid, v, torch.zeros_like(v)).to(device) for v in words]
        self.mapping = uniform_mapping().to(torch.int32).to(device)
        # corner sums (LL, UL, LU, UU) of a block = ``corner_matrix @ (count, Σpx, Σpy, Σpx·py)``;
        # UL = x upper / y lower. From w_upper = (p + c) / cs, w_lower = 1 - w_upper.
        c, s1, s2 = self.offset, 1.0 / cs, 1.0 / (cs * cs)
        sa = [c * s1, s1, 0.0, 0.0]  # Σ w_upper_x
        sb = [c * s1, 0.0, s1, 0.0]  # Σ w_upper_y
        sab = [c * c * s2, c * s2, c * s2, s2]  # Σ w_upper_x w_upper_y
        one = [1.0, 0.0, 0.0, 0.0]
        corner = [
            [o - a - b + ab for o, a, b, ab in zip(one, sa, sb, sab)],
            [a - ab for a, ab in zip(sa, sab)],
            [b - ab for b, ab in zip(sb, sab)],
            sab,
        ]
        self.corner_matrix = torch.tensor(corner, dtype=torch.float64).to(torch.float32).to(device)
        self.buffers: Dict[int, Tuple[torch.Tensor, ...]] = {}

    def _buffers(self, n: int, device: torch.device, reuse: bool) -> Tuple:
        if reuse and n in self.buffers:
            return self.buffers[n]
        # per image a table of (blocks × 58) packed moments; invalid pixels (value 0) all go to one
        # dump region after the n tables, so the n tables stay one contiguous block.
        dump = n * self.table_size
        offsets = torch.arange(n, dtype=torch.long, device=device)[:, None] * self.table_size
        base = torch.where(self.valid[None], self.base[None] + offsets, torch.full_like(offsets, dump))
        bufs = (
            torch.empty((n, self.height * self.width), dtype=torch.float32, device=device),  # gray
            torch.empty((n, self.length), dtype=torch.int32, device=device),  # code, then index
            torch.empty((n, self.length), dtype=torch.float32, device=device),  # code (float)
            torch.empty((n, self.length), dtype=torch.float32, device=device),  # one bit (float)
            torch.empty((self.num_words, dump + NUM_BINS), dtype=torch.long, device=device),  # tables
            base.to(torch.int32).contiguous(),
            [v.expand(n, -1).reshape(-1) if n > 1 else v for v in self.values],
            torch.empty((4, dump), dtype=torch.float32, device=device),  # decoded moments
            torch.empty((dump,), dtype=torch.int32, device=device),  # decode scratch
        )
        if reuse:
            self.buffers[n] = bufs
        return bufs

    def run(self, images: torch.Tensor, reuse: bool) -> torch.Tensor:
        """``(n, 3|1, H, W)`` → ``(n, 58, rows, cols)``."""
        n = images.shape[0]
        gray, index, code_f, bit_f, tables, base, values, moments, scratch = self._buffers(n, images.device, reuse)
        _gray_into(images.reshape(n, images.shape[1], -1), gray)
        w, s, L = self.width, self.start, self.length
        centre = gray[:, s : s + L]
        for k, (dx, dy) in enumerate(NEIGHBOURS):
            off = s + dy * w + dx
            # bit k = [neighbour > centre] (strict, VLFeat's test). Comparisons written as float
            # 0/1 vectorise far better than bool outputs; the 8-bit code is accumulated in float
            # (exact: integers < 256).
            if k == 0:
                torch.gt(gray[:, off : off + L], centre, out=code_f)
            else:
                torch.gt(gray[:, off : off + L], centre, out=bit_f)
                code_f.add_(bit_f, alpha=float(1 << k))
        index.copy_(code_f)
        codes = bit_f.view(torch.int32)
        torch.index_select(self.mapping, 0, index.view(-1), out=codes.view(-1))  # 256 → 58 bins
        torch.add(codes, base, out=index)  # + (image, block) offset
        tables.zero_()
        flat_index = index.view(-1)
        for word, table in enumerate(tables):
            table.index_add_(0, flat_index, values[word])
        return self._finish(tables, moments, scratch, n)

    def _finish(self, tables: torch.Tensor, moments: torch.Tensor, scratch: torch.Tensor, n: int) -> torch.Tensor:
        rows, cols = self.rows, self.cols
        size = n * self.table_size
        halves = tables[:, :size].view(torch.int32).view(self.num_words, size, 2)
        for h, fields in enumerate(self.halves):
            half = halves[h // 2, :, h % 2]
            for i, (moment, shift, bits) in enumerate(fields):
                field = torch.bitwise_right_shift(half, shift, out=scratch) if shift else half
                if i + 1 < len(fields):  # the last field of a half has only zeros above it
                    field = torch.bitwise_and(field, (1 << bits) - 1, out=scratch)
                moments[moment].copy_(field)  # int32 → float32, exact
        corners = torch.matmul(self.corner_matrix, moments).view(4, n, rows + 1, cols + 1, NUM_BINS)
        ll, ul, lu, uu = corners
        hist = ll[:, 1:, 1:] + ul[:, 1:, :-1]
        hist += lu[:, :-1, 1:]
        hist += uu[:, :-1, :-1]  # (n, rows, cols, 58)
        hist = hist.clamp_(min=0.0).permute(0, 3, 1, 2)
        norm = hist.sum(dim=1, keepdim=True).sqrt_().add_(1e-10)
        return hist.sqrt_().div_(norm)


def lbp_histograms(
    images: torch.Tensor, cell_size: int = 16, cells: str = "ceil", _plans: Dict | None = None
) -> torch.Tensor:
    """Normalised uniform-LBP cell histograms → ``(N, 58, rows, cols)`` float32.

    ``images`` is ``(N, 3, H, W)`` RGB (converted with :func:`rgb_to_gray`) or ``(N, 1, H, W)`` /
    ``(N, H, W)`` gray. On CPU the images are processed one at a time with cached buffers (keeps
    the working set in cache and avoids page faults); on CUDA the whole batch at once.
    """
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images.float()
    n, _, height, width = images.shape
    device = images.device
    rows, cols = _cell_counts(height, width, cell_size, cells)
    if rows == 0 or cols == 0 or height < 3 or width < 3 or n == 0:
        return torch.zeros((n, NUM_BINS, rows, cols), dtype=torch.float32, device=device)
    key = (height, width, cell_size, rows, cols, str(device))
    plans = {} if _plans is None else _plans
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _Plan(height, width, cell_size, rows, cols, device)
    if device.type == "cpu":
        out = torch.empty((n, NUM_BINS, rows, cols), dtype=torch.float32)
        for i in range(0, n, CPU_CHUNK):
            out[i : i + CPU_CHUNK] = plan.run(images[i : i + CPU_CHUNK], reuse=_plans is not None)
        return out
    return plan.run(images, reuse=False).contiguous()


_MAPPINGS: Dict[str, torch.Tensor] = {}


def _mapping_on(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _MAPPINGS:
        _MAPPINGS[key] = uniform_mapping().long().to(device)
    return _MAPPINGS[key]


def _cell_counts(height: int, width: int, cell_size: int, cells: str) -> Tuple[int, int]:
    if cells == "ceil":
        return math.ceil(height / cell_size), math.ceil(width / cell_size)
    if cells == "floor":
        return height // cell_size, width // cell_size
    raise ValueError(f"cells must be 'ceil' or 'floor', got {cells!r}")


@register("lbp")
class LBP(Representation):
    """Uniform LBP histograms (VLFeat ``vl_lbp``), output ``(N, 58, ceil(H/cell), ceil(W/cell))``."""

    family = "lbp"

    @classmethod
    def decoder_kind(cls, feature_shape) -> str:
        """Supplementary Table 5."""
        return "two_stream"

    name = "lbp"
    differentiable = False
    sparse = False

    def __init__(self, cell_size: int = 16, cells: str = "ceil", **params) -> None:
        super().__init__(cell_size=int(cell_size), cells=cells, **params)
        if int(cell_size) < 1:
            raise ValueError("cell_size must be >= 1")
        _cell_counts(1, 1, 1, cells)  # validate
        self.cell_size = int(cell_size)
        self.cells = cells
        self._plans: Dict = {}

    def output_shape(self, height: int, width: int) -> Tuple[int, ...]:
        rows, cols = _cell_counts(height, width, self.cell_size, self.cells)
        return (NUM_BINS, rows, cols)

    @torch.no_grad()
    def compute(self, images: torch.Tensor) -> torch.Tensor:
        return lbp_histograms(images, self.cell_size, self.cells, self._plans)

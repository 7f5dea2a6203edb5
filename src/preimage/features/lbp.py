"""Uniform local binary patterns, VLFeat flavour (paper §2: "LBP", 16×16×58 at 256 px).

A vectorised re-implementation of VLFeat 0.9.21's ``vl_lbp_process`` with the ``VlLbpUniform``
mapping (the paper computed LBP with VLFeat): NumPy on CPU, PyTorch on other devices (CUDA).
``bench/bench_lbp.py`` times it against ``vl_lbp`` (``docs/speed-lbp.md``).

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

How it is computed (:class:`_Plan`)
-----------------------------------
On CPU the per-pixel work runs in NumPy, one image at a time in buffers the plan keeps (small
arrays, little per-call cost); on other devices (CUDA) the same steps run in PyTorch on the whole
batch. The image is processed *flattened*: pixel ``p = y W + x`` is compared with ``p + dy W + dx``
for ``p`` in ``[W + 1, H W - W - 1)``, so every operation runs on contiguous 1-D runs (the two
border columns wrap round and are masked out).

* Codes. The 8 comparisons write 0/1 bytes into eight rows; read eight bytes at a time as one
  ``uint64``, three shift-and-or steps fold the rows into one row of 8-bit codes (bit ``k`` of each
  byte from row ``k``), and one table look-up gives each code's bin.
* Moments instead of weights. A pixel's bilinear footprint is fixed by its *block*: the
  ``cell × cell`` pixels that share the lower cell ``(ky, kx)`` (in a grid padded by one guard cell
  before the first cell). Inside a block the weights are affine in the pixel's position
  ``(px, py)``: ``w_upper_x = (px + c) / cell``, ``w_lower_x = 1 - w_upper_x`` (same in y). So the
  four corner sums of a block and bin follow exactly from four integer moments (count, Σpx, Σpy,
  Σpx·py). They sit in the 16-bit lanes of one ``int64`` per pixel (32-bit lanes in two words above
  16-pixel cells), a constant of the plan, and one integer scatter-add keyed by ``(bin, block)``
  sums them; the lanes never carry into each other because every moment's bound over a block fits
  its lane. Integer sums are exact and do not depend on the summation order (on CUDA too).
* Pooling. A ``4 × 4`` matrix turns each block's moments into its four corner sums, which shifted
  adds over the flat block grid collect into the cells they belong to; then the normalisation.
"""

from __future__ import annotations

import math
import sys
from typing import Dict, Tuple

import numpy as np

from preimage.deferred import torch
from preimage.features.base import Representation, register

NUM_BINS = 58
CONSTANT_BIN = 56
OTHER_BIN = 57
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
CPU_CHUNK = 4  # images whose per-block tables are pooled together on CPU

# (dx, dy) of the neighbour that sets bit k (image y points down), VLFeat's order.
NEIGHBOURS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))

# Which moment (0 count, 1 Σpx, 2 Σpy, 3 Σpx·py) fills each lane of the packed words, low lane of
# the first word first: the count, the smallest, takes the top lane, so no word reaches the sign bit.
LANE_ORDER = (3, 1, 2, 0)


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
    formulation, used by the tests; :class:`_Plan` uses the flattened equivalent)."""
    n, h, w = gray.shape
    centre = gray[:, 1 : h - 1, 1 : w - 1]
    code = torch.zeros((n, h - 2, w - 2), dtype=torch.uint8, device=gray.device)
    for k, (dx, dy) in enumerate(NEIGHBOURS):
        neighbour = gray[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
        code.add_(torch.gt(neighbour, centre).view(torch.uint8), alpha=1 << k)
    return code


def _lane_bits(cell_size: int) -> int:
    """Width of the moment lanes: 16 bits up to 16-pixel cells, else 32. Each moment's largest sum
    over a block (``cell²`` pixels) must fit its lane, and each word's top lane must stay below the
    sign bit."""
    cs = cell_size
    bounds = (cs * cs, cs * cs * (cs - 1), cs * cs * (cs - 1), cs * cs * (cs - 1) ** 2)
    for bits in (16, 32):
        per_word = 64 // bits
        tops = [bounds[LANE_ORDER[lane]] for lane in range(per_word - 1, 4, per_word)]
        if max(bounds) < 1 << bits and max(tops) < 1 << (bits - 1):
            return bits
    raise ValueError(f"cell_size {cell_size} too large for the packed LBP accumulation (at most 256)")


class _Plan:
    """Everything that depends only on ``(H, W, cell_size, rows, cols)``, and reusable buffers (so
    a plan serves one caller at a time).

    ``bin_offset[code] + block_index[p]`` is pixel ``p``'s entry in a ``(58, blocks)`` table, and
    ``weights[:, p]`` its packed moments (zero for the masked-out border columns, the pixels beyond
    the last cell and the padding up to a multiple of 8 pixels).
    """

    def __init__(self, height: int, width: int, cell_size: int, rows: int, cols: int):
        self.height, self.width, self.rows, self.cols = height, width, rows, cols
        cs = cell_size
        self.start = width + 1
        self.length = height * width - 2 * width - 2
        self.padded = -(-self.length // 8) * 8
        self.blocks = (rows + 1) * (cols + 1)
        self.table_size = NUM_BINS * self.blocks
        self.lane_bits = _lane_bits(cs)
        self.lanes_per_word = 64 // self.lane_bits
        self.num_words = 4 // self.lanes_per_word

        origin = math.ceil(-cs / 2 - 0.5)  # first pixel of block 0 (lower cell -1), x and y alike
        offset = origin + 0.5 + cs / 2  # w_upper = (position in block + offset) / cs
        y, x = np.divmod(np.arange(self.start, self.start + self.length), width)
        ky, py = np.divmod(y - origin, cs)
        kx, px = np.divmod(x - origin, cs)
        valid = (x >= 1) & (x <= width - 2) & (ky <= rows) & (kx <= cols)
        self.block_index = np.zeros(self.padded, dtype=np.int64)
        self.block_index[: self.length] = np.where(valid, ky * (cols + 1) + kx, 0)
        self.bin_offset = uniform_mapping().numpy().astype(np.int64) * self.blocks  # code → bin's first entry
        moments = (np.ones_like(px), px, py, px * py)
        self.weights = np.zeros((self.num_words, self.padded), dtype=np.int64)
        for lane, moment in enumerate(LANE_ORDER):
            shift = self.lane_bits * (lane % self.lanes_per_word)
            self.weights[lane // self.lanes_per_word, : self.length] += np.where(valid, moments[moment], 0) << shift

        # corner sums (LL, UL, LU, UU) of a block = ``corner_matrix @`` its moments in LANE_ORDER;
        # UL = x upper / y lower. From w_upper = (p + c) / cs, w_lower = 1 - w_upper.
        c, s1, s2 = offset, 1.0 / cs, 1.0 / (cs * cs)
        sa = [c * s1, s1, 0.0, 0.0]  # Σ w_upper_x per (count, Σpx, Σpy, Σpx·py)
        sb = [c * s1, 0.0, s1, 0.0]  # Σ w_upper_y
        sab = [c * c * s2, c * s2, c * s2, s2]  # Σ w_upper_x w_upper_y
        one = [1.0, 0.0, 0.0, 0.0]
        corner = np.array(
            [
                [o - a - b + ab for o, a, b, ab in zip(one, sa, sb, sab)],
                [a - ab for a, ab in zip(sa, sab)],
                [b - ab for b, ab in zip(sb, sab)],
                sab,
            ]
        )
        self.corner_matrix = corner[:, list(LANE_ORDER)].astype(np.float32)  # columns by lane
        # the same for the lanes as laid out in memory: an int64's low half comes last on big-endian
        per_word = self.lanes_per_word
        in_memory = [
            lane if sys.byteorder == "little" else lane + per_word - 1 - 2 * (lane % per_word) for lane in range(4)
        ]
        self.memory_matrix = np.ascontiguousarray(self.corner_matrix[:, in_memory])
        self._cpu: Tuple | None = None
        self._chunks: Dict[int, Tuple] = {}
        self._devices: Dict[str, Tuple[torch.Tensor, ...]] = {}

    # ----------------------------------------------------------------- CPU (NumPy), image by image
    def run_cpu(self, images: torch.Tensor, out: torch.Tensor) -> None:
        """``(n, 3|1, H, W)`` CPU float32 → ``out`` ``(n, 58, rows, cols)``. Every buffer is the plan's
        own and reused: fresh large arrays would each cost a page fault per 4 KiB on first touch."""
        n = images.shape[0]
        tables, lanes, moments, corners, norm = self._chunk_buffers(n)
        tables.zero_()
        for image, table in zip(images, tables):
            self._accumulate_cpu(image, table)
        np.copyto(moments, lanes, casting="unsafe")  # exact up to 64-px cells
        self._pool(np, self.memory_matrix, moments.T, corners, norm, out.numpy())

    def _chunk_buffers(self, n: int) -> Tuple:
        if n not in self._chunks:
            # per image a (58 * blocks, words) table: the lanes of an entry are consecutive in memory
            tables = torch.empty((n, self.table_size, self.num_words), dtype=torch.int64)
            lanes = tables.numpy().view(f"u{self.lane_bits // 8}").reshape(n * self.table_size, 4)
            self._chunks[n] = (
                tables,
                lanes,
                np.empty((n * self.table_size, 4), dtype=np.float32),  # moments
                np.empty((4, n * self.table_size), dtype=np.float32),  # corner sums
                np.empty((n, self.rows, self.cols), dtype=np.float32),  # cell norms
            )
        return self._chunks[n]

    def _cpu_buffers(self) -> Tuple:
        if self._cpu is None:
            words = self.padded // 8
            self._cpu = (
                torch.empty((1, self.height * self.width), dtype=torch.float32),  # gray
                np.zeros((8, self.padded), dtype=np.bool_),  # one row of 0/1 bytes per neighbour
                np.empty((4, words), dtype=np.uint64),  # folding scratch
                np.empty((2, words), dtype=np.uint64),
                np.empty(words, dtype=np.uint64),  # the codes, 8 per word
                torch.empty(words * 8, dtype=torch.int32),  # the codes as look-up indices
                torch.from_numpy(self.bin_offset),
                np.empty(self.padded, dtype=np.int64),  # table index
                torch.from_numpy(self.weights),
            )
        return self._cpu

    def _accumulate_cpu(self, image: torch.Tensor, table: torch.Tensor) -> None:
        """Add one ``(3|1, H, W)`` image's packed moments into ``table`` ``(58 * blocks, words)``."""
        gray_tensor, bits, fold4, fold2, codes, code_index, bin_offset, index, weights = self._cpu_buffers()
        if image.shape[0] == 1 and image.is_contiguous():  # already gray: read it in place
            gray = image.numpy().reshape(-1)
        else:
            _gray_into(image.reshape(1, image.shape[0], -1), gray_tensor)
            gray = gray_tensor.numpy()[0]
        w, s, length = self.width, self.start, self.length
        centre = gray[s : s + length]
        for k, (dx, dy) in enumerate(NEIGHBOURS):
            off = s + dy * w + dx
            np.greater(gray[off : off + length], centre, out=bits[k, :length])  # strict, as VLFeat
        rows = bits.view(np.uint64)  # byte j of word i of row k: bit k of pixel 8 i + j
        np.left_shift(rows[4:], np.uint64(4), out=fold4)
        np.bitwise_or(fold4, rows[:4], out=fold4)
        np.left_shift(fold4[2:], np.uint64(2), out=fold2)
        np.bitwise_or(fold2, fold4[:2], out=fold2)
        np.left_shift(fold2[1], np.uint64(1), out=codes)
        np.bitwise_or(codes, fold2[0], out=codes)
        code_index.copy_(torch.from_numpy(codes.view(np.uint8)))
        torch.index_select(bin_offset, 0, code_index, out=torch.from_numpy(index))  # faster than np.take
        np.add(index, self.block_index, out=index)
        flat_index = torch.from_numpy(index)
        for word in range(self.num_words):  # scatter_add_ runs faster than index_add_ on CPU
            table[:, word].scatter_add_(0, flat_index, weights[word])

    # -------------------------------------------------------------- any device (PyTorch), batched
    def run_torch(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 3|1, H, W)`` float32 on any device → ``(n, 58, rows, cols)`` (the CUDA path)."""
        n, device = images.shape[0], images.device
        bin_offset, block_index, weights, matrix = self._on(device)
        w, s, length = self.width, self.start, self.length
        gray = torch.empty((n, self.height * w), dtype=torch.float32, device=device)
        _gray_into(images.reshape(n, images.shape[1], -1), gray)
        centre = gray[:, s : s + length]
        codes = torch.zeros((n, length), dtype=torch.int64, device=device)
        for k, (dx, dy) in enumerate(NEIGHBOURS):
            off = s + dy * w + dx
            codes.bitwise_or_(torch.gt(gray[:, off : off + length], centre).to(torch.int64) << k)
        images_offset = torch.arange(n, device=device)[:, None] * self.table_size
        index = (bin_offset[codes] + block_index[: length] + images_offset).view(-1)
        tables = torch.zeros((self.num_words, n * self.table_size), dtype=torch.int64, device=device)
        for word in range(self.num_words):
            tables[word].index_add_(0, index, weights[word, :length].expand(n, length).reshape(-1))
        mask = (1 << self.lane_bits) - 1
        moments = torch.stack(
            [
                (tables[lane // self.lanes_per_word] >> (self.lane_bits * (lane % self.lanes_per_word))) & mask
                for lane in range(4)
            ]
        ).to(torch.float32)
        out = torch.empty((n, NUM_BINS, self.rows, self.cols), dtype=torch.float32, device=device)
        corners = torch.empty_like(moments)
        norm = torch.empty((n, self.rows, self.cols), dtype=torch.float32, device=device)
        self._pool(torch, matrix, moments, corners, norm, out)
        return out

    def _on(self, device: torch.device) -> Tuple[torch.Tensor, ...]:
        key = str(device)
        if key not in self._devices:
            constants = (self.bin_offset, self.block_index, self.weights, self.corner_matrix)
            self._devices[key] = tuple(torch.from_numpy(a).to(device) for a in constants)
        return self._devices[key]

    # ---------------------------------------------------------------------------------- shared
    def _pool(self, lib, matrix, moments, corners, norm, hist) -> None:
        """Moments ``(4, n * 58 * blocks)`` (rows in the order of ``matrix``'s columns) → normalised
        histograms in ``hist`` ``(n, 58, rows, cols)``; ``corners`` (as moments) and ``norm``
        ``(n, rows, cols)`` are scratch. ``lib`` is ``numpy`` or ``torch``, the kind of all the arrays:
        the same calls for both (on CPU NumPy's per-call cost is a fraction of PyTorch's)."""
        n, rows, cols = hist.shape[0], self.rows, self.cols
        # torch computes the product for NumPy arrays too: NumPy would hand it to a BLAS whose
        # thread pool ignores torch.set_num_threads.
        tensor = torch.from_numpy if lib is np else torch.as_tensor
        torch.matmul(tensor(matrix), tensor(moments), out=tensor(corners))
        ll, ul, lu, uu = corners
        # Cell (cy, cx) gets LL of block (cy + 1, cx + 1), UL of (cy + 1, cx), LU of (cy, cx + 1) and
        # UU of (cy, cx): flat offsets cols + 2, cols + 1, 1 and 0 from its own entry in the
        # (rows + 1) × (cols + 1) block grid, summed into UU over whole flat runs (the sums that wrap
        # across rows, bins or images land in entries that are never read).
        step = cols + 1
        m = uu.shape[0] - step - 1
        lib.add(uu[:m], lu[1 : m + 1], out=uu[:m])
        lib.add(uu[:m], ul[step : step + m], out=uu[:m])
        lib.add(uu[:m], ll[step + 1 :], out=uu[:m])
        grid = uu.reshape(n, NUM_BINS, rows + 1, cols + 1)[..., :rows, :cols]
        lib.abs(grid, out=hist)  # exact sums are >= 0; rounding can leave -1e-7 where one is ~0
        lib.sum(hist, 1, out=norm)
        lib.sqrt(norm, out=norm)
        lib.add(norm, 1e-10, out=norm)
        lib.sqrt(hist, out=hist)
        lib.divide(hist, norm[:, None], out=hist)


def lbp_histograms(
    images: torch.Tensor, cell_size: int = 16, cells: str = "ceil", _plans: Dict | None = None
) -> torch.Tensor:
    """Normalised uniform-LBP cell histograms → ``(N, 58, rows, cols)`` float32.

    ``images`` is ``(N, 3, H, W)`` RGB (converted with :func:`rgb_to_gray`) or ``(N, 1, H, W)`` /
    ``(N, H, W)`` gray. On CPU the pixels are processed one image at a time (keeps the working set
    in cache) and the small per-block tables :data:`CPU_CHUNK` images at a time; on other devices
    the whole batch at once. ``_plans`` (a dict the caller keeps) caches each image size's plan
    and buffers between calls.
    """
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images.detach().float()
    n, _, height, width = images.shape
    device = images.device
    rows, cols = _cell_counts(height, width, cell_size, cells)
    if rows == 0 or cols == 0 or height < 3 or width < 3 or n == 0:
        return torch.zeros((n, NUM_BINS, rows, cols), dtype=torch.float32, device=device)
    key = (height, width, cell_size, rows, cols)
    plans = {} if _plans is None else _plans
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _Plan(height, width, cell_size, rows, cols)
    if device.type != "cpu":
        return plan.run_torch(images)
    out = torch.empty((n, NUM_BINS, rows, cols), dtype=torch.float32)
    for i in range(0, n, CPU_CHUNK):
        plan.run_cpu(images[i : i + CPU_CHUNK], out[i : i + CPU_CHUNK])
    return out


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

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return lbp_histograms(images, self.cell_size, self.cells, self._plans)

"""ctypes binding to VLFeat's LBP (``vl_lbp_new`` / ``vl_lbp_process``), the paper's LBP reference.

``vl_lbp_process`` expects a row-major ``float`` image of ``width x height`` (``image[y*width+x]``)
and writes ``dimension x floor(height/cell) x floor(width/cell)`` values, i.e. for a row-major
image the buffer is already ``(58, rows, cols)`` in C order. It *accumulates* into the buffer
(``+=``) before normalising, so the buffer must be zeroed first (MATLAB's ``vl_lbp`` gets a zeroed
``mxArray``). ``transposed`` is for column-major callers (MATLAB); with a row-major image we pass
``transposed=False`` so the bit order is VLFeat's documented one (bit 0 = E, 1 = SE, 2 = S, ...,
7 = NE, image y pointing down) and the channel order is VLFeat's bin order.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from preimage.reference.vlfeat import load_library

VL_LBP_UNIFORM = 0  # VlLbpMappingType.VlLbpUniform


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = load_library()
    lib.vl_lbp_new.restype = ctypes.c_void_p
    lib.vl_lbp_new.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.vl_lbp_delete.restype = None
    lib.vl_lbp_delete.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_get_dimension.restype = ctypes.c_uint64
    lib.vl_lbp_get_dimension.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_process.restype = None
    lib.vl_lbp_process.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_uint64,
        ctypes.c_uint64,
        ctypes.c_uint64,
    ]
    return lib


class VLFeatLBP:
    """A reusable ``VlLbp`` object (uniform mapping). Use as a context manager or call :meth:`close`."""

    def __init__(self, transposed: bool = False) -> None:
        self._lib = _lib()
        self._handle = self._lib.vl_lbp_new(VL_LBP_UNIFORM, int(bool(transposed)))
        if not self._handle:
            raise MemoryError("vl_lbp_new failed")
        self.dimension = int(self._lib.vl_lbp_get_dimension(self._handle))

    def mapping(self) -> np.ndarray:
        """VLFeat's 256 → bin table (read from the ``VlLbp`` struct: ``vl_size dimension; vl_uint8 mapping[256]``)."""
        raw = ctypes.string_at(self._handle + ctypes.sizeof(ctypes.c_uint64), 256)
        return np.frombuffer(raw, dtype=np.uint8).copy()

    def __call__(self, gray: np.ndarray, cell_size: int = 16, out: np.ndarray | None = None) -> np.ndarray:
        """LBP histograms of one grayscale image ``(H, W)`` → ``(58, H // cell, W // cell)`` float32."""
        image = np.ascontiguousarray(gray, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
        height, width = image.shape
        shape = (self.dimension, height // cell_size, width // cell_size)
        if out is None:
            out = np.zeros(shape, dtype=np.float32)
        else:
            if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
            out.fill(0.0)
        if shape[1] == 0 or shape[2] == 0:
            return out
        self._lib.vl_lbp_process(
            self._handle,
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            image.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            width,
            height,
            cell_size,
        )
        return out

    def close(self) -> None:
        if self._handle:
            self._lib.vl_lbp_delete(self._handle)
            self._handle = None

    def __enter__(self) -> "VLFeatLBP":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def vlfeat_lbp(gray: np.ndarray, cell_size: int = 16) -> np.ndarray:
    """One-shot: VLFeat uniform LBP of a row-major grayscale image → ``(58, H // cell, W // cell)``."""
    with VLFeatLBP() as lbp:
        return lbp(gray, cell_size)


def vlfeat_lbp_mapping() -> np.ndarray:
    """VLFeat's uniform 256 → 58 mapping (non-transposed), as used by :func:`vlfeat_lbp`."""
    with VLFeatLBP() as lbp:
        return lbp.mapping()

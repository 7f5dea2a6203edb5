"""ctypes binding to VLFeat's HOG (``vl/hog.h``, VLFeat 0.9.21, ``libvl.so.1``).

Reference for :mod:`preimage.features.hog`; used by the tests and ``bench/bench_hog.py`` only.

C API used (from ``vl/hog.h``; ``vl_size`` is ``size_t`` and ``vl_bool`` is ``int`` on LP64)::

    VlHog *vl_hog_new(VlHogVariant variant, vl_size numOrientations, vl_bool transposed);
    void   vl_hog_put_image(VlHog *, float const *image, vl_size width, vl_size height,
                            vl_size numChannels, vl_size cellSize);
    vl_size vl_hog_get_width(VlHog *), vl_hog_get_height(VlHog *), vl_hog_get_dimension(VlHog const *);
    void   vl_hog_extract(VlHog *, float *features);
    void   vl_hog_delete(VlHog *);

Memory layouts (``transposed = VL_FALSE``): the image is read as ``image[x + y*width + c*width*height]``,
i.e. a C-contiguous ``(numChannels, height, width)`` array (row-major, ``x`` fastest) -- exactly a
C-contiguous ``numpy`` ``(H, W)`` array for one channel. The features are written as
``features[x + y*hogWidth + k*hogWidth*hogHeight]``, i.e. a C-contiguous ``(dimension, hogHeight,
hogWidth)`` array. For the UoCTTI variant with 9 orientations the 31 channels are
``0..17`` contrast-sensitive (directed) orientations ``k*pi/9``, ``18..26`` contrast-insensitive,
``27..30`` the four texture (energy) terms -- the same order as :func:`preimage.features.hog.hog`.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from preimage.reference.vlfeat import VLFeatUnavailable, available, load_library

VL_HOG_VARIANT_DALAL_TRIGGS = 0
VL_HOG_VARIANT_UOCTTI = 1

__all__ = ["vl_hog", "available", "VLFeatUnavailable", "VL_HOG_VARIANT_UOCTTI"]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = load_library()
    vp, sz, fp = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_float)
    lib.vl_hog_new.argtypes = [ctypes.c_int, sz, ctypes.c_int]
    lib.vl_hog_new.restype = vp
    lib.vl_hog_put_image.argtypes = [vp, fp, sz, sz, sz, sz]
    lib.vl_hog_put_image.restype = None
    for name in ("vl_hog_get_width", "vl_hog_get_height", "vl_hog_get_dimension"):
        getattr(lib, name).argtypes = [vp]
        getattr(lib, name).restype = sz
    lib.vl_hog_extract.argtypes = [vp, fp]
    lib.vl_hog_extract.restype = None
    lib.vl_hog_delete.argtypes = [vp]
    lib.vl_hog_delete.restype = None
    lib.vl_hog_set_use_bilinear_orientation_assignments.argtypes = [vp, ctypes.c_int]
    lib.vl_hog_set_use_bilinear_orientation_assignments.restype = None
    return lib


def _check_size(height: int, width: int, cell_size: int) -> None:
    # VLFeat asserts these (a failed C assert would abort the interpreter, so check here).
    if width <= 3 or height <= 3 or (width + cell_size // 2) // cell_size < 1 or (height + cell_size // 2) // cell_size < 1:
        raise ValueError(f"image {height}x{width} too small for VLFeat HOG with cell size {cell_size}")


def vl_hog(gray: np.ndarray, cell_size: int = 8, num_orientations: int = 9, bilinear: bool = False) -> np.ndarray:
    """VLFeat's UoCTTI HOG of one single-channel image.

    ``gray``: ``(H, W)`` array (converted to C-contiguous float32; the values are passed through
    unchanged, so feed the same scale as the PyTorch implementation, e.g. ``[0, 1]``).
    Returns a float32 ``(3*num_orientations + 4, hogH, hogW)`` array with
    ``hogH = (H + cell_size//2) // cell_size`` (VLFeat's cell count), channel order as VLFeat.
    ``bilinear`` switches on VLFeat's bilinear orientation assignment
    (``vl_hog_set_use_bilinear_orientation_assignments``), the HOGb of :mod:`preimage.features.hogb`.
    """
    lib = _lib()
    img = np.ascontiguousarray(gray, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img.shape}")
    height, width = img.shape
    _check_size(height, width, cell_size)
    handle = lib.vl_hog_new(VL_HOG_VARIANT_UOCTTI, num_orientations, 0)
    if not handle:
        raise MemoryError("vl_hog_new failed")
    try:
        lib.vl_hog_set_use_bilinear_orientation_assignments(handle, int(bool(bilinear)))
        fptr = ctypes.POINTER(ctypes.c_float)
        lib.vl_hog_put_image(handle, img.ctypes.data_as(fptr), width, height, 1, cell_size)
        hw = lib.vl_hog_get_width(handle)
        hh = lib.vl_hog_get_height(handle)
        dim = lib.vl_hog_get_dimension(handle)
        out = np.empty((dim, hh, hw), dtype=np.float32)
        lib.vl_hog_extract(handle, out.ctypes.data_as(fptr))
    finally:
        lib.vl_hog_delete(handle)
    return out


class VLHog:
    """A reusable VLFeat HOG object (avoids re-allocating per image; used by the benchmark)."""

    def __init__(self, cell_size: int = 8, num_orientations: int = 9) -> None:
        self._lib = _lib()
        self.cell_size = cell_size
        self._handle = self._lib.vl_hog_new(VL_HOG_VARIANT_UOCTTI, num_orientations, 0)
        self._fptr = ctypes.POINTER(ctypes.c_float)

    def __call__(self, gray: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        img = np.ascontiguousarray(gray, dtype=np.float32)
        height, width = img.shape
        _check_size(height, width, self.cell_size)
        self._lib.vl_hog_put_image(self._handle, img.ctypes.data_as(self._fptr), width, height, 1, self.cell_size)
        shape = (
            self._lib.vl_hog_get_dimension(self._handle),
            self._lib.vl_hog_get_height(self._handle),
            self._lib.vl_hog_get_width(self._handle),
        )
        if out is None or out.shape != shape:
            out = np.empty(shape, dtype=np.float32)
        self._lib.vl_hog_extract(self._handle, out.ctypes.data_as(self._fptr))
        return out

    def close(self) -> None:
        if self._handle:
            self._lib.vl_hog_delete(self._handle)
            self._handle = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

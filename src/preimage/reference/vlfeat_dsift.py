"""ctypes binding to VLFeat's dense SIFT (``vl/dsift.h``, VLFeat 0.9.21), the reference of
:mod:`preimage.features.dsift`.

Only ``vl_dsift_new_basic``, ``vl_dsift_process`` and ``vl_dsift_delete`` are exported by
``libvl.so``; the getters of ``vl/dsift.h`` are header-inline, so the number of frames, the
descriptor size and the descriptor buffer are read from the ``VlDsiftFilter`` struct, whose
layout below follows ``vl/dsift.h`` of VLFeat 0.9.21. ``vl_dsift_new_basic(W, H, step, binSize)``
is VLFeat's standard geometry (4×4 spatial bins, 8 orientations), Gaussian window
(``windowSize`` 2), bounds the whole image; the descriptors come in VLFeat's C layout
(``bint + 8·binx + 32·biny``), frames row by row (``y`` outer, ``x`` inner).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from preimage.reference.vlfeat import VLFeatUnavailable, available, load_library

__all__ = ["VLFeatUnavailable", "available", "vl_dsift"]


class _Geometry(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("numBinT", "numBinX", "numBinY", "binSizeX", "binSizeY")]


class _Keypoint(ctypes.Structure):
    _fields_ = [(name, ctypes.c_double) for name in ("x", "y", "s", "norm")]


class _DsiftFilter(ctypes.Structure):
    _fields_ = [
        ("imWidth", ctypes.c_int),
        ("imHeight", ctypes.c_int),
        ("stepX", ctypes.c_int),
        ("stepY", ctypes.c_int),
        ("boundMinX", ctypes.c_int),
        ("boundMinY", ctypes.c_int),
        ("boundMaxX", ctypes.c_int),
        ("boundMaxY", ctypes.c_int),
        ("geom", _Geometry),
        ("useFlatWindow", ctypes.c_int),
        ("windowSize", ctypes.c_double),
        ("numFrames", ctypes.c_int),
        ("descrSize", ctypes.c_int),
        ("frames", ctypes.POINTER(_Keypoint)),
        ("descrs", ctypes.POINTER(ctypes.c_float)),
        ("numBinAlloc", ctypes.c_int),
        ("numFrameAlloc", ctypes.c_int),
        ("numGradAlloc", ctypes.c_int),
        ("grads", ctypes.POINTER(ctypes.POINTER(ctypes.c_float))),
        ("convTmp1", ctypes.POINTER(ctypes.c_float)),
        ("convTmp2", ctypes.POINTER(ctypes.c_float)),
    ]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = load_library()
    handle = ctypes.POINTER(_DsiftFilter)
    lib.vl_dsift_new_basic.argtypes = [ctypes.c_int] * 4
    lib.vl_dsift_new_basic.restype = handle
    lib.vl_dsift_process.argtypes = [handle, ctypes.POINTER(ctypes.c_float)]
    lib.vl_dsift_process.restype = None
    lib.vl_dsift_delete.argtypes = [handle]
    lib.vl_dsift_delete.restype = None
    return lib


def vl_dsift(gray: np.ndarray, step: int, bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    """VLFeat's dense SIFT of one ``(H, W)`` grey image (float32, values passed unchanged).

    Returns ``(frames, descriptors)``: ``frames`` float64 ``(K, 2)`` the ``(x, y)`` centres,
    ``descriptors`` float32 ``(K, 128)`` in VLFeat's C layout, frames ordered row by row.
    """
    img = np.ascontiguousarray(gray, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {img.shape}")
    height, width = img.shape
    if width - 1 < 3 * bin_size or height - 1 < 3 * bin_size:
        raise ValueError(f"image {height}x{width} too small for a 4x4-bin descriptor of bin size {bin_size}")
    lib = _lib()
    handle = lib.vl_dsift_new_basic(width, height, int(step), int(bin_size))
    if not handle:
        raise MemoryError("vl_dsift_new_basic failed")
    try:
        lib.vl_dsift_process(handle, img.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        filt = handle.contents
        count, size = filt.numFrames, filt.descrSize
        descriptors = np.ctypeslib.as_array(filt.descrs, shape=(count * size,)).reshape(count, size).copy()
        frames = np.array([(filt.frames[i].x, filt.frames[i].y) for i in range(count)], dtype=np.float64)
    finally:
        lib.vl_dsift_delete(handle)
    return frames, descriptors

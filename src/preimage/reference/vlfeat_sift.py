"""ctypes binding to VLFeat's SIFT detector (``vl_sift_*``), the paper's SIFT reference.

Mirrors what MATLAB's ``vl_sift`` does with its defaults (first octave 0, 3 levels per octave,
octaves automatic, ``PeakThresh`` 0, ``EdgeThresh`` 10): ``vl_sift_process_first_octave`` /
``vl_sift_process_next_octave``, ``vl_sift_detect`` per octave and one frame per orientation from
``vl_sift_calc_keypoint_orientations``. The thresholds are set by writing the ``VlSiftFilt`` fields
directly (VLFeat's setters are header-inline, not exported), so the struct layout below follows
``vl/sift.h`` of VLFeat 0.9.21.

Frames are returned as ``(x, y, sigma, angle)``: 0-based pixel coordinates (pixel centres on
integers), ``sigma`` the Gaussian scale, ``angle`` in radians in ``[0, 2π)`` measured from the x
axis towards +y (image y points down), VLFeat's C convention.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from preimage.reference.vlfeat import load_library

VL_ERR_OK = 0


class VlSiftKeypoint(ctypes.Structure):
    _fields_ = [
        ("o", ctypes.c_int),
        ("ix", ctypes.c_int),
        ("iy", ctypes.c_int),
        ("is_", ctypes.c_int),
        ("x", ctypes.c_float),
        ("y", ctypes.c_float),
        ("s", ctypes.c_float),
        ("sigma", ctypes.c_float),
    ]


class VlSiftFilt(ctypes.Structure):
    _fields_ = [
        ("sigman", ctypes.c_double),
        ("sigma0", ctypes.c_double),
        ("sigmak", ctypes.c_double),
        ("dsigma0", ctypes.c_double),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("O", ctypes.c_int),
        ("S", ctypes.c_int),
        ("o_min", ctypes.c_int),
        ("s_min", ctypes.c_int),
        ("s_max", ctypes.c_int),
        ("o_cur", ctypes.c_int),
        ("temp", ctypes.POINTER(ctypes.c_float)),
        ("octave", ctypes.POINTER(ctypes.c_float)),
        ("dog", ctypes.POINTER(ctypes.c_float)),
        ("octave_width", ctypes.c_int),
        ("octave_height", ctypes.c_int),
        ("gaussFilter", ctypes.POINTER(ctypes.c_float)),
        ("gaussFilterSigma", ctypes.c_double),
        ("gaussFilterWidth", ctypes.c_size_t),
        ("keys", ctypes.POINTER(VlSiftKeypoint)),
        ("nkeys", ctypes.c_int),
        ("keys_res", ctypes.c_int),
        ("peak_thresh", ctypes.c_double),
        ("edge_thresh", ctypes.c_double),
        ("norm_thresh", ctypes.c_double),
        ("magnif", ctypes.c_double),
        ("windowSize", ctypes.c_double),
        ("grad", ctypes.POINTER(ctypes.c_float)),
        ("grad_o", ctypes.c_int),
    ]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = load_library()
    filt_p = ctypes.POINTER(VlSiftFilt)
    lib.vl_sift_new.restype = filt_p
    lib.vl_sift_new.argtypes = [ctypes.c_int] * 5
    lib.vl_sift_delete.restype = None
    lib.vl_sift_delete.argtypes = [filt_p]
    lib.vl_sift_process_first_octave.restype = ctypes.c_int
    lib.vl_sift_process_first_octave.argtypes = [filt_p, ctypes.POINTER(ctypes.c_float)]
    lib.vl_sift_process_next_octave.restype = ctypes.c_int
    lib.vl_sift_process_next_octave.argtypes = [filt_p]
    lib.vl_sift_detect.restype = None
    lib.vl_sift_detect.argtypes = [filt_p]
    lib.vl_sift_calc_keypoint_orientations.restype = ctypes.c_int
    lib.vl_sift_calc_keypoint_orientations.argtypes = [
        filt_p,
        ctypes.POINTER(ctypes.c_double),
        ctypes.POINTER(VlSiftKeypoint),
    ]
    return lib


def vlfeat_sift(
    gray: np.ndarray,
    peak_thresh: float = 0.0,
    edge_thresh: float = 10.0,
    levels: int = 3,
    first_octave: int = 0,
    octaves: int = -1,
    return_octaves: bool = False,
) -> np.ndarray:
    """Detect SIFT frames on a grayscale image ``(H, W)`` (values in ``[0, 255]`` as in MATLAB).

    Returns a float64 array ``(K, 4)`` of ``(x, y, sigma, angle)`` — or ``(K, 5)`` with the octave
    index appended when ``return_octaves``. ``octaves=-1`` lets VLFeat choose (as ``vl_sift``).

    Parameters
    ----------
    gray : numpy.ndarray
        The grayscale image ``(H, W)``, values in [0, 255].
    peak_thresh : float, default 0.0
        VLFeat's ``PeakThresh`` (contrast threshold of the DoG extrema).
    edge_thresh : float, default 10.0
        VLFeat's ``EdgeThresh`` (edge-response threshold).
    levels : int, default 3
        Scale levels per octave (``Levels``).
    first_octave : int, default 0
        Index of the first octave (``FirstOctave``; −1 upsamples the image 2×).
    octaves : int, default -1
        Number of octaves (−1: as many as the image allows, VLFeat's choice).
    return_octaves : bool, default False
        Append each frame's octave index as a fifth column.
    """
    lib = _lib()
    image = np.ascontiguousarray(gray, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    height, width = image.shape
    filt = lib.vl_sift_new(width, height, octaves, levels, first_octave)
    if not filt:
        raise MemoryError("vl_sift_new failed")
    frames = []
    try:
        filt.contents.peak_thresh = float(peak_thresh)
        filt.contents.edge_thresh = float(edge_thresh)
        angles = (ctypes.c_double * 4)()
        status = lib.vl_sift_process_first_octave(filt, image.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        while status == VL_ERR_OK:
            lib.vl_sift_detect(filt)
            nkeys = filt.contents.nkeys
            keys = filt.contents.keys
            for i in range(nkeys):
                key = keys[i]
                count = lib.vl_sift_calc_keypoint_orientations(filt, angles, ctypes.byref(key))
                for j in range(count):
                    frames.append((key.x, key.y, key.sigma, angles[j], key.o))
            status = lib.vl_sift_process_next_octave(filt)
    finally:
        lib.vl_sift_delete(filt)
    out = np.asarray(frames, dtype=np.float64).reshape(-1, 5)
    return out if return_octaves else out[:, :4]


def sift_available() -> bool:
    try:
        _lib()
        return True
    except Exception:
        return False


__all__ = ["vlfeat_sift", "sift_available", "VlSiftFilt", "VlSiftKeypoint"]

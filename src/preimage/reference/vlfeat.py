"""Locate and load VLFeat's shared library (``libvl.so``, Debian package ``libvlfeat1`` 0.9.21).

VLFeat is the library the paper used for HOG, SIFT and LBP. The per-feature bindings live in
``vlfeat_hog.py``, ``vlfeat_lbp.py`` and ``vlfeat_sift.py`` beside this file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Optional

_CANDIDATES = (
    "libvl.so.1",
    "libvl.so",
    "/usr/lib/x86_64-linux-gnu/libvl.so.1",
    "/usr/lib/aarch64-linux-gnu/libvl.so.1",
)


class VLFeatUnavailable(RuntimeError):
    """Raised when VLFeat's shared library cannot be loaded."""


@functools.lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """Return the loaded VLFeat library or raise :class:`VLFeatUnavailable` with how to install it."""
    env = os.environ.get("PREIMAGE_VLFEAT_LIB")
    names = ([env] if env else []) + list(_CANDIDATES)
    found: Optional[str] = ctypes.util.find_library("vl")
    if found:
        names.append(found)
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as err:
            errors.append(f"{name}: {err}")
    raise VLFeatUnavailable(
        "VLFeat's shared library (libvl.so) was not found; install it with "
        "`apt-get install libvlfeat1` or point PREIMAGE_VLFEAT_LIB at it. Tried: " + "; ".join(errors)
    )


def available() -> bool:
    try:
        load_library()
        return True
    except VLFeatUnavailable:
        return False

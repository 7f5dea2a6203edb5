"""``.pt`` files: read only through :func:`load_torch` (``torch.load(weights_only=True)``: tensors
and plain values, never pickled code), written atomically through :func:`save_torch`.

A file that is not what ``torch.save`` writes, or that cannot be read, raises
:class:`preimage.atomic_files.DamagedFile`; one whose unpickling would build other Python objects (and
could run code) raises :class:`UnsafeFile` before anything in it runs; a full disk raises
:class:`preimage.atomic_files.NoSpaceLeft` and leaves nothing behind.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

from preimage.atomic_files import DamagedFile, NoSpaceLeft, _remove, atomic_path, is_disk_full


class UnsafeFile(ValueError):
    """A ``.pt`` file holds pickled Python objects (which could run code when loaded), not only
    tensors and plain values."""


def save_torch(obj: Any, path: str | os.PathLike, tmp: Optional[str | os.PathLike] = None) -> None:
    """``torch.save`` atomically; a full disk raises :class:`NoSpaceLeft` and leaves nothing.

    Written through a Python file object so that a failed write keeps its errno (``torch.save``
    to a path reports only ``basic_ios::clear: iostream error``). ``tmp`` names the temporary
    (default: :func:`atomic_path`'s hidden name).
    """
    import torch

    if tmp is None:
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            torch.save(obj, handle)
        return
    final, tmp = Path(path), Path(tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
        os.replace(tmp, final)
    except BaseException as err:
        _remove(tmp)
        if is_disk_full(err):
            raise NoSpaceLeft(final) from err
        raise


def load_torch(path: str | os.PathLike, map_location: Any = "cpu", advice: str = "delete it and rerun") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, containers and plain values only.

    A file that does not start as ``torch.save`` writes (:func:`is_torch_file`) raises
    :class:`DamagedFile` before torch reads it; a file whose unpickling would build other Python
    objects (and could run code) is refused with :class:`UnsafeFile` before anything in it runs;
    any other failure to read it (truncated, garbled) raises :class:`DamagedFile`. ``advice`` ends
    every message, and no message repeats torch's suggestion to load with ``weights_only=False``.
    """
    import torch

    if not is_torch_file(path):
        raise DamagedFile(path, "not a file torch.save writes", advice)
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as err:
        # A pickle of other objects (or bytes that are no pickle torch writes): refused unread.
        raise UnsafeFile(f"refusing to load {path}: it is not only tensors and plain values, and unpickling the "
                         f"rest could run code{_unsafe_detail(str(err))}; {advice}") from None
    except Exception as err:  # noqa: BLE001 - torch's unpickler fails on garbled bytes with any error type
        raise DamagedFile(path, _torch_reason(err), advice) from None


def is_torch_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a file ``torch.save`` writes: a zip archive (``PK``), or a
    pickle of protocol 2 or later (the legacy format). Missing files raise ``FileNotFoundError``."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _unsafe_detail(text: str) -> str:
    """What torch's weights-only unpickler objected to (e.g. ``Unsupported global: GLOBAL io.open``)."""
    import re

    match = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S)
    detail = " ".join(match.group(1).split()) if match else ""
    detail = re.split(r" was not an allowed global|\. ", detail)[0][:200]
    return f" (weights-only unpickler: {detail})" if detail else ""


def _torch_reason(err: BaseException) -> str:
    """``err`` from ``torch.load`` in one line, without torch's advice on how to load the file
    unsafely (its sentences that mention ``weights_only``)."""
    import re

    text = " ".join(str(err).split())
    sentences = [s for s in re.split(r"(?<=\.) ", text) if "weights_only" not in s.lower()]
    reason = " ".join(sentences)[:300]
    if isinstance(err, (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError)) and reason:
        return reason  # torch's and zipfile's messages say what is wrong
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__  # KeyError: 101, IndexError …

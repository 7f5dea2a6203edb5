"""The checksummed HDF5 layer every store is written and read through.

Every dataset is created by :func:`create_dataset`: chunked, each chunk stored in a zlib stream
whose Adler-32 checksum HDF5 verifies whenever the chunk is read (:data:`ZLIB_LEVEL`; variable-length
strings, which HDF5 cannot filter, get a sha256 that :func:`read_strings` checks). A file is
written through :func:`create_h5` inside :func:`preimage.atomic_files.atomic_path`. Readers open files
through :func:`open_h5`, which refuses a dataset without a checksum and any whose data would come
from another file (external storage, a virtual dataset, an external link). Attributes hold the
parameters (as JSON, :func:`write_attrs`), the package version (:func:`provenance`) and whatever
identity the writer adds.

Failures are named (our choice, for users of a shared results folder):

* a store that cannot be opened or read raises :class:`preimage.atomic_files.DamagedFile`
  (``<path> is damaged (<h5py's reason>); delete it and rerun``; a changed byte reads
  ``checksum mismatch in dataset '<name>'``);
* HDF5 cannot close a file whose buffered data it failed to write (a full disk; it crashes the
  process when it tries again at exit), so :func:`create_h5` discards the unwritten data of an
  abandoned file instead, and the error (:class:`preimage.atomic_files.NoSpaceLeft` from
  :func:`~preimage.atomic_files.atomic_path`) reaches the caller.

The two kinds of store built on it: :mod:`preimage.image_store` and the feature cache
(:mod:`preimage.features.cache`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple

import h5py
import numpy as np

from preimage import __version__
from preimage.atomic_files import DamagedFile, NoSpaceLeft

#: zlib level of every dataset (:func:`create_dataset`): 0 stores a chunk's bytes as they are, in a
#: zlib stream that ends with their Adler-32 checksum, which HDF5's deflate filter verifies on every
#: read. This is the block checksum (our choice over HDF5's Fletcher-32, which reads at a similar
#: speed but cannot tell a 16-bit word 0x0000 from 0xFFFF, so that a block overwritten with 0xFF
#: bytes, its checksum included, passes it; a zlib stream overwritten with any constant byte is no
#: stream). No compression: lzf shrinks photographs by 10-21 % and dense float16 features by 0-2 %
#: yet reads them 3-5 times slower than this (``bench/bench_checksum.py``). Images are chunked one
#: per chunk so random access stays cheap.
ZLIB_LEVEL = 0

#: Attribute holding the sha256 of a variable-length string dataset (:func:`strings_sha256`).
STRINGS_SHA256 = "strings_sha256"

STRING_DTYPE = h5py.string_dtype(encoding="utf-8")


def _h5py_reason(err: BaseException) -> str:
    """h5py's message, on one line (its driver errors span several)."""
    text = " ".join(str(err).split())
    if isinstance(err, KeyError):
        text = text.strip("\"'")
    return text if len(text) <= 300 else text[:297] + "..."


def _from_h5py(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "h5py" in name:
            return True
        tb = tb.tb_next
    return False


def _is_vlen_string(dtype: Any) -> bool:
    info = h5py.check_string_dtype(np.dtype(dtype)) if dtype is not None else None
    return info is not None and info.length is None


def _walk(group: h5py.Group, prefix: str = "", seen: Optional[set] = None) -> Iterator[Tuple[str, Any]]:
    """``(name, link or object)`` for every link below ``group``: external and soft links as
    links (never followed), hard-linked datasets and groups as objects (each group entered once)."""
    seen = set() if seen is None else seen
    for key in group:
        name = f"{prefix}{key}"
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            yield name, link
            continue
        obj = group[key]
        yield name, obj
        if isinstance(obj, h5py.Group) and obj.id.addr not in seen:
            seen.add(obj.id.addr)
            yield from _walk(obj, name + "/", seen)


def check_storage(path: str | os.PathLike, handle: h5py.File) -> None:
    """Refuse (:class:`DamagedFile`) a file holding a dataset that the project's writers never make:
    one whose data would be read from another file (external storage, a virtual dataset, an
    external link), or one without the checksums of :func:`create_dataset` (then a changed byte
    could not be detected)."""
    for name, item in _walk(handle):
        if isinstance(item, h5py.ExternalLink):
            raise DamagedFile(path, f"'{name}' is a link to another file ({item.filename}), which preimage "
                                    "never writes")
        if not isinstance(item, h5py.Dataset):
            continue
        if item.is_virtual:
            raise DamagedFile(path, f"dataset '{name}' is virtual: its data would be read from other files")
        if item.external:
            raise DamagedFile(path, f"dataset '{name}' has external storage: its data would be read from "
                                    f"{item.external[0][0]!r}")
        if not (STRINGS_SHA256 in item.attrs if _is_vlen_string(item.dtype) else _checksummed(item)):
            raise DamagedFile(path, f"dataset '{name}' carries no checksum (written by an older preimage or "
                                    "another program)")


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file for reading; an unreadable file raises :class:`DamagedFile`, and so does
    one that :func:`check_storage` refuses."""
    try:
        handle = h5py.File(path, "r")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except OSError as err:
        if not Path(path).exists():
            raise FileNotFoundError(errno.ENOENT, "no such file", os.fspath(path)) from None
        raise DamagedFile(path, _h5py_reason(err)) from None
    try:
        with reading(path, handle):
            check_storage(path, handle)
    except BaseException:
        handle.close()
        raise
    return handle


def _checksummed(dataset: h5py.Dataset) -> bool:
    """Whether HDF5 verifies a checksum of every chunk of ``dataset`` when it reads it: zlib's
    Adler-32 (the deflate filter, as :func:`create_dataset` writes) or Fletcher-32."""
    return dataset.compression == "gzip" or dataset.fletcher32


def _checksum_failure(err: BaseException) -> Optional[str]:
    """The name of the checksummed dataset whose read failed in HDF5's filter pipeline, if that is
    what ``err`` is: a chunk whose bytes no longer match their checksum (or are no zlib stream)."""
    if "filter returned failure" not in str(err) and "Fletcher32" not in str(err):
        return None
    tb = err.__traceback__
    while tb is not None:
        dataset = tb.tb_frame.f_locals.get("self")
        if isinstance(dataset, h5py.Dataset) and _checksummed(dataset):
            return (dataset.name or "").lstrip("/")
        tb = tb.tb_next
    return None


@contextlib.contextmanager
def reading(path: str | os.PathLike, handle: Optional[h5py.File] = None) -> Iterator[h5py.File]:
    """Open ``path`` (or use its open ``handle``) for reading; any h5py error raised while the
    block reads it (a truncated or corrupt file, a block that fails its checksum, a missing
    dataset) becomes :class:`DamagedFile`. Keep only reads of this file in the block."""
    own = handle is None
    handle = open_h5(path) if own else handle
    try:
        yield handle
    except (OSError, KeyError) as err:
        if isinstance(err, (DamagedFile, NoSpaceLeft)) or not _from_h5py(err):
            raise
        name = _checksum_failure(err) if isinstance(err, OSError) else None
        reason = _h5py_reason(err) if name is None else f"checksum mismatch in dataset '{name}'"
        raise DamagedFile(path, reason) from err
    finally:
        if own:
            handle.close()


def create_dataset(group: h5py.Group, name: str, **options: Any) -> h5py.Dataset:
    """``group.create_dataset(name, **options)`` the one way the project creates a dataset: chunked
    (h5py picks chunks when ``chunks`` is not given), every chunk in a zlib stream of level
    :data:`ZLIB_LEVEL`, whose Adler-32 checksum HDF5 verifies on every read.

    Variable-length strings cannot pass through HDF5's filters: they are written as they are, and
    :func:`create_h5` records their sha256 when the file is complete (checked by
    :func:`read_strings`). A scalar cannot be chunked, hence not checksummed: store it as an
    attribute instead.
    """
    data = options.get("data")
    shape = options.get("shape", None if data is None else np.shape(data))
    if shape == ():
        raise ValueError(f"dataset {name!r} is a scalar, which cannot carry a checksum: store it as an attribute")
    dtype = options.get("dtype", getattr(data, "dtype", None))
    if _is_vlen_string(dtype):
        return group.create_dataset(name, **options)
    options.update(compression="gzip", compression_opts=ZLIB_LEVEL)
    return group.create_dataset(name, **options)


def _strings_digest(values: Iterable[bytes | str], digest: Optional[Any] = None):
    """sha256 of strings in order (each as UTF-8 and a NUL), continued from ``digest``."""
    digest = hashlib.sha256() if digest is None else digest
    for value in values:
        digest.update((value if isinstance(value, bytes) else str(value).encode()) + b"\0")
    return digest


def strings_sha256(values: Iterable[bytes | str]) -> str:
    """The digest :func:`create_h5` records for a variable-length string dataset."""
    return _strings_digest(values).hexdigest()


def read_strings(path: str | os.PathLike, handle: h5py.File, name: str) -> list[str]:
    """A whole variable-length string dataset, checked against the sha256 its writer recorded."""
    with reading(path, handle):
        dataset = handle[name]
        raw = list(dataset[:])
        recorded = dataset.attrs.get(STRINGS_SHA256)
    if isinstance(recorded, bytes):
        recorded = recorded.decode()
    if recorded != strings_sha256(raw):
        raise DamagedFile(path, f"checksum mismatch in dataset '{name}'")
    return [value.decode() if isinstance(value, bytes) else value for value in raw]


def _seal(path: str | os.PathLike, handle: h5py.File) -> None:
    """Record the sha256 of every variable-length string dataset of a file being completed, and
    refuse a dataset created without :func:`create_dataset` (a writer that forgot its checksums)."""
    for name, item in _walk(handle):
        if not isinstance(item, h5py.Dataset):
            continue
        if _is_vlen_string(item.dtype) and item.shape:
            item.attrs[STRINGS_SHA256] = strings_sha256(item[:])
        elif not _checksummed(item):
            raise ValueError(f"{path}: dataset '{name}' was created without a checksum; create datasets with "
                             "preimage.hdf5.create_dataset")


def _discard(handle: h5py.File) -> None:
    """Close an HDF5 file being abandoned without writing what HDF5 still buffers.

    After a failed write (a full disk) HDF5 cannot flush a file, and a failed close leaves its
    state half torn down (the process then crashes when the file is closed again at exit).
    Pointing the file's descriptor at an in-memory file (or /dev/null) lets the close complete
    and releases the disk space at once; the caller deletes the path.
    """
    try:
        fd = handle.id.get_vfd_handle()
    except Exception:  # noqa: BLE001 - not the default (sec2) driver: close as usual
        fd = None
    if isinstance(fd, int) and fd >= 0:
        try:
            sink = os.memfd_create("preimage-discard") if hasattr(os, "memfd_create") else os.open(
                os.devnull, os.O_RDWR)
            os.dup2(sink, fd)
            os.close(sink)
        except OSError:
            pass
    try:
        handle.close()
    except Exception:  # noqa: BLE001 - the file is being deleted; its contents do not matter
        pass


@contextlib.contextmanager
def create_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """``h5py.File(path, "w")`` for a temporary file of :func:`atomic_path`: sealed (:func:`_seal`),
    flushed and closed when the block succeeds; on any error (a full disk above all) discarded
    without another write (see :func:`_discard`), so the error reaches the caller instead of a crash."""
    handle = h5py.File(path, "w")
    try:
        yield handle
        _seal(path, handle)
        handle.flush()
    except BaseException:
        _discard(handle)
        raise
    handle.close()


def write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` onto an HDF5 object; dicts and lists are stored as JSON strings."""
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) or value is None:
            obj.attrs[key] = json.dumps(value, sort_keys=True, default=str)
        else:
            obj.attrs[key] = value


def read_attrs(obj: h5py.HLObject) -> Dict[str, Any]:
    """Read attributes back, decoding the JSON strings that :func:`write_attrs` wrote."""
    out: Dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def provenance(**extra: Any) -> Dict[str, Any]:
    """Attributes every store carries: the package version plus ``extra``."""
    return {"preimage_version": __version__, **extra}

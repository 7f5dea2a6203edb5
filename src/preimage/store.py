"""HDF5 stores: atomic writes, provenance attributes, streaming readers.

Two kinds of file share these helpers (README, "Layout"):

* the image store ``results/data/{split}.h5``: ``images`` uint8 (N, 3, S, S) RGB, ``labels``
  int64 (N,), ``paths`` (N,) strings, ``classes`` (K,) strings;
* the feature cache ``results/features/{rep}/{split}.h5``: ``features`` float16/float32
  (N, C, H, W) or (N, D), or for sparse representations a keypoint ``table`` plus ``offsets``.

Every file is written under a temporary name in the same folder and renamed when complete
(:func:`atomic_path`), so a killed job never leaves a file that looks finished; a job removes
the temporaries that killed runs left beside its own outputs (:func:`remove_stale_temporaries`).
Attributes hold the parameters (as JSON), the package version and whatever identity the writer
adds. Readers stream in batches; nothing here loads a whole dataset unless asked to.

Every dataset is created by :func:`create_dataset`: chunked, each chunk stored in a zlib stream
whose Adler-32 checksum HDF5 verifies whenever the chunk is read (:data:`ZLIB_LEVEL`; variable-length
strings, which HDF5 cannot filter, get a sha256 that :func:`read_strings` checks). Readers open
files through :func:`open_h5`, which refuses a dataset without a checksum and any whose data would
come from another file (external storage, a virtual dataset, an external link).

Failures are named (our choice, for users of a shared results folder):

* a store that cannot be opened or read raises :class:`DamagedFile`
  (``<path> is damaged (<h5py's reason>); delete it and rerun``; a changed byte reads
  ``checksum mismatch in dataset '<name>'``);
* a write that runs out of disk space raises :class:`NoSpaceLeft`
  (``no space left on device writing <path>``) after removing the partial file. HDF5 cannot
  close a file whose buffered data it failed to write (and crashes the process when it tries
  again at exit), so :func:`create_h5` discards the unwritten data of an abandoned file instead;
* ``.pt`` files are read only through :func:`load_torch` (``torch.load(weights_only=True)``:
  tensors and plain values, never pickled code) and written through :func:`save_torch`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from preimage import __version__

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


class DamagedFile(OSError):
    """A file the workflow wrote earlier cannot be opened or read."""

    def __init__(self, path: str | os.PathLike, reason: str, advice: str = "delete it and rerun") -> None:
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{self.path} is damaged ({reason}); {advice}")

    def __str__(self) -> str:
        return self.args[0]


class NoSpaceLeft(OSError):
    """A write ran out of disk space (or quota); the partial file has been removed."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        super().__init__(f"no space left on device writing {self.path}; free some space (or set results: to a "
                         "larger disk) and rerun")
        self.errno = errno.ENOSPC

    def __str__(self) -> str:
        return self.args[0]


class UnsafeFile(ValueError):
    """A ``.pt`` file holds pickled Python objects (which could run code when loaded), not only
    tensors and plain values."""


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it arose from) is ENOSPC or EDQUOT.

    ``torch.save`` reports a failed write as a RuntimeError; written through a Python file
    object (:func:`save_torch`) it carries the OSError as its context, which is found here.
    """
    for cause in _causes(err):
        if isinstance(cause, NoSpaceLeft):
            return True
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cause)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
    return False


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    On an exception (or a kill) the temporary file is removed (or left with a ``.tmp-`` name
    that no rule declares, removed when the job runs again: :func:`remove_stale_temporaries`),
    never mistaken for a finished output. A full disk becomes :class:`NoSpaceLeft` naming ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as err:
        if is_disk_full(err) and not isinstance(err, NoSpaceLeft):
            raise NoSpaceLeft(final) from err
        raise
    finally:
        _remove(tmp)


def temporaries_of(path: str | os.PathLike) -> list[Path]:
    """The temporaries a killed writer of ``path`` may have left: ``.{name}.tmp-*``
    (:func:`atomic_path`) and ``{name}.tmp`` (training checkpoints)."""
    final = Path(path)
    if not final.parent.is_dir():
        return []
    found = list(final.parent.glob(f".{glob.escape(final.name)}.tmp-*"))
    legacy = final.with_name(final.name + ".tmp")
    return sorted(found + ([legacy] if legacy.is_file() else []))


def remove_stale_temporaries(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Remove the temporaries of ``paths`` left by killed jobs; returns what was removed.

    Only call it for the outputs of the job that is starting (Snakemake runs one job per
    output at a time, so nothing else can be writing them); other jobs' temporaries may be
    live and are not touched.
    """
    removed = []
    for path in paths:
        for tmp in temporaries_of(path):
            try:
                tmp.unlink()
                removed.append(tmp)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
    return removed


# --------------------------------------------------------------------------- HDF5 files


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
                             "preimage.store.create_dataset")


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


# --------------------------------------------------------------------------- torch files


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


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- image store


class ImageStoreWriter:
    """Append images to ``images``/``labels``/``paths`` in chunks (memory flat in N).

    Use through :func:`write_image_store`, which handles the atomic rename.
    """

    def __init__(self, handle: h5py.File, size: int, expected: int) -> None:
        self.handle = handle
        self.size = size
        self.count = 0
        self.images = create_dataset(handle, "images", shape=(0, 3, size, size), maxshape=(None, 3, size, size),
                                     dtype=np.uint8, chunks=(1, 3, size, size))
        self.labels = create_dataset(handle, "labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        self.paths = create_dataset(handle, "paths", shape=(0,), maxshape=(None,), dtype=STRING_DTYPE, chunks=(4096,))
        self.expected = expected
        self._digests = {name: hashlib.sha256() for name in ("images", "labels", "paths")}

    def append(self, images: np.ndarray, labels: Sequence[int], paths: Sequence[str]) -> None:
        n = len(images)
        if n == 0:
            return
        if images.dtype != np.uint8 or images.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"expected uint8 (n, 3, {self.size}, {self.size}), got {images.dtype} {images.shape}")
        start, stop = self.count, self.count + n
        for dataset in (self.images, self.labels, self.paths):
            dataset.resize(stop, axis=0)
        labels = np.asarray(labels, dtype=np.int64)
        self.images[start:stop] = images
        self.labels[start:stop] = labels
        self.paths[start:stop] = list(paths)
        self.count = stop
        self._digests["images"].update(np.ascontiguousarray(images).tobytes())
        self._digests["labels"].update(labels.astype("<i8").tobytes())
        _strings_digest(paths, self._digests["paths"])

    def content_sha256(self, classes: Sequence[str]) -> str:
        """sha256 of what was appended (images, labels, paths, in order) and of ``classes``: the
        identity of the store's content, whatever chunks it was appended in and however the file's
        bytes are laid out (:func:`image_store_digest`)."""
        total = hashlib.sha256()
        for name in ("images", "labels", "paths"):
            total.update(self._digests[name].digest())
        total.update("\0".join(map(str, classes)).encode())
        return total.hexdigest()


@contextlib.contextmanager
def write_image_store(
    path: str | os.PathLike, size: int, classes: Sequence[str], attrs: Mapping[str, Any], expected: int = 0
) -> Iterator[ImageStoreWriter]:
    """Create an image store atomically; yields an :class:`ImageStoreWriter`.

    ``attrs`` may be updated by the caller (e.g. the ``skipped`` list) through
    ``writer.handle.attrs`` before the block ends.
    """
    with atomic_path(path) as tmp:
        with create_h5(tmp) as handle:
            create_dataset(handle, "classes", data=np.array(list(classes), dtype=object), dtype=STRING_DTYPE)
            write_attrs(handle, provenance(**attrs))
            writer = ImageStoreWriter(handle, size, expected)
            yield writer
            handle.attrs["content_sha256"] = writer.content_sha256(classes)


def image_store_digest(path: str | os.PathLike) -> str:
    """The identity of an image store's content: ``content-sha256:<hex>`` from the digest its
    writer recorded (:meth:`ImageStoreWriter.content_sha256`; read from one attribute, so a
    1.28 M-image store is not read again by every job that needs its identity, and a store joined
    from shards has the digest of the unsharded one), or the file's sha256 for stores written
    without it."""
    with reading(path) as handle:
        digest = handle.attrs.get("content_sha256")
    if isinstance(digest, bytes):
        digest = digest.decode()
    return f"content-sha256:{digest}" if digest else file_sha256(path)


def centre_crop(images, side: int):
    """The centre ``side × side`` window of images ``(..., S, S)`` (numpy or torch; a view, no copy).

    This is the part of a stored image that a representation which centre-crops its input sees
    (AlexNet's 227-px crop of a 256-px image, paper Table 1), and so the part a decoder can be
    asked to reconstruct. ``side`` equal to the image size returns ``images`` itself."""
    h, w = images.shape[-2:]
    side = int(side)
    if side == h and side == w:
        return images
    if side < 1 or side > min(h, w):
        raise ValueError(f"cannot take a centre crop of {side} px from {h}×{w} images")
    top, left = (h - side) // 2, (w - side) // 2
    return images[..., top:top + side, left:left + side]


class ImageStore:
    """Read-only access to an image store; iterates in batches without loading everything.

    With ``crop`` every image read is the centre ``crop × crop`` window (:func:`centre_crop`) and
    :attr:`size` is ``crop``: the view of the images that a decoder's targets and errors use when
    its representation sees only a centre crop.
    """

    def __init__(self, path: str | os.PathLike, crop: Optional[int] = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"image store {self.path} does not exist (run the data stage first)")
        self.handle = open_h5(self.path)
        try:
            with reading(self.path, self.handle):
                self.images = self.handle["images"]
        except DamagedFile:
            self.handle.close()
            raise
        stored = int(self.images.shape[-1])
        self.crop = stored if crop is None else int(crop)
        if not 1 <= self.crop <= stored:
            self.handle.close()
            raise ValueError(f"{self.path}: cannot crop {self.crop} px from {stored}-px images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def stored_size(self) -> int:
        """Side of the images as stored."""
        return int(self.images.shape[-1])

    @property
    def size(self) -> int:
        """Side of the images as read (the crop, when one is set)."""
        return self.crop

    def float_view(self) -> "FloatView":
        """The (cropped) images as float in [0, 1], read lazily in slices (for pairwise distances)."""
        return FloatView(self)

    @property
    def attrs(self) -> Dict[str, Any]:
        with reading(self.path, self.handle):
            return read_attrs(self.handle)

    @property
    def labels(self) -> np.ndarray:
        with reading(self.path, self.handle):
            return self.handle["labels"][:]

    @property
    def paths(self) -> list[str]:
        return read_strings(self.path, self.handle, "paths")

    @property
    def classes(self) -> list[str]:
        return read_strings(self.path, self.handle, "classes")

    def read(self, start: int, stop: int) -> np.ndarray:
        """uint8 images ``start:stop`` as (n, 3, S, S) (S = :attr:`size`)."""
        with reading(self.path, self.handle):
            return np.ascontiguousarray(centre_crop(self.images[start:stop], self.crop))

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 images at arbitrary ``indices`` (any order)."""
        indices = np.asarray(indices)
        order = np.argsort(indices)
        out = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
        with reading(self.path, self.handle):
            rows = self.images[np.sort(indices)] if len(np.unique(indices)) == len(indices) else np.stack(
                [self.images[i] for i in np.sort(indices)]
            )
        out[order] = centre_crop(rows, self.crop)
        return out

    def batches(self, batch_size: int, start: int = 0, stop: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(offset, uint8 batch)`` in order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for offset in range(start, stop, batch_size):
            yield offset, self.read(offset, min(offset + batch_size, stop))

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "ImageStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FloatView:
    """An :class:`ImageStore` seen as a float array in [0, 1] of shape (N, 3, S, S), read lazily
    by slices (what :func:`preimage.metrics.mean_pairwise_distance` iterates over)."""

    def __init__(self, images: ImageStore) -> None:
        self.images = images
        self.shape = (len(images), 3, images.size, images.size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.images.read(start, stop).astype(np.float64) / 255.0
        return self.images.take(np.arange(len(self))[key]).astype(np.float64) / 255.0


def to_float(images: np.ndarray):
    """uint8 (n, 3, S, S) → float32 torch tensor in [0, 1] (the convention of every representation)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


def to_uint8(images) -> np.ndarray:
    """float torch tensor in [0, 1] → uint8 numpy array (the inverse of :func:`to_float`, values
    outside [0, 1] clipped, rounded to the nearest level): how reconstructions are stored and shown."""
    import torch

    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_csv(table, path: str | os.PathLike, float_format: str = "%.6g") -> None:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=float_format)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)


# --------------------------------------------------------------------------- feature cache


def feature_chunk(shape: Sequence[int], itemsize: int, target_bytes: int = 1 << 18) -> int:
    """Images per HDF5 chunk: one image when features are large, a small batch (≤64) when small."""
    per_image = int(np.prod(shape)) * itemsize
    return int(max(1, min(64, target_bytes // max(per_image, 1))))


class FeatureStoreWriter:
    """Append dense features (``features``) or sparse keypoints (``table`` + ``offsets``)."""

    def __init__(self, handle: h5py.File, count: int, shape: Optional[Tuple[int, ...]], dtype: str,
                 sparse_width: Optional[int] = None) -> None:
        self.handle, self.count, self.written = handle, count, 0
        self.dtype = np.dtype(dtype)
        if sparse_width is None:
            assert shape is not None
            self.features = create_dataset(
                handle, "features", shape=(count, *shape), dtype=self.dtype,
                chunks=(min(count, feature_chunk(shape, self.dtype.itemsize)), *shape) if count else None,
            )
            self.table = None
        else:
            self.features = None
            self.table = create_dataset(
                handle, "table", shape=(0, sparse_width), maxshape=(None, sparse_width), dtype=np.float32,
                chunks=(4096, sparse_width),
            )
            self.offsets = [0]

    def append(self, features: np.ndarray) -> None:
        """Dense features for the next images, in image order."""
        n = len(features)
        stop = self.written + n
        if stop > self.count:
            raise ValueError(f"more features than images ({stop} > {self.count})")
        array = np.asarray(features)
        if self.dtype == np.float16 and np.isfinite(array).all():
            converted = array.astype(np.float16)
            if not np.isfinite(converted).all():
                raise OverflowError("features overflow float16 (|x| > 65504): set features.dtype to float32")
            array = converted
        elif not np.isfinite(array).all():
            raise ValueError("features contain NaN or inf")
        self.features[self.written:stop] = array
        self.written = stop

    def append_sparse(self, table: np.ndarray, offsets: np.ndarray) -> None:
        """Keypoint rows of the next images: ``offsets`` (n+1,) index ``table`` (rows, width)."""
        rows = len(table)
        start = self.table.shape[0]
        self.table.resize(start + rows, axis=0)
        if rows:
            self.table[start:] = table
        base = self.offsets[-1]
        self.offsets.extend(int(base + o) for o in np.asarray(offsets)[1:])
        self.written += len(offsets) - 1

    def finish(self) -> None:
        if self.written != self.count:
            raise RuntimeError(f"wrote features for {self.written} of {self.count} images")
        if self.table is not None:
            create_dataset(self.handle, "offsets", data=np.asarray(self.offsets, dtype=np.int64))


@contextlib.contextmanager
def write_feature_store(path: str | os.PathLike, count: int, shape: Optional[Tuple[int, ...]], dtype: str,
                        attrs: Mapping[str, Any], sparse_width: Optional[int] = None) -> Iterator[FeatureStoreWriter]:
    """Create a feature cache atomically (dense ``shape`` per image, or sparse rows of ``sparse_width``)."""
    with atomic_path(path) as tmp:
        with create_h5(tmp) as handle:
            write_attrs(handle, provenance(**attrs, shape=list(shape) if shape else None,
                                           storage="sparse" if sparse_width else "dense"))
            writer = FeatureStoreWriter(handle, count, shape, dtype, sparse_width)
            yield writer
            writer.finish()


class FeatureStore:
    """Read a feature cache in batches; sparse caches are densified on the fly.

    ``read(start, stop)`` and ``take(indices)`` return float32 numpy arrays (N, *shape);
    nothing is loaded beyond the rows asked for. A file written with ``features.store: recompute``
    (``storage = "recompute"``: attributes only, no features) is read the same way: the rows
    asked for are computed from the image store it names
    (:class:`preimage.features.cache.Recomputer`).
    """

    def __init__(self, path: str | os.PathLike, densify=None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"feature cache {self.path} does not exist (run the feature stage first)")
        self.handle = open_h5(self.path)
        try:
            with reading(self.path, self.handle):
                self.attrs = read_attrs(self.handle)
                if not isinstance(self.attrs.get("shape"), list) and self.attrs.get("storage") != "sparse":
                    raise DamagedFile(self.path, "no 'shape' attribute: not a complete feature cache")
                self.sparse = self.attrs.get("storage") == "sparse"
                self.recomputed = self.attrs.get("storage") == "recompute"
                self.shape = tuple(self.attrs.get("shape") or ())
                if self.recomputed:
                    self.features = None
                elif self.sparse:
                    self.offsets = self.handle["offsets"][:]
                    self.table = self.handle["table"]
                else:
                    self.features = self.handle["features"]
        except DamagedFile:
            self.handle.close()
            raise
        if self.recomputed:
            from preimage.features.cache import Recomputer

            try:
                self._source = Recomputer(self.path, self.attrs)
            except BaseException:
                self.handle.close()
                raise
        if self.sparse:
            if densify is None:
                from preimage.features import create

                representation = create(self.attrs["representation"], **self.attrs.get("params", {}))
                densify = representation.densify
            self._densify = densify

    def __len__(self) -> int:
        if self.recomputed:
            return len(self._source)
        return len(self.offsets) - 1 if self.sparse else int(self.features.shape[0])

    @property
    def chunk(self) -> int:
        """Images per storage chunk (readers shuffle whole chunks for speed)."""
        if self.sparse:
            return 64
        if self.recomputed:
            return 1  # the images are stored one per chunk
        return int(self.features.chunks[0]) if self.features.chunks else len(self)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.recomputed:
            return self._source.read(start, stop)
        if not self.sparse:
            with reading(self.path, self.handle):
                return self.features[start:stop].astype(np.float32)
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        with reading(self.path, self.handle):
            rows = self.table[lo:hi]
        offsets = self.offsets[start:stop + 1] - lo
        size = int(self.attrs["image_size"])
        return np.asarray(self._densify(rows, offsets, None, size, size), dtype=np.float32)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices)
        if self.recomputed:
            return self._source.take(indices)
        return np.stack([self.read(int(i), int(i) + 1)[0] for i in indices]) if len(indices) else np.empty((0, *self.shape), np.float32)

    def batches(self, batch_size: int) -> Iterator[Tuple[int, np.ndarray]]:
        for offset in range(0, len(self), batch_size):
            yield offset, self.read(offset, min(offset + batch_size, len(self)))

    def close(self) -> None:
        if self.recomputed:
            self._source.close()
        self.handle.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

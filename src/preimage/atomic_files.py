"""The workflow's files: atomic writes, named failures, CSV and text outputs.

Every output is written under a temporary name in the same folder and renamed when complete
(:func:`atomic_path`), so a killed job never leaves a file that looks finished; a job removes the
temporaries that killed runs left beside its own outputs (:func:`remove_stale_temporaries`).

Failures are named (our choice, for users of a shared results folder):

* a file the workflow wrote earlier that cannot be opened or read raises :class:`DamagedFile`
  (``<path> is damaged (<reason>); delete it and rerun``);
* a write that runs out of disk space raises :class:`NoSpaceLeft`
  (``no space left on device writing <path>``) after removing the partial file.

The HDF5 stores are in :mod:`preimage.hdf5` (the checksummed layer), :mod:`preimage.image_store`
and :mod:`preimage.features.cache`; ``.pt`` files in :mod:`preimage.torch_files`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator, Sequence


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


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv(table, path: str | os.PathLike, float_format: str = "%.6g") -> None:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=float_format)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)

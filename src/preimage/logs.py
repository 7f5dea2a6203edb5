"""Logging for workflow scripts: every job writes its own ``log:`` file.

Progress bars (tqdm) go to stderr and only show on a terminal; the log file receives plain lines
(one every N items on long work), so a cluster job's log tells how far it got.

Every script in ``workflow/scripts`` runs its body inside :func:`job`, the common set-up: the
log file, threads and GPU slot (:func:`preimage.devices.setup_snakemake_job`), removal of the
temporaries that killed runs left beside the job's own outputs, and — when the body fails — one
line naming the error followed by the traceback, written to the job's log before the script
exits non-zero. Snakemake points to that log when a job fails; on a cluster it is often the only
place the reason can be read.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import traceback
from typing import Any, Iterator, List, Optional, Sequence

LOG = logging.getLogger("preimage")


def setup(log_path: Optional[str] = None, level: int = logging.INFO) -> logging.Logger:
    """Send ``preimage.*`` log records to ``log_path`` (and warnings to stderr)."""
    logger = logging.getLogger("preimage")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        file_handler = logging.FileHandler(log_path, mode="w")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING if log_path else level)
    stderr.setFormatter(fmt)
    logger.addHandler(stderr)
    logger.propagate = False
    return logger


def failure_summary(err: BaseException) -> str:
    """One line saying what went wrong: the message of the project's own errors (which name the
    file and what to do), ``Type: message`` for anything else."""
    from preimage import atomic_files, torch_files

    if isinstance(err, (atomic_files.NoSpaceLeft, atomic_files.DamagedFile, torch_files.UnsafeFile)):
        text = str(err)
    elif atomic_files.is_disk_full(err):
        where = getattr(err, "filename", None)
        text = "no space left on device" + (f" writing {where}" if where else "") + "; free some space and rerun"
    else:
        message = str(err).strip()
        text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return " ".join(text.split()) if "\n" not in text.strip() else text.strip()


def log_failure(err: BaseException, logger: logging.Logger = LOG, where: str = "job") -> None:
    """Write ``<where> failed: <summary>`` and then the traceback to ``logger``'s log file; only the
    first line goes to stderr (the traceback is in the log)."""
    summary = f"{where} failed: {failure_summary(err)}"
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    if not files:
        logger.error("%s\n%s", summary, trace)
        return
    logger.error("%s", summary)
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "traceback:\n%s", (trace,), None)
    for handler in files:
        handler.handle(record)
        handler.flush()
    streams = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
    if streams:
        sys.stderr.write(f"(traceback in {files[0].baseFilename})\n")
        sys.stderr.flush()


class Terminated(BaseException):
    """The job received SIGTERM (a cluster time limit, ``scancel``, Snakemake stopping)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name} (a time limit, a cancel or Snakemake "
                     "stopping); rerun to continue (training resumes from its last checkpoint)")


def _ours() -> bool:
    return signal.getsignal(signal.SIGTERM) is _raise_terminated


def _block_sigterm_for_fork() -> None:
    if _ours():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _unblock_sigterm_in_parent() -> None:
    if _ours():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _default_sigterm_in_child() -> None:
    """Forked children (extraction's process pool) die on SIGTERM as by default. A Python handler
    would run only once the interpreter gets control, and a SIGTERM arriving just after the fork
    is dropped when the interpreter resets its signal state, so ``Pool.terminate()`` could wait
    for a worker forever. SIGTERM stays blocked across the fork until the default is back."""
    if _ours():
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


os.register_at_fork(before=_block_sigterm_for_fork, after_in_parent=_unblock_sigterm_in_parent,
                    after_in_child=_default_sigterm_in_child)


def _own_outputs(smk: Any) -> List[str]:
    """The job's outputs and its checkpoint (``params.checkpoint``, outside the outputs)."""
    paths = [str(p) for p in getattr(smk, "output", [])]
    checkpoint = getattr(getattr(smk, "params", None), "checkpoint", None)
    if isinstance(checkpoint, (str, os.PathLike)):
        paths.append(os.fspath(checkpoint))
    return paths


@contextlib.contextmanager
def job(smk: Any, outputs: Optional[Sequence[str]] = None) -> Iterator[logging.Logger]:
    """The common set-up of a workflow script, around its body::

        with logs.job(snakemake):
            ...

    Opens the job's log (``snakemake.log[0]``), removes stale temporaries of the job's own
    outputs (and checkpoint), takes threads and a GPU slot, logs where the job runs. An error in
    the body is logged (one line, then the traceback) and the script exits with status 1. SIGTERM
    becomes :class:`Terminated`, so it is logged too and partial outputs are removed on the way
    out (exit status 143).
    """
    log_paths = list(getattr(smk, "log", []) or [])
    logger = setup(str(log_paths[0]) if log_paths else None)
    rule = getattr(smk, "rule", None) or "job"
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        previous = None
    try:
        from preimage import atomic_files, devices

        removed = atomic_files.remove_stale_temporaries(outputs if outputs is not None else _own_outputs(smk))
        for path in removed:
            logger.info("removed %s, left by an interrupted run", path)
        if hasattr(smk, "threads"):
            devices.setup_snakemake_job(smk)
        yield logger
    except SystemExit as err:
        if err.code in (None, 0):
            raise
        log_failure(err, logger, rule)
        raise
    except KeyboardInterrupt as err:
        log_failure(err, logger, rule)
        raise
    except Terminated as err:
        log_failure(err, logger, rule)
        raise SystemExit(128 + signal.SIGTERM) from None
    except BaseException as err:  # noqa: BLE001 - every failure must reach the job's log
        log_failure(err, logger, rule)
        raise SystemExit(1) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _spare_the_final_collection()


def _spare_the_final_collection() -> None:
    """Move every live object out of the garbage collector's reach (:func:`gc.freeze`) as a job
    ends. Its outputs and log are closed by then; the process only exits, and the interpreter's
    shutdown collections would otherwise traverse torch's whole object graph once more (about
    0.5 s of CPU per job on one core: ``bench/bench_startup.py`` measures it). Reference counting
    still frees and flushes whatever is not in a cycle."""
    gc.freeze()

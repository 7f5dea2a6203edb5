"""One workflow run at a time per ``results:`` folder.

Snakemake locks a *working directory* (``.snakemake/locks``), so two working directories whose
configs name one absolute ``results:`` folder would run extraction, features and training into
it at the same time. The main Snakemake process therefore takes an exclusive ``fcntl.flock`` on
``<results>/.preimage.lock`` when the run starts (the ``onstart`` hook of ``rules/common.smk``)
and holds it until it exits:

* the OS drops the lock when the process ends, however it ends (a crash, ``kill -9``), so no
  stale lock survives and there is nothing to unlock by hand; the file itself stays and means
  nothing without the lock (it is never deleted: deleting a locked file would let a second run
  lock a new file of the same name);
* the file holds one line naming the holder (pid, host, working directory, start time), which a
  refused run prints;
* dry runs (``-n``) neither take the lock nor are refused (Snakemake runs no ``onstart`` hook for
  them), and neither do the job processes a cluster executor starts (Snakemake runs them with
  ``--no-hooks``); ``--nolock`` skips it as it skips Snakemake's own lock;
* a folder on a file system without ``flock`` (some cluster file systems) is run unlocked with a
  warning, never refused.

The lock is per folder, not per output file as Snakemake's own: a second run on the same results
folder is refused even when it asks for other targets.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from typing import IO, Dict, Optional

__all__ = ["LOCK_NAME", "ResultsInUse", "lock_results", "release_results"]

#: The lock file inside the results folder.
LOCK_NAME = ".preimage.lock"

#: Locks this process holds, by the folder's real path (a second call for the same folder is a no-op).
_HELD: Dict[str, IO[str]] = {}


class ResultsInUse(RuntimeError):
    """Another process holds the results folder's lock; ``str(err)`` is one line for the user."""


def _holder(handle: IO[str]) -> str:
    """What the lock file says about its holder, as words."""
    try:
        handle.seek(0)
        record = json.loads(handle.readline() or "{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or "pid" not in record:
        return "a process that has not recorded itself yet"
    return (f"pid {record.get('pid')} on host {record.get('host', '?')}, working directory "
            f"{record.get('cwd', '?')}, since {record.get('since', '?')}")


def lock_results(folder: str | os.PathLike) -> Optional[str]:
    """Take the exclusive lock of ``folder`` (created if missing) for the rest of this process.

    Raises :class:`ResultsInUse` naming the folder and the holder when another process has it.
    Returns None, or a warning line where the file system cannot lock (the run goes on unlocked).
    """
    path = os.path.realpath(os.fspath(folder))
    if path in _HELD:
        return None
    os.makedirs(path, exist_ok=True)
    handle = open(os.path.join(path, LOCK_NAME), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _holder(handle)
            handle.close()
            raise ResultsInUse(f"results folder {path} is in use by another run ({holder}); wait for it to finish "
                               "or give this run another results: folder") from None
        handle.close()
        return (f"cannot lock {os.path.join(path, LOCK_NAME)} ({err.strerror or err}); runs that share this results "
                "folder are not kept apart")
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    handle.flush()
    _HELD[path] = handle
    return None


def release_results(folder: str | os.PathLike) -> None:
    """Drop this process's lock of ``folder`` (if held), e.g. when a run ends inside a process
    that lives on."""
    handle = _HELD.pop(os.path.realpath(os.fspath(folder)), None)
    if handle is not None:
        handle.close()

"""Device choice: CUDA when available, else CPU with the job's threads (README, "Running on a cluster").

torch is imported where it is used, not with this module: every workflow job sets itself up here,
and the jobs that only write tables and figures never load torch.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Optional


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` if a GPU is visible, else ``cpu``; ``cuda``/``cuda:N``/``cpu`` as given.

    Asking for CUDA on a machine without one is an error, never a silent CPU run.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def configure_threads(threads: int) -> None:
    """Use the job's ``threads`` for intra-op parallelism on the CPU: torch's setting when torch is
    loaded; otherwise ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, from which torch takes its
    threads when a later import loads it (at most one per core), so a job that never needs torch
    does not load it."""
    threads = max(1, int(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


# --------------------------------------------------------------------------- GPU slots and job setup

log = logging.getLogger("preimage.devices")
_held_slot: Dict[str, Any] = {}


def visible_gpu_count() -> int:
    """GPUs on this machine according to ``nvidia-smi -L`` (0 without a driver); does not touch
    CUDA, so ``CUDA_VISIBLE_DEVICES`` can still be set afterwards."""
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU ")) if result.returncode == 0 else 0


def claim_gpu_slot(count: Optional[int] = None, lock_dir: Optional[str] = None, wait_s: float = 3600,
                   poll_s: float = 1.0) -> Optional[int]:
    """Give this job a GPU of its own when Snakemake runs jobs locally.

    Snakemake limits how many ``gpu=1`` jobs run at once (``resources: gpu=N`` in the profile) but
    does not say *which* GPU a job should use, so without this every job would pick GPU 0. Each
    job takes an exclusive lock on one of ``{lock_dir}/gpu{i}.lock`` (held until the process
    exits, released by the OS even after a crash) and sets ``CUDA_VISIBLE_DEVICES=i``. Where
    ``CUDA_VISIBLE_DEVICES`` is already set (SLURM sets it for a job's allocated GPUs, or the user
    did) it is respected and nothing is locked. Returns the GPU index taken, or None.
    Must run before CUDA is initialised (importing torch is fine).
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    count = visible_gpu_count() if count is None else int(count)
    if count <= 0:
        return None
    lock_dir = lock_dir or os.environ.get("PREIMAGE_GPU_LOCK_DIR") or os.path.join(
        tempfile.gettempdir(), f"preimage-gpu-slots-{os.getuid()}")
    os.makedirs(lock_dir, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for index in range(count):
            handle = open(os.path.join(lock_dir, f"gpu{index}.lock"), "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _held_slot["handle"], _held_slot["index"] = handle, index
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            return index
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free GPU slot among {count} in {lock_dir} after {wait_s:.0f} s; "
                               "more GPU jobs run than the profile's resources: gpu=N allows?")
        time.sleep(poll_s)


def job_environment() -> str:
    """One line naming where a job runs: host, SLURM job, visible GPUs, threads."""
    keys = ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")
    parts = [f"host={socket.gethostname()}"] + [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    torch = sys.modules.get("torch")  # not loaded yet: the threads it will take (configure_threads)
    threads = torch.get_num_threads() if torch is not None else os.environ.get("OMP_NUM_THREADS", "default")
    return " ".join(parts + [f"torch_threads={threads}"])


def setup_job(threads: int, gpu: bool = False) -> None:
    """Start of every workflow script: threads, a GPU slot for GPU jobs, and a log line saying
    where the job runs (so a cluster log shows which node and GPU it had)."""
    configure_threads(threads)
    if gpu:
        slot = claim_gpu_slot()
        if slot is not None:
            log.info("took local GPU slot %d", slot)
    log.info("job environment: %s", job_environment())


def setup_snakemake_job(smk) -> None:
    """:func:`setup_job` from a script's ``snakemake`` object (threads, ``resources.gpu``)."""
    setup_job(smk.threads, gpu=int(getattr(smk.resources, "gpu", 0) or 0) > 0)

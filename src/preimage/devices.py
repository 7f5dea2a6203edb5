"""Device choice: CUDA when available, else CPU with the job's threads (design.md, "Devices")."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` if a GPU is visible, else ``cpu``; ``cuda``/``cuda:N``/``cpu`` as given.

    Asking for CUDA on a machine without one is an error, never a silent CPU run.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def configure_threads(threads: int) -> None:
    """Use the job's ``threads`` for intra-op parallelism on the CPU."""
    torch.set_num_threads(max(1, int(threads)))

"""Logging for workflow scripts: every job writes its own ``log:`` file.

Progress bars (tqdm) go to stderr and only show on a terminal; the log file receives plain lines
(one every N items on long work), so a cluster job's log tells how far it got.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional


def setup(log_path: Optional[str] = None, level: int = logging.INFO) -> logging.Logger:
    """Send ``preimage.*`` log records to ``log_path`` (and warnings to stderr)."""
    logger = logging.getLogger("preimage")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
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

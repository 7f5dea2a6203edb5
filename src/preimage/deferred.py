"""torch, imported when first used.

The representation registry (:mod:`preimage.features`) and the modules it loads are read by every
Snakemake process (the configuration check and :class:`preimage.plan.Plan` ask each
representation's class what it is: its family, its nodes, whether it is differentiable), and
importing torch takes most of such a process's start-up (about 1.5 s of CPU). Those modules import
``torch``, ``nn`` and ``F`` from here instead: each is a stand-in that imports the real module on
its first attribute access and forwards to it, so torch is loaded by the first computation, not by
reading the Snakefile. A module that names torch at import time (a class deriving from
``nn.Module``, a decorator, a constant tensor) would load it anyway: such definitions live in
functions or in modules imported when a network is built (``tests/test_startup.py`` checks that
the registry and the plan import without torch).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["DeferredModule", "F", "nn", "torch"]


class DeferredModule(types.ModuleType):
    """Stands in for the module ``name`` until an attribute is asked for; then imports it (Python's
    import lock makes the first import thread-safe) and keeps each attribute it forwards."""

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):  # copy, pickle and inspect probe dunders: not worth an import
            raise AttributeError(attribute)
        value = getattr(importlib.import_module(self.__name__), attribute)
        setattr(self, attribute, value)
        return value

    def __repr__(self) -> str:
        return f"<deferred module {self.__name__!r}>"


torch = DeferredModule("torch")
nn = DeferredModule("torch.nn")
F = DeferredModule("torch.nn.functional")

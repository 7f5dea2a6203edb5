"""Feature representations Φ (paper §2), registered by name; see :mod:`preimage.features.base`."""

from preimage.features.base import Representation, categories_of, create, known_names, lookup, register

__all__ = ["Representation", "categories_of", "create", "known_names", "lookup", "register"]

"""Feature representations Φ (paper §2), registered by name; see :mod:`preimage.features.base`."""

from preimage.features.base import (NodeSet, Representation, categories_of, create, families, known_names, lookup,
                                    name_problem, prefixes, register)

__all__ = ["NodeSet", "Representation", "categories_of", "create", "families", "known_names", "lookup", "name_problem",
           "prefixes", "register"]

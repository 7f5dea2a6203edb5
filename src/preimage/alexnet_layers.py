"""AlexNet's layers by name (paper Table 1) and where torchvision's network computes them.

Kept free of torch so that the jobs which only order tables and figures by layer (paper Figure 7)
start without loading it; :mod:`preimage.features.alexnet` builds the truncated networks from it.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["LAYERS"]

#: How many modules of torchvision AlexNet's ``features`` / ``classifier`` each layer runs (the
#: table in :mod:`preimage.features.alexnet`), in depth order.
LAYERS: Dict[str, tuple] = {
    "conv1": ("features", 3),
    "conv2": ("features", 6),
    "conv3": ("features", 8),
    "conv4": ("features", 10),
    "conv5": ("features", 13),
    "fc6": ("classifier", 3),
    "fc7": ("classifier", 6),
    "fc8": ("classifier", 7),
}

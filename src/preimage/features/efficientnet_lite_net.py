"""EfficientNet-Lite0's modules in PyTorch, for :mod:`preimage.features.efficientnet_lite`.

Kept apart from the representation so that the registry reads what ``efficientnet_lite0:<node>``
is (its family, its documented nodes, its weights) without loading torch: this module is imported
when a network is built or traced. The architecture, the key layout of the packaged weights and
the documented nodes are described in :mod:`preimage.features.efficientnet_lite`.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STAGES", "TRACER_KWARGS", "DocumentedNodes", "EfficientNetLite0", "MBConv", "SameConv2d",
           "convert_state_dict", "documented_nodes"]

#: The stages of EfficientNet-B0/Lite0: (blocks, kernel, stride of the first block, expansion, channels out).
STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``SAME`` padding, computed from the input size (a leaf
    module for FX tracing, so it is one graph node)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []  # F.pad order: left, right, top, bottom
        for n, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric (every stride-1 conv): no padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [("conv", SameConv2d(c_in, c_out, k, stride, groups=groups, bias=False)),
              ("bn", nn.BatchNorm2d(c_out, eps=1e-3))]
    if act:
        layers.append(("act", nn.ReLU6()))
    return nn.Sequential(collections.OrderedDict(layers))


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: ``expand`` (1×1, absent when the
    expansion is 1) → ``dw`` (k×k depthwise) → ``project`` (1×1, linear), plus the input when the
    shapes agree."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = _conv_bn(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.dw = _conv_bn(mid, mid, k, stride, groups=mid)
        self.project = _conv_bn(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (module names as in the table of the module docstring)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2)
        stages, c = [], 32
        for blocks, k, stride, expand, c_out in STAGES:
            stages.append(nn.Sequential(*(MBConv(c if j == 0 else c_out, c_out, k, stride if j == 0 else 1, expand)
                                          for j in range(blocks))))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.head = _conv_bn(c, 1280, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(1280, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The untrained control's initialisation: He-normal with fan-in (gain √2 before ReLU6, 1
        for the linear projections), unit batch-norm scales, classifier uniform ±1/√classes."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                linear = name.endswith("project.conv")
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear" if linear else "relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.head(self.stages(self.stem(x)))))


#: FX tracing options: SAME convolutions are single nodes.
TRACER_KWARGS = {"leaf_modules": [SameConv2d]}

_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}
_IN_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "dw.conv", "_bn1": "dw.bn",
             "_project_conv": "project.conv", "_bn2": "project.bn"}


def convert_state_dict(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The package's state dict (``_conv_stem.weight``, ``_blocks.<i>._depthwise_conv.weight`` …,
    the layout of the ``efficientnet_pytorch`` family) with this module's key names
    (``stem.conv.weight``, ``stages.<s>.<j>.dw.conv.weight`` …). A state dict already in this
    module's layout is returned as is; an unknown key is an error."""
    if not any(k.startswith(("_conv_stem.", "_blocks.")) for k in state):
        return dict(state)
    where = [(s, j) for s, (blocks, *_rest) in enumerate(STAGES) for j in range(blocks)]
    out: Dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                s, j = where[int(parts[1])]
                new = f"stages.{s}.{j}.{_IN_BLOCK[parts[2]]}.{'.'.join(parts[3:])}"
            else:
                new = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite0 state dict") from None
        out[new] = value
    return out


def documented_nodes(model: "EfficientNetLite0") -> Tuple[str, ...]:
    """The boundaries of ``model``'s top-level modules in the order its ``forward`` runs them
    (``stem``, ``stages.0`` … ``stages.6``, ``head``, ``pool``, ``fc``)."""
    return ("stem", *(f"stages.{i}" for i in range(len(model.stages))), "head", "pool", "fc")


class DocumentedNodes(nn.Module):
    """The documented nodes ``outputs`` (node → output key; :func:`documented_nodes`) of an
    :class:`EfficientNetLite0`, by running its top-level modules (stem, the seven stages, head,
    pool, fc) in order up to the deepest of them; ``forward`` returns ``{key: output}`` like a
    torchvision feature extractor of the same nodes. The modules are the network's own (shared,
    not copied)."""

    def __init__(self, model: "EfficientNetLite0", outputs: Mapping[str, str]) -> None:
        super().__init__()
        nodes = documented_nodes(model)
        unknown = [node for node in outputs if node not in nodes]
        if unknown:
            raise ValueError(f"not documented nodes of efficientnet_lite0: {', '.join(unknown)}")
        deepest = max(nodes.index(node) for node in outputs)
        self.steps = nn.ModuleList([model.stem, *model.stages, model.head, model.pool, model.fc][: deepest + 1])
        self.names = nodes[: deepest + 1]
        self.outputs = dict(outputs)
        self.eval()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        for name, step in zip(self.names, self.steps):
            x = step(x)
            if name in self.outputs:
                out[self.outputs[name]] = x
        return out

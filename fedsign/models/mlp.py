"""Multilayer perceptron: McMahan et al.'s (2017) "2NN" for federated learning.

``flatten -> fc = [Linear(C*s*s, 200) -> ReLU -> Linear(200, 200) -> ReLU]`` -> ``classifier = Linear(200, C)``
(199,210 weights on 28x28 grey images). No BatchNorm, no dropout. About 15x cheaper per CPU step than
``cnn_small`` on 28x28 inputs, which is what lets the CPU Table-1 protocol run to convergence.
Initialization: see :mod:`fedsign.models.common`.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import FedSignNet

MLP_HIDDEN = (200, 200)


class MLP(FedSignNet):
    """Fully connected layers + classifier; see module docstring."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28,
                 projection_dim: int | None = None, hidden: tuple[int, ...] = MLP_HIDDEN):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.fc = nn.Sequential(*layers)
        self._build_head(width, num_classes, projection_dim)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))

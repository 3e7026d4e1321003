"""McMahan et al.'s (2017) CNN for federated learning ("CNN" of the FedAvg paper; FL-bench's ``avgcnn``).

``conv5x5(in, 32) -> ReLU -> MaxPool2 -> conv5x5(32, 64) -> ReLU -> MaxPool2`` (no padding) -> flatten ->
``fc = Linear(64*s*s, 512) -> ReLU`` -> ``classifier = Linear(512, C)`` with ``s = ((size - 4) / 2 - 4) / 2``
(582,026 weights on 28x28 grey images: s = 4). No BatchNorm, no dropout.
Initialization: see :mod:`fedsign.models.common`.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import FedSignNet

FEDAVG_CNN_CHANNELS = (32, 64)
FEDAVG_CNN_HIDDEN = 512


def fedavg_cnn_side(image_size: int) -> int:
    """Side of the feature map after the two unpadded 5x5 convolutions and 2x2 max-pools."""
    return ((image_size - 4) // 2 - 4) // 2


class FedAvgCNN(FedSignNet):
    """Two unpadded 5x5 conv layers with max-pooling + one hidden FC + classifier; see module docstring."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28,
                 projection_dim: int | None = None):
        super().__init__()
        c1, c2 = FEDAVG_CNN_CHANNELS
        self.features = nn.Sequential(nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2))
        side = fedavg_cnn_side(image_size)
        self.fc = nn.Sequential(nn.Linear(c2 * side * side, FEDAVG_CNN_HIDDEN), nn.ReLU())
        self._build_head(FEDAVG_CNN_HIDDEN, num_classes, projection_dim)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))

"""Small CNN for 8x8 (digits), 28x28 (MNIST/FMNIST) and 32x32 inputs.

``conv3x3(in, 32, pad 1) -> ReLU [-> MaxPool2] -> conv3x3(32, 64, pad 1) -> ReLU -> MaxPool2``
-> flatten -> ``fc = Linear(64*s*s, 128) -> ReLU`` -> ``classifier = Linear(128, C)``.
Pooling adapts to the input: one 2x2 max-pool (after conv2) when ``image_size < 16``,
two (after each conv) otherwise; ``s = image_size / 2**pools`` (8 -> 4, 28 -> 7, 32 -> 8).
No BatchNorm, no dropout, so it runs unchanged under ``torch.func.vmap``.
``cnn_small`` is the same network at half the conv widths and hidden size (16, 32; 64): about
4x fewer multiply-adds, for the CPU Table-1 protocol.
Initialization: see :mod:`fedsign.models.common`.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import FedSignNet

CNN_CHANNELS = (32, 64)
CNN_HIDDEN = 128
CNN_SMALL_CHANNELS = (16, 32)
CNN_SMALL_HIDDEN = 64


def cnn_num_pools(image_size: int) -> int:
    """Number of 2x2 max-pools the CNN uses for ``image_size``."""
    return 1 if image_size < 16 else 2


class SmallCNN(FedSignNet):
    """Two conv layers + one hidden FC + classifier; see module docstring."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 28,
        projection_dim: int | None = None,
        channels: tuple[int, int] = CNN_CHANNELS,
        hidden: int = CNN_HIDDEN,
    ):
        super().__init__()
        pools = cnn_num_pools(image_size)
        c1, c2 = channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c1, kernel_size=3, padding=1), nn.ReLU()]
        if pools == 2:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        s = image_size // 2**pools
        self.fc = nn.Sequential(nn.Linear(c2 * s * s, hidden), nn.ReLU())
        self._build_head(hidden, num_classes, projection_dim)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))

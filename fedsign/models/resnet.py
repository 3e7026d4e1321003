"""CIFAR ResNet-20 (He et al. 2016, Sec. 4.2): 3 stages x 3 BasicBlocks, 16/32/64 channels.

Follows the authors' FedRepo ``ResNet(20)``: stem ``Conv3x3(in, 16, bias=False) -> BN -> ReLU``;
BasicBlock ``conv3x3 -> BN -> ReLU -> conv3x3 -> BN``, plus shortcut, then ReLU;
**option-B shortcuts** (``Conv1x1(stride) -> BN`` projection where shape changes, identity
otherwise); ``AdaptiveAvgPool2d(1)`` so any input size works (8x8, 28x28, 32x32...);
``classifier = Linear(64, C)``. 272,474 parameters for C=10 and 3 input channels.
Every ReLU is its own module (``relu1`` inside the block, ``relu2`` after the residual sum).
Initialization: see :mod:`fedsign.models.common`.
Note: BatchNorm updates running stats in train mode; use eval mode (or
``torch.func.replace_all_batch_norm_modules_``) for ``torch.func.vmap`` over parameter sets.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import FedSignNet


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-conv-BN (option B) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(FedSignNet):
    """ResNet-(6n+2) for small images; ``blocks_per_stage=3`` gives ResNet-20."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int,
        in_channels: int = 3,
        projection_dim: int | None = None,
        widths: tuple[int, int, int] = (16, 32, 64),
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        stages = []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self._build_head(in_planes, num_classes, projection_dim)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return torch.flatten(self.avgpool(out), 1)

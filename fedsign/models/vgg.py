"""CIFAR-style VGG nets (3x3 convs, five 2x2 max-pools), following the authors' FedRepo VGG.

Layout, checked against lxcnju/FedRepo ``networks/basic_nets.py`` (class ``VGG``):

* ``features``: for each cfg entry a ``Conv2d(3x3, stride 1, padding 1, bias=True)``
  [-> ``BatchNorm2d`` for ``*_bn``] -> ``ReLU``; ``"M"`` is ``MaxPool2d(2, 2)``.
* flatten (512 values for 32x32 input; 512 * (image_size / 32)**2 in general).
* ``fc`` (the hidden head, *not* the classifier): ``Linear(flat, 512) -> ReLU -> Dropout(0.5)
  -> Linear(512, 512) -> ReLU -> Dropout(0.5)`` (dropout after each ReLU).
* ``classifier``: ``Linear(512, num_classes)`` (or ``Linear(projection_dim, C)`` after a projection head).

The same 512-512-512-C classifier with dropout is used for every depth (as in FedRepo).
cfgs: vgg8 = [64,M,128,M,256,M,512,M,512,M]; vgg11 = cfg "A"; vgg16 = cfg "D".
Initialization: see :mod:`fedsign.models.common` (Kaiming-normal fan_out convs, N(0, 0.01) linears,
zero biases, BN weight by ``bn_weight_init``).
Note: ``Dropout`` draws random masks in train mode; under ``torch.func.vmap`` pass ``randomness=``.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import FedSignNet

VGG_CFGS: dict[str, list] = {
    "vgg8": [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
VGG_HIDDEN = 512
VGG_DROPOUT = 0.5


class VGG(FedSignNet):
    """VGG body + 512-512 hidden FC (``fc``) + ``classifier``; see module docstring."""

    def __init__(
        self,
        cfg: list,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        batch_norm: bool = False,
        projection_dim: int | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        size = image_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            else:
                layers.append(nn.Conv2d(c, v, kernel_size=3, stride=1, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU())
                c = v
        self.features = nn.Sequential(*layers)
        flat = c * size * size
        self.fc = nn.Sequential(
            nn.Linear(flat, VGG_HIDDEN),
            nn.ReLU(),
            nn.Dropout(VGG_DROPOUT),
            nn.Linear(VGG_HIDDEN, VGG_HIDDEN),
            nn.ReLU(),
            nn.Dropout(VGG_DROPOUT),
        )
        self._build_head(VGG_HIDDEN, num_classes, projection_dim)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))

"""Shared pieces of the FedSign models: errors, initialization, the classifier head.

Initialization schemes (``INITS``, applied by :func:`initialize` to every model built by ``build_model``):

``"pytorch"``: each layer keeps the initialization its constructor drew (PyTorch's defaults:
Kaiming-uniform with a = sqrt(5) for Conv2d / Linear weights, uniform biases); BatchNorm weights
follow ``bn_weight_init``.

``"fedrepo"``: the scheme of the authors' FedRepo ``weights_init``:

* ``nn.Conv2d``: weight ~ Kaiming-normal (``mode="fan_out"``, ``nonlinearity="relu"``), bias 0.
* ``nn.Linear`` (hidden FC, projection head and classifier): weight ~ N(0, 0.01) (std 0.01), bias 0.
* BatchNorm: bias 0; weight by ``bn_weight_init``:
  ``"ones"`` -> 1 (default), ``"uniform"`` -> U(0, 1), ``"gaussian"`` -> N(0, 0.1) (std 0.1).
"""

from __future__ import annotations

import torch
from torch import nn

BN_WEIGHT_INITS = ("ones", "uniform", "gaussian")
INITS = ("fedrepo", "pytorch")
GAUSSIAN_BN_STD = 0.1
LINEAR_INIT_STD = 0.01


class ModelConfigError(ValueError):
    """A model name / input shape / option that the models package cannot build."""


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's floating-point state (parameters and BN statistics), on its device."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def hand_over_float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``float_state`` without the copy: the model's floating-point state tensors themselves (detached),
    while the model gets fresh, uninitialized tensors of the same shapes in their place. For a model that
    is loaded before every use (a pooled client model): the values it hands over are never written again."""
    state, handed = {}, {}
    for k, v in model.state_dict(keep_vars=True).items():
        if v.is_floating_point():
            if id(v) not in handed:  # a tensor listed under two names (tied weights) is handed over once
                handed[id(v)] = v.detach()
                v.data = torch.empty_like(v)
            state[k] = handed[id(v)]
    return state


def check_bn_weight_init(bn_weight_init: str) -> None:
    if bn_weight_init not in BN_WEIGHT_INITS:
        raise ModelConfigError(
            f"unknown bn_weight_init {bn_weight_init!r}; use one of {', '.join(BN_WEIGHT_INITS)}"
        )


def check_init(init: str) -> None:
    if init not in INITS:
        raise ModelConfigError(f"unknown init {init!r}; use one of {', '.join(INITS)}")


@torch.no_grad()
def initialize(model: nn.Module, bn_weight_init: str = "ones", init: str = "fedrepo") -> nn.Module:
    """(Re-)initialize every Conv2d / Linear (``init`` = "fedrepo") and BatchNorm of ``model`` in
    ``model.modules()`` order.

    Draws come from the global torch RNG, so ``torch.manual_seed`` makes the result deterministic.
    """
    check_bn_weight_init(bn_weight_init)
    check_init(init)
    for m in model.modules():
        if init == "pytorch" and isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=LINEAR_INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                if bn_weight_init == "ones":
                    nn.init.ones_(m.weight)
                elif bn_weight_init == "uniform":
                    nn.init.uniform_(m.weight, 0.0, 1.0)
                else:
                    nn.init.normal_(m.weight, mean=0.0, std=GAUSSIAN_BN_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


class FedSignNet(nn.Module):
    """Base class: a body producing penultimate features, optional projection head, final classifier.

    Subclasses build their body, call :meth:`_build_head` last (so ``classifier`` is the last module),
    and define ``penultimate(x)`` returning the flattened penultimate features.
    ``forward(x, return_features=False)`` returns logits, or ``(logits, features)`` where
    ``features`` is exactly the tensor the classifier receives (the projection output when a
    projection head is present). ``feature_dim`` is the classifier input dimension.
    """

    classifier: nn.Linear
    projection: nn.Sequential | None
    feature_dim: int
    num_classes: int

    def _build_head(self, penultimate_dim: int, num_classes: int, projection_dim: int | None) -> None:
        self.penultimate_dim = penultimate_dim
        self.num_classes = num_classes
        if projection_dim is None:
            self.projection = None
            self.feature_dim = penultimate_dim
        else:
            self.projection = nn.Sequential(
                nn.Linear(penultimate_dim, penultimate_dim),
                nn.ReLU(),
                nn.Linear(penultimate_dim, projection_dim),
            )
            self.feature_dim = projection_dim
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        h = self.penultimate(x)
        if self.projection is not None:
            h = self.projection(h)
        logits = self.classifier(h)
        if return_features:
            return logits, h
        return logits

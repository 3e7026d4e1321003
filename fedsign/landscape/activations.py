"""Activation confusion along a direction (Appendix D.2, Fig. 28).

For every ``nn.ReLU`` module's output unit on every sample, compare "active" (> 0) under the model
``theta`` with "active" under ``theta + lambda * d``. The 2 x 2 matrix (rows: original active /
inactive; columns: perturbed active / inactive) holds fractions of all units; its diagonal sum is
the share of units whose state did not change.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .directions import perturb
from .evaluate import EvalData, as_eval_data, point_buffers


def relu_states(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                x: Tensor) -> list[Tensor]:
    """Boolean "active" masks of every ReLU module's output (eval mode, ``model.modules()`` order)."""
    states: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: states.append(out > 0))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model.eval()
            functional_call(model, {**params, **buffers}, (x,))
    finally:
        for h in hooks:
            h.remove()
    if not states:
        raise ValueError("the model has no nn.ReLU module to inspect")
    return states


def activation_confusion(
    model: nn.Module,
    theta: Mapping[str, Tensor],
    direction: Mapping[str, Tensor],
    data: EvalData,
    lambdas: Sequence[float],
    *,
    buffers: Mapping[str, Tensor] | None = None,
    bn: str = "recalibrate",
    samples: int = 256,
) -> dict:
    """Per lambda, the activation confusion matrix of ``theta + lambda * d`` against ``theta`` on the
    first ``samples`` evaluation images, and its diagonal sum."""
    data = as_eval_data(data)
    device = data.device_for(model)
    model.to(device)
    x, _ = data.head(samples, device)
    base = relu_states(model, theta, point_buffers(model, theta, data, buffers=buffers, bn=bn), x)
    matrices, diagonals = [], []
    for lam in lambdas:
        point = perturb(theta, direction, lam)
        states = relu_states(model, point, point_buffers(model, point, data, buffers=buffers, bn=bn), x)
        counts = torch.zeros(2, 2, dtype=torch.float64)
        for before, after in zip(base, states):
            for i, b in enumerate((before, ~before)):
                for j, a in enumerate((after, ~after)):
                    counts[i, j] += float((b & a).sum())
        matrix = counts / counts.sum()
        matrices.append(matrix.tolist())
        diagonals.append(float(matrix[0, 0] + matrix[1, 1]))
    return {"lambdas": [float(v) for v in lambdas], "matrices": matrices, "diagonal": diagonals,
            "samples": int(len(x)), "bn": bn}

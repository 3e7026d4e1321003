"""Hessian traces of networks: Hutchinson's estimator ``tr H = E_v[v^T H v]`` (Rademacher v), with
Hessian-vector products by forward-over-reverse differentiation (``torch.func.jvp`` of ``grad``).

For softmax regression the trace has a closed form (:mod:`fedsign.landscape.theory`); this module
is for networks, where the CD x CD Hessian is out of reach. BatchNorm runs in eval mode with the
statistics the point is given (held constant), so the loss is a function of the parameters alone.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from .directions import perturb
from .evaluate import EvalData, as_eval_data, point_buffers

Params = dict[str, Tensor]


def hutchinson_trace(
    loss_fn: Callable[[Params], Tensor],
    params: Mapping[str, Tensor],
    probes: int = 32,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """(estimate, standard error) of the trace of the Hessian of ``loss_fn`` at ``params``."""
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    primal = {n: p.detach() for n, p in params.items()}
    grad_fn = grad(loss_fn)
    samples = []
    for _ in range(probes):
        v = {n: (torch.randint(0, 2, p.shape, generator=generator).to(p) * 2 - 1) for n, p in primal.items()}
        _, hv = jvp(grad_fn, (primal,), (v,))
        samples.append(float(sum((v[n] * hv[n]).sum() for n in primal)))
    values = np.array(samples)
    stderr = float(values.std(ddof=1) / math.sqrt(probes)) if probes > 1 else float("nan")
    return float(values.mean()), stderr


def network_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
) -> Callable[[Params], Tensor]:
    """Mean CE on ``(x, y)`` as a function of a subset of ``params`` (the rest held fixed), eval mode."""
    fixed = {**params, **buffers}

    def loss(selected: Params) -> Tensor:
        return F.cross_entropy(functional_call(model, {**fixed, **selected}, (x,)), y)

    return loss


def trace_curve(
    model: nn.Module,
    theta: Mapping[str, Tensor],
    direction: Mapping[str, Tensor],
    data: EvalData,
    lambdas: Sequence[float],
    *,
    buffers: Mapping[str, Tensor] | None = None,
    bn: str = "recalibrate",
    probes: int = 16,
    samples: int = 512,
    seed: int = 0,
) -> dict:
    """Hutchinson trace of the CE Hessian w.r.t. the direction's parameters at ``theta + lambda * d``,
    on the first ``samples`` evaluation images (BN statistics per ``bn`` at each point)."""
    data = as_eval_data(data)
    device = data.device_for(model)
    model.to(device).eval()
    x, y = data.head(samples, device)
    generator = torch.Generator().manual_seed(seed)
    traces, errors = [], []
    for lam in lambdas:
        point = perturb(theta, direction, lam)
        bufs = point_buffers(model, point, data, buffers=buffers, bn=bn)
        est, err = hutchinson_trace(network_loss(model, point, bufs, x, y),
                                    {n: point[n] for n in direction}, probes, generator)
        traces.append(est)
        errors.append(err)
    return {"lambdas": [float(v) for v in lambdas], "trace": traces, "stderr": errors,
            "probes": probes, "samples": int(len(x)), "bn": bn}

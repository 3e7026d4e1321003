"""1-D error/loss curves: valleys ``theta_f + lambda * s * d`` (Figs. 3-7, 9), ratio-r sweeps (Fig. 4)
and the interpolation ``(1 - lambda) theta_1 + lambda theta_2`` of two models (Fig. 8).

Every function returns a JSON-ready record (lists and floats) plus the evaluation timing.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .directions import difference, direction_label, make_directions
from .evaluate import Data, Evaluation, Line, evaluate_lines
from .groups import parameter_roles
from .signs import sign_consistency

Params = dict[str, Tensor]


def lambda_grid(points: int = 21, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """``points`` evenly spaced values in ``[lo, hi]`` (21 in [-1, 1] by default)."""
    if points < 2:
        raise ValueError(f"a lambda grid needs at least 2 points, got {points}")
    return np.linspace(lo, hi, points)


def asymmetry(lambdas: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """Means over the positive side ``lambda in [0, 1]`` and the negative side ``[-1, 0]`` (the paper's
    Fig. 4 averages, lambda = 0 in both) and ``asymmetry = neg_mean - pos_mean``: > 0 when the
    positive side is flatter."""
    lam, val = np.asarray(lambdas, float), np.asarray(values, float)
    pos, neg = float(val[lam >= 0].mean()), float(val[lam <= 0].mean())
    return {"pos_mean": pos, "neg_mean": neg, "asymmetry": neg - pos}


def timing(ev: Evaluation) -> dict[str, float | int | bool]:
    return {"points": ev.points, "seconds": ev.seconds, "points_per_second": ev.points_per_second,
            "vectorized": ev.vectorized, "chunk": ev.chunk}


def _coef_table(scales: Sequence[float], lambdas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Unique coefficients ``s * lambda`` and, per (scale, lambda), the index into them."""
    products = np.round(np.outer(scales, lambdas), 12)
    unique, inverse = np.unique(products, return_inverse=True)
    return unique, inverse.reshape(products.shape)


def valley_curves(
    model: nn.Module,
    theta: Mapping[str, Tensor],
    directions: Mapping[str, Mapping[str, Tensor]],
    data: Data,
    *,
    scales: Sequence[float] = (0.2, 1.0, 2.0),
    lambdas: Sequence[float] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    bn: str = "recalibrate",
    chunk: int = 8,
    vectorize: bool = True,
    bf16: bool = False,
) -> dict:
    """Error and CE curves of ``theta + lambda * s * d`` for every (normalized) direction and scale.

    ``theta``: every model parameter (the converged model); each direction covers the perturbed
    names only. All points of all directions are evaluated in one batched call; a coefficient
    ``s * lambda`` shared by several scales (lambda = 0) is evaluated once.
    """
    lambdas = lambda_grid() if lambdas is None else np.asarray(lambdas, float)
    unique, index = _coef_table(scales, lambdas)
    lines = [Line(theta, d, unique.tolist(), buffers) for d in directions.values()]
    ev = evaluate_lines(model, lines, data, bn=bn, chunk=chunk, vectorize=vectorize, bf16=bf16)
    curves = {}
    for k, name in enumerate(directions):
        per_scale = {}
        for i, s in enumerate(scales):
            err, loss = ev.error[k][index[i]], ev.loss[k][index[i]]
            per_scale[f"{s:g}"] = {"error": err.tolist(), "loss": loss.tolist(),
                                   "asymmetry": {"error": asymmetry(lambdas, err), "loss": asymmetry(lambdas, loss)}}
        curves[name] = {"label": direction_label(name), "scales": per_scale}
    return {"lambdas": lambdas.tolist(), "scales": [float(s) for s in scales], "bn": bn,
            "curves": curves, "timing": timing(ev)}


def ratio_sweep(
    model: nn.Module,
    theta: Mapping[str, Tensor],
    names: Sequence[str],
    data: Data,
    *,
    ratios: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
    scale: float = 1.0,
    lambdas: Sequence[float] | None = None,
    normalization: str = "ns",
    filter_1d: str = "copy",
    seed: int = 0,
    **evaluation,
) -> dict:
    """Fig. 4: for G(0,1) noise with a fraction r of elements given theta's sign, the mean error and
    loss over the positive and negative sides, and the measured sign consistency with theta.

    ``names`` are the perturbed parameters; ``evaluation`` goes to :func:`valley_curves`.
    """
    selected = {n: theta[n] for n in names}
    directions = make_directions([f"ratio-{r:g}" for r in ratios], selected, seed, normalization=normalization,
                                 filter_1d=filter_1d)
    record = valley_curves(model, theta, directions, data, scales=(scale,), lambdas=lambdas, **evaluation)
    key = f"{scale:g}"
    sweep = {"ratios": [float(r) for r in ratios],
             "ssr": [sign_consistency(d, selected)["all"] for d in directions.values()]}
    for metric in ("error", "loss"):
        for side in ("pos_mean", "neg_mean", "asymmetry"):
            sweep[f"{metric}_{side}"] = [c["scales"][key]["asymmetry"][metric][side] for c in record["curves"].values()]
    record["sweep"] = sweep
    return record


def group_stats(params: Mapping[str, Tensor], groups: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Mean, std and size of every parameter group (``groups`` maps names to group labels)."""
    members: dict[str, list[Tensor]] = {}
    for name, label in groups.items():
        if name in params:
            members.setdefault(label, []).append(params[name].detach().reshape(-1).double())
    out = {}
    for label, parts in members.items():
        flat = torch.cat(parts)
        out[label] = {"mean": float(flat.mean()), "std": float(flat.std()) if flat.numel() > 1 else 0.0,
                      "count": int(flat.numel())}
    return out


def interpolation(
    model: nn.Module,
    theta1: Mapping[str, Tensor],
    theta2: Mapping[str, Tensor],
    data: Data,
    *,
    groups: Mapping[str, str] | None = None,
    buffers1: Mapping[str, Tensor] | None = None,
    buffers2: Mapping[str, Tensor] | None = None,
    lambdas: Sequence[float] | None = None,
    bn: str = "recalibrate",
    chunk: int = 8,
    vectorize: bool = True,
    bf16: bool = False,
) -> dict:
    """Fig. 8: error/loss of ``(1 - lambda) theta1 + lambda theta2`` (default 31 points in [-1, 2]),
    per-group mean/std of both models, and the sign consistency (per group) of theta1 with theta2
    and of each model with ``d = theta2 - theta1``. ``stale`` interpolates the running statistics too.
    ``groups`` maps names to group labels (default :func:`~fedsign.landscape.groups.parameter_roles`).
    """
    groups = parameter_roles(model) if groups is None else groups
    lambdas = lambda_grid(31, -1.0, 2.0) if lambdas is None else np.asarray(lambdas, float)
    d = difference(theta2, theta1)
    buffer_direction = difference(buffers2, buffers1) if buffers1 is not None and buffers2 is not None else None
    line = Line(theta1, d, lambdas.tolist(), buffers1, buffer_direction)
    ev = evaluate_lines(model, [line], data, bn=bn, chunk=chunk, vectorize=vectorize, bf16=bf16)
    return {
        "lambdas": lambdas.tolist(), "bn": bn,
        "error": ev.error[0].tolist(), "loss": ev.loss[0].tolist(),
        "stats": {"theta1": group_stats(theta1, groups), "theta2": group_stats(theta2, groups)},
        "ssr": {"theta1_theta2": sign_consistency(theta1, theta2, groups),
                "theta1_d": sign_consistency(theta1, d, groups),
                "theta2_d": sign_consistency(theta2, d, groups)},
        "timing": timing(ev),
    }

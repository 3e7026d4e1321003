"""Model soups (§6.1, Fig. 11): two models trained from one initialization on the two halves of a
dataset; at each checkpoint, the interpolation accuracy, SSR-IA / SSR-IB / SSR-AB and the gap
``Acc(0.5 theta_A + 0.5 theta_B) - (Acc(theta_A) + Acc(theta_B)) / 2``."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .curves import lambda_grid, timing
from .directions import difference
from .evaluate import Data, Line, evaluate_lines, split_state
from .groups import parameter_roles
from .signs import sign_consistency
from .variants import State


def split_halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded uniform split of ``range(n)`` into two halves (sorted index tensors)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2].sort().values, perm[n // 2:].sort().values


def soup_record(
    model: nn.Module,
    init: Mapping[str, Tensor],
    checkpoints_a: Mapping[int, State],
    checkpoints_b: Mapping[int, State],
    data: Data,
    *,
    groups: Mapping[str, str] | None = None,
    lambdas: Sequence[float] | None = None,
    bn: str = "recalibrate",
    chunk: int = 8,
    vectorize: bool = True,
    bf16: bool = False,
) -> dict:
    """Per checkpoint epoch: accuracy of ``(1 - lambda) theta_A + lambda theta_B`` (default 11 points in
    [0, 1]), the three sign-consistency ratios (``all`` and per group, default groups
    :func:`~fedsign.landscape.groups.parameter_roles`) and the soup gap at lambda = 0.5."""
    groups = parameter_roles(model) if groups is None else groups
    lambdas = lambda_grid(11, 0.0, 1.0) if lambdas is None else np.asarray(lambdas, float)
    grid = np.unique(np.round(np.concatenate([lambdas, [0.0, 0.5, 1.0]]), 12))
    theta_i, _ = split_state(model, init)
    epochs = sorted(checkpoints_a)
    lines = []
    for e in epochs:
        pa, ba = split_state(model, checkpoints_a[e])
        pb, bb = split_state(model, checkpoints_b[e])
        lines.append(Line(pa, difference(pb, pa), grid.tolist(), ba, difference(bb, ba) if ba else None))
    ev = evaluate_lines(model, lines, data, bn=bn, chunk=chunk, vectorize=vectorize, bf16=bf16)
    pos = {round(float(g), 12): i for i, g in enumerate(grid)}
    idx = [pos[round(float(g), 12)] for g in lambdas]
    rows = []
    for k, e in enumerate(epochs):
        acc = 1.0 - ev.error[k]
        pa, pb = lines[k].anchor, split_state(model, checkpoints_b[e])[0]
        rows.append({
            "epoch": e, "accuracy": acc[idx].tolist(), "loss": ev.loss[k][idx].tolist(),
            "ssr_ia": sign_consistency(theta_i, pa, groups), "ssr_ib": sign_consistency(theta_i, pb, groups),
            "ssr_ab": sign_consistency(pa, pb, groups),
            "gap": float(acc[pos[0.5]] - 0.5 * (acc[pos[0.0]] + acc[pos[1.0]])),
        })
    return {"lambdas": lambdas.tolist(), "bn": bn, "checkpoints": rows, "timing": timing(ev)}

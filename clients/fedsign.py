"""FedSign (the paper, Eq. 1 and Algorithm 1): cross-entropy minus a sign-alignment reward.

For every element of every trainable tensor,
``u = sgp(theta_t) * sigmoid(theta_k) + sgp(-theta_t) * sigmoid(-theta_k)`` with
``sgp(x) = 1 if x > 0 else 0`` and ``theta_t`` the received global model; the term is
``-gamma * R(u)`` over all N trainable elements (T tensors). Eq. 1 leaves the reduction R
open; the gradient per weight is ``-gamma * sigmoid'(theta_k) * sign(theta_t) * c`` with
``sigmoid' <= 1/4`` and c as below; the ratios are ||grad term|| / ||grad CE|| on one client
batch at the initial model and after 2 local epochs (``benchmarks/results/term_strength.md``;
inside a run the logged ratio is several times lower, benchmarks/README.md):

- ``"sum"`` (Eq. 1 literally): c = 1. The term's gradient norm is ~ gamma * sqrt(N) / 4,
  so its strength grows with the model: at the paper's gamma = 0.1 the cnn collapses and
  VGG8 diverges already at 0.01.
- ``"root4"`` (default; this project's choice, not the paper's): the sum divided by N^(1/4),
  c = N^(-1/4); gradient norm ~ gamma * N^(1/4) / 4. Gamma in {0.001, 0.01, 0.1} gives
  ratio 0.00489-0.0142 -> 0.489-1.42 on the cnn (0.4M weights) and 0.0305-0.0355 ->
  3.05-3.55 on VGG8 (4.4M).
- ``"sqrt"``: the sum divided by sqrt(N), c = N^(-1/2); gradient norm ~ gamma / 4
  whatever the size, i.e. weak (ratio 0.0192-0.0773 at gamma = 0.1).
- ``"mean"``: each tensor's mean of u, averaged over the tensors (the convention of the
  authors' FedRepo regularizers), c = 1 / (numel(tensor) * T); numerically inert at the
  paper's gammas (ratio <= 0.000416 at gamma = 0.01).

The same term can be added to any other algorithm (run-config ``sign-gamma`` > 0), see
:class:`WithSignTerm`. The server is FedAvg's; Algorithm 1 averages with equal weights, which
run-config ``weighted=false`` gives (the default, true, weights by ``num-examples``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clients.base import ClientAlgorithm, ClientRound
from fedsign.algorithms import SIGN_REDUCTIONS
from fedsign.config import RunConfig


def sign_agreement_scores(local: Tensor, global_: Tensor) -> Tensor:
    """Per-element u: sigmoid(theta_k) where theta_t > 0, sigmoid(-theta_k) where theta_t < 0, else 0.

    Written as ``sigmoid(sign(theta_t) * theta_k) * |sign(theta_t)|``: three element-wise passes forward and
    three backward (a two-branch form took ~3x the time on the MLP, more than its training step) with
    bit-identical values and gradients (tests/test_algorithms.py pins them)."""
    signs = torch.sign(global_).to(local.dtype)
    return torch.sigmoid(local * signs) * signs.abs()


def sign_term(
    local: Mapping[str, Tensor], global_: Mapping[str, Tensor], gamma: float, reduction: str = "root4"
) -> Tensor:
    """-gamma * R(u) over the tensors of ``global_`` (R: one of ``SIGN_REDUCTIONS``, module docstring)."""
    if reduction not in SIGN_REDUCTIONS:
        raise ValueError(f"unknown sign-term reduction {reduction!r}; use one of {', '.join(SIGN_REDUCTIONS)}")
    scores = [sign_agreement_scores(local[k], g) for k, g in global_.items()]
    if reduction == "mean":
        return -gamma * sum(u.mean() for u in scores) / len(scores)
    total = sum(u.sum() for u in scores)
    numel = sum(u.numel() for u in scores)
    scale = {"sum": 1.0, "root4": numel ** -0.25, "sqrt": numel ** -0.5}[reduction]
    return -gamma * scale * total


class FedSignClient(ClientAlgorithm):
    """Local objective CE + ``sign_term`` with gamma = ``fedsign-gamma``,
    R = ``fedsign-reduction``; no state."""

    name = "fedsign"
    has_term = True

    def loss_term(self, *, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        return sign_term(params, global_params, config.fedsign_gamma, config.fedsign_reduction)


class WithSignTerm(ClientAlgorithm):
    """Another client algorithm with the FedSign term added to its loss.

    Parameters
    ----------
    inner : ClientAlgorithm
        The algorithm whose model changes, state and term are kept.
    gamma : float
        Weight of the sign term (run-config ``sign-gamma``).
    reduction : str
        One of ``SIGN_REDUCTIONS`` (run-config ``fedsign-reduction``).
    """

    has_term = True

    def __init__(self, inner: ClientAlgorithm, gamma: float, reduction: str) -> None:
        self.inner, self.gamma, self.reduction = inner, gamma, reduction
        self.name = f"{inner.name}+sign"

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        return self.inner.model_options(config)

    def prepare_model(self, model: nn.Module, config: RunConfig) -> None:
        self.inner.prepare_model(model, config)

    def term_inputs(self, ctx: ClientRound) -> dict[str, Any]:
        return self.inner.term_inputs(ctx) if self.inner.has_term else {}

    def loss_term(self, *, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        sign = sign_term(params, global_params, self.gamma, self.reduction)
        if not self.inner.has_term:
            return sign
        return sign + self.inner.loss_term(model=model, params=params, features=features, x=x, y=y, inputs=inputs,
                                           global_params=global_params, config=config)

    def finish(self, ctx: ClientRound) -> dict[str, float]:
        return self.inner.finish(ctx)

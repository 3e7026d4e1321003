"""FedSign (the paper, Eq. 1 and Algorithm 1): cross-entropy minus a sign-alignment reward.

For every element of every trainable tensor,
``u = sgp(theta_t) * sigmoid(theta_k) + sgp(-theta_t) * sigmoid(-theta_k)`` with
``sgp(x) = 1 if x > 0 else 0`` and ``theta_t`` the received global model; the term is
``-gamma * R(u)``. Eq. 1 leaves the reduction R open:

- ``"mean"`` (default): each tensor's mean of u, averaged over the tensors (the
  convention of the authors' FedRepo regularizers); gradient
  ``-gamma * sigmoid'(theta_k) * sign(theta_t) / (numel * num_tensors)``.
- ``"sum"``: the sum of u over all elements (the literal reading); gradient
  ``-gamma * sigmoid'(theta_k) * sign(theta_t)``, which pushes every weight away from
  zero by up to lr*gamma/4 per step whatever the model's size.

The same term can be added to any other algorithm (run-config ``sign-gamma`` > 0), see
:class:`WithSignTerm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clients.base import ClientAlgorithm, ClientState
from fedsign.config import SIGN_REDUCTIONS, RunConfig


def sign_agreement_scores(local: Tensor, global_: Tensor) -> Tensor:
    """Per-element u: sigmoid(theta_k) where theta_t > 0, sigmoid(-theta_k) where theta_t < 0, else 0."""
    positive = (global_ > 0).to(local.dtype)
    negative = (global_ < 0).to(local.dtype)
    return positive * torch.sigmoid(local) + negative * torch.sigmoid(-local)


def sign_term(
    local: Mapping[str, Tensor], global_: Mapping[str, Tensor], gamma: float, reduction: str = "mean"
) -> Tensor:
    """-gamma * R(u) over the tensors of ``global_`` (R: ``"mean"`` or ``"sum"``, module docstring)."""
    scores = [sign_agreement_scores(local[k], g) for k, g in global_.items()]
    if reduction == "mean":
        total = sum(u.mean() for u in scores) / len(scores)
    elif reduction == "sum":
        total = sum(u.sum() for u in scores)
    else:
        raise ValueError(f"unknown sign-term reduction {reduction!r}; "
                         f"use one of {', '.join(SIGN_REDUCTIONS)}")
    return -gamma * total


class FedSignClient(ClientAlgorithm):
    """Local objective CE + ``sign_term`` with gamma = ``fedsign-gamma``,
    R = ``fedsign-reduction``; no state."""

    name = "fedsign"

    def term_inputs(self, model, global_params, state, config):
        return {}

    def loss_term(self, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
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
        ``"mean"`` or ``"sum"`` (run-config ``fedsign-reduction``).
    """

    def __init__(self, inner: ClientAlgorithm, gamma: float, reduction: str) -> None:
        self.inner, self.gamma, self.reduction = inner, gamma, reduction
        self.name = f"{inner.name}+sign"

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        return self.inner.model_options(config)

    def prepare_model(self, model: nn.Module, config: RunConfig) -> None:
        self.inner.prepare_model(model, config)

    def term_inputs(
        self, model: nn.Module, global_params: dict[str, Tensor], state: ClientState, config: RunConfig
    ) -> dict[str, Any]:
        return {"inner": self.inner.term_inputs(model, global_params, state, config)}

    def loss_term(self, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        sign = sign_term(params, global_params, self.gamma, self.reduction)
        if inputs["inner"] is None:
            return sign
        return self.inner.loss_term(model, params, features, x, y, inputs["inner"], global_params, config) + sign

    def finish(
        self, model: nn.Module, global_params: dict[str, Tensor], state: ClientState, config: RunConfig
    ) -> dict[str, float]:
        return self.inner.finish(model, global_params, state, config)

"""FedDyn's client (Acar et al., ICLR 2021, Algorithm 1): a dynamic linear + quadratic regularizer.

Client k keeps g_k (zero before its first round) and minimizes
``L_k(theta) - <g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2``; after training,
``g_k <- g_k - alpha (theta_k - theta^{t-1})``. This is the official alpemreacar/FedDyn
client (there ``local_param_list`` holds ``-g_k / alpha``) with the squared norm and the
linear term both differentiated, over the trainable parameters only (BN running
statistics are not part of theta).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clients.base import ClientAlgorithm, ClientState
from fedsign.config import RunConfig

STATE_KEY = "feddyn-grad"


def dyn_term(
    local: Mapping[str, Tensor], global_: Mapping[str, Tensor], grad_state: Mapping[str, Tensor], alpha: float
) -> Tensor:
    """-<g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2 over the tensors of ``global_``;
    gradient ``-g_k + alpha (theta - theta^{t-1})``."""
    linear = sum((grad_state[k] * local[k]).sum() for k in global_)
    quadratic = sum(((local[k] - g) ** 2).sum() for k, g in global_.items())
    return -linear + (alpha / 2) * quadratic


def updated_grad_state(
    local: Mapping[str, Tensor], global_: Mapping[str, Tensor], grad_state: Mapping[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """g_k - alpha (theta_k - theta^{t-1}), per tensor."""
    return {k: grad_state[k] - alpha * (local[k].detach() - g) for k, g in global_.items()}


class FedDynClient(ClientAlgorithm):
    """Local objective CE + ``dyn_term`` with alpha = ``feddyn-alpha``; state g_k."""

    name = "feddyn"

    def grad_state(self, global_params: dict[str, Tensor], state: ClientState) -> dict[str, Tensor]:
        """This client's g_k on the model's device (zeros before its first round)."""
        stored = state.get(STATE_KEY)
        if stored is None:
            return {k: torch.zeros_like(g) for k, g in global_params.items()}
        return {k: stored[k].to(device=g.device, dtype=g.dtype) for k, g in global_params.items()}

    def term_inputs(
        self, model: nn.Module, global_params: dict[str, Tensor], state: ClientState, config: RunConfig
    ) -> dict[str, Any]:
        return {"grad_state": self.grad_state(global_params, state)}

    def loss_term(self, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        return dyn_term(params, global_params, inputs["grad_state"], config.feddyn_alpha)

    def finish(
        self, model: nn.Module, global_params: dict[str, Tensor], state: ClientState, config: RunConfig
    ) -> dict[str, float]:
        params = dict(model.named_parameters())
        state[STATE_KEY] = updated_grad_state(params, global_params, self.grad_state(global_params, state),
                                              config.feddyn_alpha)
        return {}

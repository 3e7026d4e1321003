"""FedDyn's client (Acar et al., ICLR 2021, Algorithm 1): a dynamic linear + quadratic regularizer.

Client k keeps g_k (zero before its first round) and minimizes
``L_k(theta) - <g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2``; after training,
``g_k <- g_k - alpha (theta_k - theta^{t-1})``. This is the official alpemreacar/FedDyn
client (there ``local_param_list`` holds ``-g_k / alpha``) with the squared norm and the
linear term both differentiated, over the trainable parameters only (BN running
statistics are not part of theta).

``feddyn-adaptive-alpha`` (default true, as the official code's ``alpha_coef_adpt``): client
k uses alpha_k = alpha * n_mean / n_k, with n_k its number of training examples and n_mean
the mean over all clients, in both the term and the g_k update; false: alpha_k = alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from clients.base import ClientAlgorithm, ClientRound, ClientState
from fedsign.config import RunConfig

STATE_KEY = "feddyn-grad"


def dyn_term(
    local: Mapping[str, Tensor], global_: Mapping[str, Tensor], grad_state: Mapping[str, Tensor],
    alpha: float | Tensor,
) -> Tensor:
    """-<g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2 over the tensors of ``global_``;
    gradient ``-g_k + alpha (theta - theta^{t-1})``."""
    linear = sum((grad_state[k] * local[k]).sum() for k in global_)
    quadratic = sum(((local[k] - g) ** 2).sum() for k, g in global_.items())
    return -linear + (alpha / 2) * quadratic


def updated_grad_state(
    local: Mapping[str, Tensor], global_: Mapping[str, Tensor], grad_state: Mapping[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """g_k - alpha (theta_k - theta^{t-1}), per tensor (new tensors)."""
    return {k: torch.sub(local[k].detach(), g).mul_(alpha).neg_().add_(grad_state[k]) for k, g in global_.items()}


def client_alpha(alpha: float, num_examples: int, mean_num_examples: float, adaptive: bool) -> float:
    """alpha_k: ``alpha * mean_num_examples / num_examples`` when ``adaptive``, else ``alpha``."""
    return alpha * mean_num_examples / num_examples if adaptive else alpha


class FedDynClient(ClientAlgorithm):
    """Local objective CE + ``dyn_term`` with alpha_k from ``feddyn-alpha`` (``client_alpha``); state g_k."""

    name = "feddyn"
    has_term = True

    @staticmethod
    def alpha(ctx: ClientRound) -> float:
        return client_alpha(ctx.config.feddyn_alpha, ctx.num_examples, ctx.mean_num_examples,
                            ctx.config.feddyn_adaptive_alpha)

    @staticmethod
    def grad_state(global_params: dict[str, Tensor], state: ClientState) -> dict[str, Tensor]:
        """This client's g_k on the model's device (zeros before its first round)."""
        stored = state.get(STATE_KEY)
        if stored is None:
            return {k: torch.zeros_like(g) for k, g in global_params.items()}
        return {k: stored[k].to(device=g.device, dtype=g.dtype) for k, g in global_params.items()}

    def term_inputs(self, ctx: ClientRound) -> dict[str, Any]:
        alpha = torch.tensor(self.alpha(ctx), dtype=next(iter(ctx.global_params.values())).dtype,
                             device=next(iter(ctx.global_params.values())).device)
        return {"grad_state": self.grad_state(ctx.global_params, ctx.state), "alpha": alpha}

    def loss_term(self, *, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        return dyn_term(params, global_params, inputs["grad_state"], inputs["alpha"])

    def finish(self, ctx: ClientRound) -> dict[str, float]:
        params = dict(ctx.model.named_parameters())
        ctx.state[STATE_KEY] = updated_grad_state(params, ctx.global_params,
                                                  self.grad_state(ctx.global_params, ctx.state), self.alpha(ctx))
        return {}

"""FedProx (Li et al., MLSys 2020): cross-entropy plus a proximal term to the global model."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from clients.base import ClientAlgorithm
from fedsign.config import RunConfig


def proximal_term(local: Mapping[str, Tensor], global_: Mapping[str, Tensor], mu: float) -> Tensor:
    """(mu/2) * ||theta - theta_t||^2 summed over the tensors of ``global_``; gradient mu*(theta - theta_t)."""
    return (mu / 2) * sum(((local[k] - g) ** 2).sum() for k, g in global_.items())


class FedProxClient(ClientAlgorithm):
    """Local objective CE + ``proximal_term`` with mu = ``proximal-mu``; no state."""

    name = "fedprox"
    has_term = True

    def loss_term(self, *, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        return proximal_term(params, global_params, config.proximal_mu)

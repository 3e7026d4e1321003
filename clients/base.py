"""What a client-side algorithm provides to the one local-training loop.

A client algorithm may change the model (``model_options``, ``prepare_model``), add a
loss term built from the received global model and its per-client state
(``make_term``), and update that state after training (``finish``). State is a
``{name: {param: tensor}}`` dict the platform persists between a client's rounds.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fedsign.config import RunConfig
from fedsign.training import LossTerm

ClientState = dict[str, dict[str, Tensor]]


class ClientAlgorithm:
    """FedAvg's client: plain cross-entropy, no state. Subclasses override the hooks."""

    name = "fedavg"

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        """Extra keyword arguments for ``fedsign.models.build_model``."""
        return {}

    def prepare_model(self, model: nn.Module, config: RunConfig) -> None:
        """Change a freshly built model in place (server and clients alike)."""

    def make_term(
        self,
        model: nn.Module,
        global_params: dict[str, Tensor],
        state: ClientState,
        config: RunConfig,
    ) -> LossTerm | None:
        """The loss term added to cross-entropy this round (None: plain CE)."""
        return None

    def finish(
        self,
        model: nn.Module,
        global_params: dict[str, Tensor],
        state: ClientState,
        config: RunConfig,
    ) -> dict[str, float]:
        """Update ``state`` in place after local training; return extra reply metrics."""
        return {}

"""What a client-side algorithm provides to the one local-training loop.

A client algorithm may change the model (``model_options``, ``prepare_model``), add a
loss term to the cross-entropy, and update its per-client state after training
(``finish``). State is a ``{name: {param: tensor}}`` dict the platform persists between
a client's rounds.

The term is split so both engines use the same code: ``term_inputs`` gathers this
client's tensors (from its state; ``None`` means no term) and ``loss_term`` is a pure
function of the tensors it is given. The sequential engine binds them with
``make_term``; the vectorized engine stacks every client's ``term_inputs`` and calls
``loss_term`` under ``torch.func.vmap``.
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

    def term_inputs(
        self,
        model: nn.Module,
        global_params: dict[str, Tensor],
        state: ClientState,
        config: RunConfig,
    ) -> dict[str, Any] | None:
        """This client's tensors the loss term reads (a possibly nested dict); None: plain CE."""
        return None

    def loss_term(
        self,
        model: nn.Module,
        params: dict[str, Tensor],
        features: Tensor,
        x: Tensor,
        y: Tensor,
        inputs: dict[str, Any],
        global_params: dict[str, Tensor],
        config: RunConfig,
    ) -> Tensor:
        """The scalar added to cross-entropy; only called when ``term_inputs`` is not None."""
        return features.new_zeros(())

    def make_term(
        self,
        model: nn.Module,
        global_params: dict[str, Tensor],
        state: ClientState,
        config: RunConfig,
    ) -> LossTerm | None:
        """``loss_term`` bound to this client's ``term_inputs`` (None: plain CE)."""
        inputs = self.term_inputs(model, global_params, state, config)
        if inputs is None:
            return None
        return lambda params, features, x, y: self.loss_term(
            model, params, features, x, y, inputs, global_params, config)

    def finish(
        self,
        model: nn.Module,
        global_params: dict[str, Tensor],
        state: ClientState,
        config: RunConfig,
    ) -> dict[str, float]:
        """Update ``state`` in place after local training; return extra reply metrics."""
        return {}

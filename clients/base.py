"""What a client-side algorithm provides to the one local-training loop.

A client algorithm may change the model (``model_options``, ``prepare_model``), add a
loss term to the cross-entropy (``has_term``), and update its per-client state after
training (``finish``). State is a ``{name: {param: tensor}}`` dict the platform persists
between a client's rounds.

The term is split so both engines use the same code: ``term_inputs`` gathers this
client's tensors from a :class:`ClientRound` (its state, the received model, ...) and
``loss_term`` is a pure function of the tensors it is given, called with keyword
arguments only. The sequential engine binds them with ``make_term``; the vectorized
engine stacks every client's ``term_inputs`` and calls ``loss_term`` under
``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from torch import Tensor, nn

from fedsign.config import RunConfig
from fedsign.training import LossTerm

ClientState = dict[str, dict[str, Tensor]]


@dataclass(frozen=True)
class ClientRound:
    """What a client algorithm may read about one client's round (keyword-only)."""

    config: RunConfig
    model: nn.Module  # the run's model holding the received global model (trained in place)
    global_params: dict[str, Tensor]  # the received trainable parameters (read-only: in-process, the server's tensors)
    global_state: dict[str, Tensor]  # the whole received floating-point state, buffers too (read-only likewise)
    state: ClientState  # this client's persisted state (updated in place by ``finish``)
    partition_id: int
    server_round: int
    num_examples: int  # this client's training examples
    mean_num_examples: float  # mean training examples per client over all clients
    fresh_model: Callable[[int], nn.Module]  # the run's model initialized from a seed (run seed: its θ⁰); shared, read-only


class ClientAlgorithm:
    """FedAvg's client: plain cross-entropy, no state. Subclasses override the hooks."""

    name: ClassVar[str] = "fedavg"
    has_term: ClassVar[bool] = False  # whether ``loss_term`` adds anything to the cross-entropy

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        """Extra keyword arguments for ``fedsign.models.build_model``."""
        return {}

    def prepare_model(self, model: nn.Module, config: RunConfig) -> None:
        """Change a freshly built model in place (server and clients alike)."""

    def term_inputs(self, ctx: ClientRound) -> dict[str, Any]:
        """This client's tensors the loss term reads (a possibly nested dict of tensors)."""
        return {}

    def loss_term(self, *, model: nn.Module, params: dict[str, Tensor], features: Tensor, x: Tensor, y: Tensor,
                  inputs: dict[str, Any], global_params: dict[str, Tensor], config: RunConfig) -> Tensor:
        """The scalar added to the batch's cross-entropy (only called when ``has_term``)."""
        return features.new_zeros(())

    def make_term(self, ctx: ClientRound, inputs: dict[str, Any] | None = None) -> LossTerm | None:
        """``loss_term`` bound to this client's ``term_inputs`` (given, or gathered now); None without a term."""
        if not self.has_term:
            return None
        inputs = self.term_inputs(ctx) if inputs is None else inputs
        return lambda params, features, x, y: self.loss_term(
            model=ctx.model, params=params, features=features, x=x, y=y, inputs=inputs,
            global_params=ctx.global_params, config=ctx.config)

    def finish(self, ctx: ClientRound) -> dict[str, float]:
        """Update ``ctx.state`` in place after local training; return extra reply metrics. The state may hold
        the trained model's own tensors (detached): the platform copies them, or the model gives them up."""
        return {}

"""MOON (Li, He, Song, CVPR 2021; official QinbinLi/MOON): model-contrastive local training.

The model gets MOON's projection head ``Linear(d,d)-ReLU-Linear(d, moon-out-dim)`` and
the classifier sits on its output (``moon-head=false``: no head, the headless variant
other platforms use). The head and the classifier on it get PyTorch's default Linear
initialization, as in the official code: under the platform's N(0, 0.01) Linear
initialization the four stacked Linear layers (hidden FC, head, classifier) pass almost
no signal, and the headed CNN stays at chance on digits for 8 rounds even with
``moon-mu=0``. The local loss is ``CE + mu * l_con`` with

    l_con = -log( e^{cos(z,z_g)/tau} / (e^{cos(z,z_g)/tau} + e^{cos(z,z_prev)/tau}) )

where z, z_g and z_prev are the features the classifier receives under the local model,
the received global model and this client's own previous local model. A client taking
part for the first time has no previous model. The official code (QinbinLi/MOON) keeps an empty pool
of previous models in the run's first round, so its l_con has no negative pair there and is zero;
a client first sampled in a later round contrasts against its own never-trained initial net.
``moon-first-previous`` says what this project does in a client's first round:

- ``"none"``: no contrastive term (l_con = 0, plain cross-entropy). Official MOON exactly when
  every client takes part in round 1 (its default, all clients every round); with partial
  participation official MOON differs for clients first sampled after round 1 (``"random"``);
- ``"init"`` (default): the run's initial global model θ⁰ (the authors' FedRepo code);
- ``"random"``: a fresh model initialized from a seed of this client and run: official MOON's
  choice for a client first sampled after round 1 (in round 1 official MOON has no term);
- ``"global"``: the received global model, so z_prev = z_g and l_con is the constant log 2
  with zero gradient (this project's earlier behaviour; the same gradients as ``"none"``).

As in the official code, the two frozen models run in eval mode (BN running statistics, no
dropout) and without gradients; they are evaluated with ``torch.func.functional_call``
on the local model object with their own parameters and buffers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from clients.base import ClientAlgorithm, ClientRound
from fedsign.config import RunConfig
from fedsign.models import float_state
from fedsign.training import derive_seed

STATE_KEY = "moon-previous-model"
RANDOM_INIT_STREAM = 1  # separates the "random" stand-in's seed from other per-client draws


def moon_contrastive_loss(z: Tensor, z_global: Tensor, z_previous: Tensor, temperature: float) -> Tensor:
    """Batch mean of l_con (module docstring): cross-entropy of the positive pair (z, z_g)
    against the negative pair (z, z_prev), cosine similarities divided by ``temperature``."""
    positive = F.cosine_similarity(z, z_global, dim=-1)
    negative = F.cosine_similarity(z, z_previous, dim=-1)
    logits = torch.stack([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


def frozen_features(model: nn.Module, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
    """Features of ``model`` with its parameters and buffers replaced by ``tensors``,
    in eval mode and without gradients (the model's own mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, features = functional_call(model, tensors, (x,), {"return_features": True})
    finally:
        model.train(was_training)
    return features


class MOONClient(ClientAlgorithm):
    """Local objective CE + ``moon-mu`` * l_con at temperature ``moon-temperature``;
    state: this client's previous local model."""

    name = "moon"
    has_term = True

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        return {"projection_dim": config.moon_out_dim} if config.moon_head else {}

    def prepare_model(self, model: nn.Module, config: RunConfig) -> None:
        """Re-initialize the head and the classifier with PyTorch's Linear default (module docstring)."""
        if model.projection is not None:
            for module in [*model.projection.modules(), model.classifier]:
                if isinstance(module, nn.Linear):
                    module.reset_parameters()

    def first_previous(self, ctx: ClientRound, global_model: dict[str, Tensor]) -> dict[str, Tensor]:
        """The stand-in for a first-time client's previous model (``moon-first-previous``; under
        ``"none"`` the received model, whose term ``term_inputs`` weights by 0)."""
        mode = ctx.config.moon_first_previous
        if mode in ("global", "none"):
            return global_model
        seed = ctx.config.seed if mode == "init" else derive_seed(ctx.config.seed, ctx.partition_id,
                                                                  RANDOM_INIT_STREAM)
        device = next(iter(global_model.values())).device
        return {k: v.to(device) for k, v in float_state(ctx.fresh_model(seed)).items()}

    def term_inputs(self, ctx: ClientRound) -> dict[str, Any]:
        """The received global model and this client's previous model, parameters and buffers, and
        the term's weight: 0 in a client's first round under ``moon-first-previous='none'``, else 1."""
        global_model = ctx.global_state
        stored = ctx.state.get(STATE_KEY)
        previous_model = self.first_previous(ctx, global_model) if stored is None else {
            k: v.to(device=global_model[k].device, dtype=global_model[k].dtype) for k, v in stored.items()
        }
        off = stored is None and ctx.config.moon_first_previous == "none"
        weight = torch.tensor(0.0 if off else 1.0, device=next(iter(global_model.values())).device)
        return {"global": global_model, "previous": previous_model, "weight": weight}

    def loss_term(self, *, model, params, features, x, y, inputs, global_params, config: RunConfig) -> Tensor:
        z_global = frozen_features(model, inputs["global"], x)
        z_previous = frozen_features(model, inputs["previous"], x)
        loss = moon_contrastive_loss(features, z_global, z_previous, config.moon_temperature)
        return inputs["weight"] * config.moon_mu * loss

    def finish(self, ctx: ClientRound) -> dict[str, float]:
        ctx.state[STATE_KEY] = {k: v for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
        return {}

"""Training the converged models the analyses need (§4.2, §6.1), through ``fedsign.training.train_local``.

Variants are a BN-weight initialization (``ones`` / ``uniform`` U(0,1) / ``gaussian`` G(0, 0.1), see
:func:`fedsign.models.build_model`) and the SGD settings (learning rate, batch size, weight decay).
The learning rate follows ``settings.lr_schedule`` (constant, as in the platform's local training, or cosine)
over each ``train_local`` call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from fedsign.data import DatasetSpec, make_batch_transform
from fedsign.models import build_model, float_state
from fedsign.training import TrainProgress, TrainSettings, TrainStats, derive_seed, train_local

State = dict[str, Tensor]


def build_variant_model(name: str, spec: DatasetSpec, bn_weight_init: str = "ones", seed: int = 0,
                        init: str = "fedrepo") -> nn.Module:
    """Model ``name`` for dataset ``spec``, initialized from ``torch.manual_seed(seed)`` by ``init``
    (``fedrepo`` or ``pytorch``, ``fedsign.models.build_model``)."""
    torch.manual_seed(seed)
    return build_model(name, num_classes=spec.num_classes, in_channels=spec.channels,
                       image_size=spec.image_size, bn_weight_init=bn_weight_init, init=init)


def train_checkpoints(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: DatasetSpec,
    settings: TrainSettings,
    checkpoints: Sequence[int],
    *,
    seed: int,
    resume: TrainProgress | None = None,
    on_epoch: Callable[[TrainProgress], None] | None = None,
) -> tuple[dict[int, State], list[TrainStats]]:
    """Train ``model`` in place up to ``max(checkpoints)`` epochs; return its state at each checkpoint epoch.

    Each stretch between two checkpoints is one ``train_local`` call of that many epochs
    (``settings.epochs`` is ignored) with seed ``derive_seed(seed, first epoch)``, so SGD momentum (and a
    cosine schedule) restarts at every checkpoint. ``resume`` / ``on_epoch``: ``train_local``'s, with one
    checkpoint only (one stretch).
    """
    epochs = sorted(set(int(e) for e in checkpoints))
    if not epochs or epochs[0] < 1:
        raise ValueError(f"checkpoint epochs must be positive integers, got {list(checkpoints)}")
    if (resume is not None or on_epoch is not None) and len(epochs) > 1:
        raise ValueError("resume / on_epoch need a single checkpoint (one train_local call)")
    transform = make_batch_transform(spec, train=True)
    states: dict[int, State] = {}
    stats: list[TrainStats] = []
    done = 0
    for epoch in epochs:
        stretch = replace(settings, epochs=epoch - done)
        stats.append(train_local(model, images, labels, stretch, seed=derive_seed(seed, done), transform=transform,
                                 resume=resume, on_epoch=on_epoch))
        states[epoch] = float_state(model)
        done = epoch
    return states, stats

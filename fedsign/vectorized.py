"""Local training of many clients at once: ``torch.func`` (``functional_call`` + ``grad`` + ``vmap``).

Same semantics as :func:`fedsign.training.train_local` run once per client: each client
keeps its own parameters, SGD momentum buffers, BN buffers, batch order, augmentation
and loss-term state, stacked along a leading client dimension. A client's random
numbers come from its own generator seeded exactly as ``train_local`` seeds it, and are
drawn in the same order, so batch order and augmentation match the sequential loop;
only dropout masks (drawn per client by ``vmap(randomness="different")``) differ.

At step ``t`` the clients that still have a batch are grouped by batch size (a short
last batch of an epoch, or a client with fewer batches, forms its own group), so every
client computes its loss and BN statistics over exactly its real samples — no padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fedsign.training import BatchTransform, TrainSettings, TrainStats, batch_order

# term(params, features, x, y, client_inputs, shared_inputs) -> scalar
VectorTerm = Callable[[dict[str, Tensor], Tensor, Tensor, Tensor, Any, Any], Tensor]


@dataclass
class ClientJob:
    """One client's local-training inputs."""

    images: Tensor  # uint8 [N, C, H, W] on the training device
    labels: Tensor  # int64 [N]
    seed: int
    term_inputs: dict[str, Any] = field(default_factory=dict)  # per-client tensors for the term


def _stack(dicts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def _stack_nested(items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, dict):
        return {k: _stack_nested([i[k] for i in items]) for k in first}
    return torch.stack(items)


def _select(tree: Any, idx: Tensor | None) -> Any:
    if idx is None:
        return tree
    if isinstance(tree, dict):
        return {k: _select(v, idx) for k, v in tree.items()}
    return tree[idx]


def _scatter(target: dict[str, Tensor], idx: Tensor | None, values: dict[str, Tensor]) -> None:
    for k, v in values.items():
        if idx is None:
            target[k] = v
        else:
            target[k] = target[k].index_copy(0, idx, v)


def train_clients(
    model: nn.Module,
    start_params: dict[str, Tensor],
    start_buffers: dict[str, Tensor],
    jobs: list[ClientJob],
    settings: TrainSettings,
    transform: BatchTransform,
    term: VectorTerm | None = None,
    shared_inputs: Any = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[TrainStats]]:
    """Train ``len(jobs)`` copies of ``model`` from the same start, one per job.

    Returns stacked final parameters and buffers (leading dim = client) and per-client
    stats. ``term`` gets the client's own ``job.term_inputs`` (batched) and
    ``shared_inputs`` (common to all clients, e.g. the received global model).
    """
    k = len(jobs)
    params = {n: p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()).contiguous() for n, p in start_params.items()}
    buffers = {n: b.detach().unsqueeze(0).repeat(k, *[1] * b.dim()).contiguous() for n, b in start_buffers.items()}
    momentum = {n: torch.zeros_like(p) for n, p in params.items()}
    client_inputs = _stack_nested([j.term_inputs for j in jobs]) if jobs[0].term_inputs else {}

    generators = [torch.Generator().manual_seed(j.seed) for j in jobs]
    steps = [batch_order(len(j.images), settings.batch_size, settings.epochs, g) for j, g in zip(jobs, generators)]
    num_steps = max(len(s) for s in steps)
    device = jobs[0].images.device

    def loss_fn(p, b, x, y, client_in):
        b = {n: v.clone() for n, v in b.items()}  # BN updates these in place
        logits, features = functional_call(model, (p, b), (x,), {"return_features": True})
        ce = F.cross_entropy(logits, y)
        total = ce + term(p, features, x, y, client_in, shared_inputs) if term is not None else ce
        return total, (total, ce, b)

    step_fn = vmap(grad(loss_fn, has_aux=True), randomness="different")
    totals = torch.zeros(k, device=device)
    ce_totals = torch.zeros(k, device=device)
    model.train()
    for t in range(num_steps):
        groups: dict[int, list[int]] = {}
        for c in range(k):
            if t < len(steps[c]):
                groups.setdefault(len(steps[c][t]), []).append(c)
        for members in groups.values():
            idx = None if len(members) == k else torch.tensor(members, device=device)
            xs, ys = [], []
            for c in members:
                batch = steps[c][t].to(device)
                xs.append(transform(jobs[c].images[batch], generators[c]))
                ys.append(jobs[c].labels[batch])
            p, b, m = _select(params, idx), _select(buffers, idx), _select(momentum, idx)
            grads, (loss, ce, new_b) = step_fn(p, b, torch.stack(xs), torch.stack(ys), _select(client_inputs, idx))
            with torch.no_grad():
                new_p, new_m = _sgd_step(p, grads, m, settings, first=(t == 0))
            _scatter(params, idx, new_p)
            _scatter(momentum, idx, new_m)
            _scatter(buffers, idx, new_b)
            rows = torch.arange(k, device=device) if idx is None else idx
            ce_totals.index_add_(0, rows, ce.detach())
            totals.index_add_(0, rows, loss.detach())
    stats = [TrainStats(train_loss=float(totals[c]) / len(steps[c]), ce_loss=float(ce_totals[c]) / len(steps[c]),
                        num_examples=len(jobs[c].images), steps=len(steps[c])) for c in range(k)]
    return params, buffers, stats


def _sgd_step(p: dict[str, Tensor], g: dict[str, Tensor], m: dict[str, Tensor], s: TrainSettings, first: bool):
    """torch.optim.SGD (no dampening, no Nesterov) with per-client gradient-norm clipping."""
    if s.grad_clip > 0:
        norms = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))
        coef = torch.clamp(s.grad_clip / (norms + 1e-6), max=1.0)
        g = {n: v * coef.view(-1, *[1] * (v.dim() - 1)) for n, v in g.items()}
    new_p, new_m = {}, {}
    for n, v in g.items():
        if s.weight_decay:
            v = v + s.weight_decay * p[n]
        if s.momentum:
            v = v.clone() if first else m[n] * s.momentum + v
            new_m[n] = v
        else:
            new_m[n] = m[n]
        new_p[n] = p[n] - s.lr * v
    return new_p, new_m

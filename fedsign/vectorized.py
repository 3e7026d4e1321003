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


class VectorizationError(RuntimeError):
    """This round's clients cannot be trained as one batched computation."""


def vectorization_problem(config) -> str | None:
    """Why ``config`` cannot run vectorized (None when it can)."""
    from fedsign.faults import parse_fail_partitions

    faults = parse_fail_partitions(config.fail_partitions, config.num_clients)
    if any(mode == "hang" for entries in faults.values() for mode, _ in entries):
        return "fail-partitions 'hang' needs per-client timeouts, which only the sequential engine enforces"
    return None


class VectorizedGrid:
    """Mixin for :class:`fedsign.engine.InProcessGrid`: a round's train messages run as one
    batched computation (chunks of ``chunk_size`` clients; 0 = all, halved on CUDA
    out-of-memory). Every other message type, and a round whose batched step fails, runs
    sequentially through the ClientApp; a fallback prints one line saying why."""

    chunk_size: int = 0
    fallback_reason: str | None = None

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import MessageType

        messages = list(messages)
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if not train or self.fallback_reason is not None:
            return super().send_and_receive(messages, timeout=timeout)
        others = [m for m in messages if m.metadata.message_type != MessageType.TRAIN]
        replies = list(super().send_and_receive(others, timeout=timeout)) if others else []
        return replies + self._train_round(train)

    def _train_round(self, messages):
        from uuid import uuid4

        from fedsign.client_app import begin_training
        from fedsign.engine import error_reply

        jobs, replies = [], []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            try:
                jobs.append(begin_training(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as err:  # the client failed before training: an error reply
                replies.append(error_reply(msg, err))
        if not jobs:
            return replies
        try:
            return replies + self._train_jobs(jobs)
        except VectorizationError as err:
            self.fallback_reason = str(err)
            print(f"vectorized engine: falling back to sequential clients: {err}", flush=True)
            return replies + list(super().send_and_receive([j.msg for j in jobs], timeout=None))

    def _train_jobs(self, jobs):
        from fedsign.client_app import finish_training, train_settings
        from fedsign.data import DATASETS, make_batch_transform

        first = jobs[0]
        config, algorithm, model = first.config, first.algorithm, first.model
        settings = train_settings(config)
        transform = make_batch_transform(DATASETS[config.dataset], train=True)
        global_params = {k: v.detach() for k, v in first.round.global_params.items()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        inputs = [j.term_inputs for j in jobs]
        term = None
        if algorithm.has_term:
            def term(p, f, x, y, client_in, shared):
                return algorithm.loss_term(model=model, params=p, features=f, x=x, y=y, inputs=client_in,
                                           global_params=shared, config=config)

        replies = []
        chunk = self.chunk_size or len(jobs)
        start = 0
        while start < len(jobs):
            part = slice(start, start + chunk)
            client_jobs = [ClientJob(j.images, j.labels, j.seed, inputs[i] or {})
                           for i, j in enumerate(jobs[part], start)]
            try:
                params, new_buffers, stats = train_clients(model, global_params, buffers, client_jobs, settings,
                                                           transform, term, global_params)
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise VectorizationError("one client's batched step does not fit in GPU memory") from None
                chunk = max(1, chunk // 2)
                torch.cuda.empty_cache()
                continue
            except RuntimeError as err:  # includes torch.func's missing batching rules (NotImplementedError)
                raise VectorizationError(f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
            for c, job in enumerate(jobs[part]):
                with torch.no_grad():
                    for name, p in job.model.named_parameters():
                        p.copy_(params[name][c])
                    for name, b in job.model.named_buffers():
                        b.copy_(new_buffers[name][c])
                replies.append(finish_training(job, stats[c]))
            start += chunk
        return replies



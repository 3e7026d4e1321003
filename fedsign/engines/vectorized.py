"""Local training of many clients at once: ``torch.func`` (``functional_call`` + ``grad`` + ``vmap``).

Same semantics as :func:`fedsign.training.train_local` run once per client: each client
keeps its own parameters, SGD momentum buffer, BN buffers, batch order, augmentation and
loss-term state, stacked along a leading client dimension. A client's batch indices and
crop/flip draws come from its own generator seeded and drawn exactly as ``train_local``
does; they are all drawn before the first step (:func:`plan_round`) and reach the device in
one copy. Dropout masks come from the global RNG seeded per round from the clients' seeds
(fresh every round, not the sequential engine's masks).

Shapes are fixed within a step: each training client gets ``batch_size`` rows, its real
samples followed by padding, and a mask; cross-entropy, the loss term and BatchNorm's batch
statistics (:func:`masked_batch_norm`) use the real samples only. Clients are ordered by
their number of steps, so the clients with a batch at step ``t`` are a prefix: every step is
one vmapped call on that prefix (at most one shape per client count, no host sync), and a
client without a batch (it has fewer steps) is left out and keeps its parameters, momentum
and BN buffers.

A loss term must be a batch mean of per-sample values plus a sample-independent part (all
of the project's terms are): it is evaluated per sample and averaged over the real ones.

In the engine (``VectorizedGrid``) a round's clients begin on one model from
``fedsign.task.CLIENT_MODELS`` holding the received global model (by reference, on the
device), train from it at once, and finish one after another with their trained parameters
loaded into it; ``term_grad_ratio`` is measured per client before training.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from flwr.app import MessageType
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from clients import make_client_algorithm
from fedsign.client_app import begin_training, finish_training, received_config, train_settings
from fedsign.task import CLIENT_MODELS
from fedsign.data import DATASETS
from fedsign.data.specs import DatasetSpec
from fedsign.data.transforms import CROP_PADDING, crop_flip, crop_flip_draws, make_batch_transform
from fedsign.engines.inprocess import InProcessGrid, assign_message_id, error_reply
from fedsign.faults import parse_fail_partitions
from fedsign.training import (TrainSettings, TrainStats, batch_order, derive_seed, resolve_device, sgd_step,
                              term_grad_ratio)

# term(params, features, x, y, client_inputs, shared_inputs) -> scalar
VectorTerm = Callable[[dict[str, Tensor], Tensor, Tensor, Tensor, Any, Any], Tensor]


@dataclass
class ClientJob:
    """One client's local-training inputs."""

    images: Tensor  # uint8 [N, C, H, W] on the training device
    labels: Tensor  # int64 [N]
    seed: int
    term_inputs: dict[str, Any] = field(default_factory=dict)  # per-client tensors for the term


@dataclass
class RoundPlan:
    """Every client's batches and augmentation draws of one round, padded to ``[steps, clients, batch]``."""

    index: Tensor  # int64 [T, K, B]: rows of the clients' concatenated images (padding: the client's row 0)
    mask: Tensor  # bool [T, K, B]: real samples
    offsets: Tensor  # int64 [T, 2, K, B]: crop offsets (padding: centred)
    flips: Tensor  # bool [T, K, B]
    steps: list[int]  # each client's number of steps

    def to(self, device: torch.device) -> "RoundPlan":
        """The plan on ``device``: one pinned, non-blocking copy per tensor on CUDA."""
        if device.type != "cuda":
            return self
        move = lambda t: t.pin_memory().to(device, non_blocking=True)  # noqa: E731
        return RoundPlan(move(self.index), move(self.mask), move(self.offsets), move(self.flips), self.steps)


def plan_round(sizes: list[int], seeds: list[int], settings: TrainSettings, augment: bool) -> RoundPlan:
    """Draw every step's batch indices (and, with ``augment``, crop/flip parameters) of clients with
    ``sizes`` samples and ``seeds``, in ``train_local``'s order: a generator seeded with the client's
    seed gives all epochs' permutations, then each step's crop offsets and flips."""
    if min(sizes) == 0:
        raise ValueError("plan_round got a client with an empty dataset")
    orders, draws = [], []
    for size, seed in zip(sizes, seeds):
        generator = torch.Generator().manual_seed(seed)
        order = batch_order(size, settings.batch_size, settings.epochs, generator)
        orders.append(order)
        draws.append([crop_flip_draws(len(idx), generator) for idx in order] if augment else [])
    k, b, t_max = len(sizes), settings.batch_size, max(len(o) for o in orders)
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    index = torch.tensor(starts).view(1, k, 1).repeat(t_max, 1, b)
    mask = torch.zeros(t_max, k, b, dtype=torch.bool)
    offsets = torch.full((t_max, 2, k, b), CROP_PADDING, dtype=torch.long)
    flips = torch.zeros(t_max, k, b, dtype=torch.bool)
    for c, order in enumerate(orders):
        for t, idx in enumerate(order):
            n = len(idx)
            index[t, c, :n] += idx
            mask[t, c, :n] = True
            if augment:
                offsets[t, :, c, :n], flips[t, c, :n] = draws[c][t]
    return RoundPlan(index, mask, offsets, flips, [len(o) for o in orders])


class BatchMask:
    """The current batch's sample mask, where :func:`masked_batch_norm`'s patched modules read it."""

    value: Tensor | None = None


def _masked_bn_forward(bn: nn.modules.batchnorm._BatchNorm, source: BatchMask, x: Tensor) -> Tensor:
    """``bn``'s train-mode forward with batch statistics over the samples ``source.value`` marks
    (running statistics updated as ``nn.BatchNorm*`` does: unbiased variance, ``momentum`` or a
    cumulative average when it is None); eval mode and an unset mask run ``bn`` unchanged."""
    mask = source.value
    if not bn.training or mask is None:
        return type(bn).forward(bn, x)
    bn._check_input_dim(x)
    shape = (1, -1, *[1] * (x.dim() - 2))
    xf = x.float()
    w = mask.to(xf.dtype).view(-1, *[1] * (x.dim() - 1))
    dims = [0, *range(2, x.dim())]
    count = w.sum() * (x[0, 0].numel())
    n = count.clamp(min=1)
    mean = (xf * w).sum(dims) / n
    centred = xf - mean.view(shape)
    var = (centred.square() * w).sum(dims) / n
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
            unbiased = var * n / (n - 1).clamp(min=1)
            bn.running_mean.mul_(1 - factor).add_(mean * factor)
            bn.running_var.mul_(1 - factor).add_(unbiased * factor)
    out = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


@contextmanager
def masked_batch_norm(model: nn.Module, source: BatchMask) -> Iterator[None]:
    """Within the block, ``model``'s BatchNorm layers in train mode compute batch statistics over the
    samples ``source.value`` (a ``[B]`` mask, set per forward pass) marks; the modules are restored after."""
    modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in modules:
        m.forward = lambda x, m=m: _masked_bn_forward(m, source, x)
    try:
        yield
    finally:
        for m in modules:
            del m.forward


def _stack_nested(items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, dict):
        return {k: _stack_nested([i[k] for i in items]) for k in first}
    return torch.stack(items)


def train_clients(
    model: nn.Module,
    start_params: dict[str, Tensor],
    start_buffers: dict[str, Tensor],
    jobs: list[ClientJob],
    settings: TrainSettings,
    spec: DatasetSpec,
    term: VectorTerm | None = None,
    shared_inputs: Any = None,
    *,
    mixed_precision: bool = False,
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[TrainStats]]:
    """Train ``len(jobs)`` copies of ``model`` from the same start, one per job, on ``spec``'s
    training transform (augmentation when ``spec.augment``).

    Returns stacked final parameters and buffers (leading dim = client) and per-client
    stats. ``term`` gets the client's own ``job.term_inputs`` (batched) and
    ``shared_inputs`` (common to all clients, e.g. the received global model).
    ``mixed_precision``: the forward pass under bf16 autocast with channels-last images.
    """
    k, device = len(jobs), jobs[0].images.device
    # Clients by number of steps, most first: the clients with a batch at step t are a prefix.
    order = sorted(range(k), key=lambda c: -settings.epochs * -(-len(jobs[c].images) // settings.batch_size))
    jobs = [jobs[c] for c in order]
    names = list(start_params)
    shapes = [start_params[n].shape for n in names]
    sizes = [start_params[n].numel() for n in names]
    flat = torch.cat([start_params[n].detach().reshape(1, -1) for n in names], 1).repeat(k, 1)
    momentum = torch.zeros_like(flat)
    buffers = {n: b.detach().unsqueeze(0).repeat(k, *[1] * b.dim()).contiguous() for n, b in start_buffers.items()}
    client_inputs = _stack_nested([j.term_inputs for j in jobs]) if jobs[0].term_inputs else {}
    images = torch.cat([j.images for j in jobs])
    labels = torch.cat([j.labels for j in jobs])
    augment = spec.augment
    plan = plan_round([len(j.images) for j in jobs], [j.seed for j in jobs], settings, augment).to(device)
    training = [sum(s > t for s in plan.steps) for t in range(len(plan.index))]  # clients with a batch at t
    normalize = make_batch_transform(spec, train=False)
    mask_source = BatchMask()

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if mixed_precision else nullcontext()

    def unflatten(rows: Tensor) -> dict[str, Tensor]:
        return {n: v.view(len(rows), *s) for n, v, s in zip(names, rows.split(sizes, 1), shapes)}

    def loss_fn(p, b, x, y, m, client_in):
        b = {n: v.clone() for n, v in b.items()}  # BN updates these in place
        weight = m / m.sum()
        mask_source.value = m
        try:
            with autocast():
                logits, features = functional_call(model, (p, b), (x,), {"return_features": True})
        finally:
            mask_source.value = None
        logits, features = logits.float(), features.float()
        ce = (F.cross_entropy(logits, y, reduction="none") * weight).sum()
        total = ce
        if term is not None:
            def per_sample(f, xi, yi):
                return term(p, f[None], xi[None], yi[None], client_in, shared_inputs)
            total = ce + (vmap(per_sample)(features, x, y) * weight).sum()
        return total, (total, ce, b)

    step_fn = vmap(grad(loss_fn, has_aux=True), randomness="different")
    totals = torch.zeros(k, device=device)
    ce_totals = torch.zeros(k, device=device)
    model.train()
    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork), masked_batch_norm(model, mask_source):
        torch.manual_seed(derive_seed(*(j.seed for j in jobs)))  # dropout: fresh every round
        for t, kt in enumerate(training):  # the first kt clients train; the others keep their state
            idx = plan.index[t, :kt].reshape(-1)
            x = images[idx]
            if augment:
                x = crop_flip(x, plan.offsets[t, :, :kt].reshape(2, -1), plan.flips[t, :kt].reshape(-1),
                              flip=spec.hflip)
            x = normalize(x).view(kt, -1, *x.shape[1:])
            if mixed_precision:  # every client's [B, C, H, W] channels-last (vmap cannot convert inside)
                x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
            y = labels[idx].view(kt, -1)
            mask = plan.mask[t, :kt].to(x.dtype)
            grads, (loss, ce, new_buffers) = step_fn(unflatten(flat[:kt]), {n: v[:kt] for n, v in buffers.items()},
                                                     x, y, mask, _prefix(client_inputs, kt))
            with torch.no_grad():
                flat_grads = torch.cat([grads[n].reshape(kt, -1) for n in names], 1)
                flat[:kt], momentum[:kt] = sgd_step(flat[:kt], flat_grads, momentum[:kt], settings)
                for n, v in buffers.items():
                    v[:kt] = new_buffers[n]
                ce_totals[:kt] += ce
                totals[:kt] += loss
    back = torch.tensor(order).argsort().tolist()  # sorted position of each original client
    totals_list, ce_list = totals.tolist(), ce_totals.tolist()
    stats = [TrainStats(train_loss=totals_list[i] / plan.steps[i], ce_loss=ce_list[i] / plan.steps[i],
                        num_examples=len(jobs[i].images), steps=plan.steps[i]) for i in back]
    rows = torch.tensor(back, device=device)
    return unflatten(flat[rows]), {n: v[rows] for n, v in buffers.items()}, stats


def _prefix(tree: Any, k: int) -> Any:
    if isinstance(tree, dict):
        return {key: _prefix(v, k) for key, v in tree.items()}
    return tree[:k]


class VectorizationError(RuntimeError):
    """This round's clients cannot be trained as one batched computation."""


def vectorization_problem(config) -> str | None:
    """Why ``config`` cannot run vectorized (None when it can)."""
    faults = parse_fail_partitions(config.fail_partitions, config.num_clients)
    if any(mode == "hang" for entries in faults.values() for mode, _ in entries):
        return "fail-partitions 'hang' needs per-client timeouts, which only the sequential engine enforces"
    return None


class VectorizedGrid:
    """Mixin for :class:`fedsign.engines.inprocess.InProcessGrid`: a round's train messages run as one
    batched computation (all clients at once, in chunks halved on CUDA
    out-of-memory; ``mixed_precision``: see :func:`train_clients`). Every other message type
    runs sequentially through the ClientApp. When the batched training raises, this round and
    the following ones run sequentially, with one line saying why: no client has replied or
    changed its state by then, so the round's result is the sequential engine's."""

    mixed_precision: bool = False
    fallback_reason: str | None = None

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if not train or self.fallback_reason is not None:
            return super().send_and_receive(messages, timeout=timeout)
        others = [m for m in messages if m.metadata.message_type != MessageType.TRAIN]
        replies = list(super().send_and_receive(others, timeout=timeout)) if others else []
        return replies + self._train_round(train)

    def _train_round(self, messages):
        """Begin every client's job on one shared model, train them all at once, then finish each job
        with its trained model loaded into the shared one."""
        jobs, replies = [], []
        for msg in messages:
            assign_message_id(msg)
        first = messages[0]
        try:
            config = received_config(first, self.contexts[first.metadata.dst_node_id])
            model = CLIENT_MODELS.acquire(config, make_client_algorithm(config), resolve_device(config.device))
        except Exception as err:  # as every client would fail in begin_training: error replies
            return [error_reply(msg, err) for msg in messages]
        try:
            for msg in messages:
                try:
                    jobs.append(begin_training(msg, self.contexts[msg.metadata.dst_node_id], model))
                except Exception as err:  # the client failed before training: an error reply
                    replies.append(error_reply(msg, err))
            if not jobs:
                return replies
            try:
                trained = self._train_jobs(jobs)
            except Exception as err:  # noqa: BLE001 - any failure of the batched computation
                self.fallback_reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
                print(f"vectorized engine: falling back to sequential clients: {self.fallback_reason}", flush=True)
                return replies + list(super().send_and_receive([j.msg for j in jobs], timeout=None))
            for job, (params, buffers, job_stats) in zip(jobs, trained):
                try:
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            p.copy_(params[name])
                        for name, b in model.named_buffers():
                            b.copy_(buffers[name])
                    replies.append(finish_training(job, job_stats))
                except Exception as err:  # as the sequential ClientApp raising after training
                    replies.append(error_reply(job.msg, err))
            return replies
        finally:
            CLIENT_MODELS.release(model)

    def _train_jobs(self, jobs) -> list[tuple[dict[str, Tensor], dict[str, Tensor], TrainStats]]:
        """Train every job from the shared model's start (chunk by chunk): per job its trained parameters,
        buffers and stats. Raises on any failure before a job's state changes."""
        first = jobs[0]
        config, algorithm, model = first.config, first.algorithm, first.model
        settings = train_settings(config)
        global_params = {k: v.detach() for k, v in first.round.global_params.items()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        inputs = [j.term_inputs for j in jobs]
        term, ratios = None, [None] * len(jobs)
        if algorithm.has_term:
            def algorithm_term(p, f, x, y, client_in, shared):
                return algorithm.loss_term(model=model, params=p, features=f, x=x, y=y, inputs=client_in,
                                           global_params=shared, config=config)

            term = algorithm_term

            transform = make_batch_transform(DATASETS[config.dataset], train=True)
            ratios = [term_grad_ratio(model, j.images, j.labels, settings, seed=j.seed, transform=transform,
                                      term=j.algorithm.make_term(j.round, j.term_inputs)) for j in jobs]

        results = []
        chunk = len(jobs)
        start = 0
        while start < len(jobs):
            part = slice(start, start + chunk)
            client_jobs = [ClientJob(j.images, j.labels, j.seed, inputs[i] or {})
                           for i, j in enumerate(jobs[part], start)]
            try:
                results.append(train_clients(model, global_params, buffers, client_jobs, settings,
                                             DATASETS[config.dataset], term, global_params,
                                             mixed_precision=self.mixed_precision))
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise VectorizationError("one client's batched step does not fit in GPU memory") from None
                chunk = max(1, chunk // 2)
                torch.cuda.empty_cache()
                continue
            start += chunk
        trained = [({n: v[i] for n, v in params.items()}, {n: v[i] for n, v in new_buffers.items()}, job_stats)
                   for params, new_buffers, chunk_stats in results for i, job_stats in enumerate(chunk_stats)]
        return [(params, new_buffers, dataclasses.replace(job_stats, term_grad_ratio=ratio))
                for (params, new_buffers, job_stats), ratio in zip(trained, ratios)]


class VectorizedInProcessGrid(VectorizedGrid, InProcessGrid):
    """The in-process grid whose train rounds run all clients at once (``engine='vectorized'``)."""

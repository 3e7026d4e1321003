"""The one local-training loop (clients, landscape variants, benchmarks) and evaluation.

A client objective plugs in as a *loss term*: a function
``term(params, features, x, y) -> scalar tensor`` added to the cross-entropy of the
batch, where ``params`` is the model's ``{name: parameter}`` dict and ``features``
the representation the classifier receives. Terms are pure functions of their
arguments (plus state captured when the term is built), so the same term serves
a vectorized engine that calls it under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossTerm = Callable[[dict[str, Tensor], Tensor, Tensor, Tensor], Tensor]
BatchTransform = Callable[[Tensor, Optional[torch.Generator]], Tensor]


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainSettings:
    """SGD settings of one local-training call. ``lr_schedule``: ``constant`` (``lr`` at every step) or
    ``cosine`` (:func:`cosine_lr` over all steps of the call; ``train_local`` only)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping
    lr_schedule: str = "constant"

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps`` under cosine annealing to zero:
    ``lr * (1 + cos(pi * step / steps)) / 2`` (``lr`` at the first step)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))


@dataclass(frozen=True)
class TrainStats:
    train_loss: float  # mean total loss over all steps
    ce_loss: float  # mean cross-entropy over all steps
    num_examples: int
    steps: int
    term_grad_ratio: float | None = None  # ||grad term|| / ||grad CE|| on the first step, when measured


@dataclass
class TrainProgress:
    """Where a ``train_local`` call stands after a whole epoch: with it, another call of the same arguments
    continues bitwise where this one was. ``model``: the full state dict; ``momentum``: SGD's buffers by
    parameter name; ``generator`` / ``rng`` / ``cuda_rng``: the batch generator's and the global RNG states
    (``cuda_rng`` empty on a CPU); ``total`` / ``total_ce``: the running loss sums (0-d CPU tensors);
    ``norms``: the measured first step's (||grad term||, ||grad CE||), or None."""

    epochs_done: int
    steps: int
    model: dict[str, Tensor]
    momentum: dict[str, Tensor]
    generator: Tensor
    rng: Tensor
    cuda_rng: Tensor
    total: Tensor
    total_ce: Tensor
    norms: tuple[float, float] | None = None

    def to_tensors(self) -> tuple[dict[str, Tensor], dict]:
        """The progress as flat ``{name: tensor}`` (for safetensors) and its JSON-able numbers."""
        tensors = {**{f"model/{k}": v for k, v in self.model.items()},
                   **{f"momentum/{k}": v for k, v in self.momentum.items()},
                   "generator": self.generator, "rng": self.rng, "cuda_rng": self.cuda_rng,
                   "total": self.total, "total_ce": self.total_ce}
        return ({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                {"epochs_done": self.epochs_done, "steps": self.steps, "norms": self.norms})

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], numbers: dict) -> TrainProgress:
        """The inverse of :meth:`to_tensors`."""
        def group(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        norms = numbers["norms"]
        return cls(int(numbers["epochs_done"]), int(numbers["steps"]), group("model/"), group("momentum/"),
                   tensors["generator"], tensors["rng"], tensors["cuda_rng"], tensors["total"], tensors["total_ce"],
                   None if norms is None else (float(norms[0]), float(norms[1])))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (run seed, round, client...)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA device is visible; use device='auto' or 'cpu'")
    return torch.device(name)


def batch_order(num_examples: int, batch_size: int, epochs: int, generator: torch.Generator) -> list[Tensor]:
    """Index tensors of every step: a fresh permutation per epoch, last batch kept."""
    batches: list[Tensor] = []
    for _ in range(epochs):
        perm = torch.randperm(num_examples, generator=generator)
        batches.extend(perm.split(batch_size))
    return batches


def sgd_step(params: Tensor, grads: Tensor, momentum_buffer: Tensor,
             settings: TrainSettings) -> tuple[Tensor, Tensor]:
    """One ``torch.optim.SGD`` step (no dampening, no Nesterov) after
    ``clip_grad_norm_(settings.grad_clip)``, on flat parameter vectors, at the constant ``settings.lr``.

    ``params``, ``grads`` and ``momentum_buffer`` are ``[..., P]``: each row is one model
    (clipped by its own norm); the buffer starts at zeros, so the first step sets it to the
    gradient as SGD does. Returns the new parameters and buffer; pure, no host sync.
    """
    if settings.grad_clip > 0:
        norm = torch.linalg.vector_norm(grads, dim=-1, keepdim=True)
        grads = grads * torch.clamp(settings.grad_clip / (norm + 1e-6), max=1.0)
    if settings.weight_decay:
        grads = torch.add(grads, params, alpha=settings.weight_decay)
    if settings.momentum:
        momentum_buffer = torch.add(momentum_buffer * settings.momentum, grads)
        grads = momentum_buffer
    return torch.add(params, grads, alpha=-settings.lr), momentum_buffer


def train_local(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    settings: TrainSettings,
    *,
    seed: int,
    transform: BatchTransform,
    term: LossTerm | None = None,
    measure_term: bool = False,
    resume: TrainProgress | None = None,
    on_epoch: Callable[[TrainProgress], None] | None = None,
) -> TrainStats:
    """Train ``model`` in place with SGD on ``(images, labels)``.

    ``images`` are uint8 ``[N, C, H, W]`` on the model's device; ``transform`` turns a
    batch into normalized floats (with augmentation drawn from the seeded generator).
    ``seed`` fixes the batch order, the augmentation and dropout. ``settings.lr_schedule`` "cosine" sets the
    step's learning rate by :func:`cosine_lr` over all the call's steps (a constant schedule never touches
    it). ``measure_term`` (with a
    ``term``): the first step takes the cross-entropy's and the term's gradients separately and
    steps with their sum, and ``TrainStats.term_grad_ratio`` is the ratio of their norms over the
    trainable parameters, at the cost of one backward pass of the term. For a term of the
    parameters alone (FedSign, FedProx, FedDyn) the step is bitwise the one a joint backward takes;
    for a term of the features (MOON) it equals it up to float rounding.

    ``on_epoch``: called after every epoch but the last with a :class:`TrainProgress` (copies); ``resume``:
    such a progress of a call with the same arguments, whose epochs are not taken again.
    """
    if len(images) == 0:
        raise ValueError("train_local got an empty dataset")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout draws from the global generator
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    params = dict(model.named_parameters())
    trainable = [p for p in params.values() if p.requires_grad]
    device = images.device
    model.train()
    total, total_ce, steps = 0.0, 0.0, 0
    norms = None  # (||grad term||, ||grad CE||) of the first step, when measured
    batches = batch_order(len(images), settings.batch_size, settings.epochs, generator)
    per_epoch = len(batches) // max(settings.epochs, 1)
    if resume is not None:
        total, total_ce, steps, norms = _restore(resume, model, optimizer, generator, settings, per_epoch, device)
    for idx in batches[steps:]:
        idx = idx.to(device)
        x = transform(images[idx], generator)
        y = labels[idx]
        logits, features = model(x, return_features=True)
        ce = F.cross_entropy(logits, y)
        extra = term(params, features, x, y) if term is not None else None
        loss = ce + extra if extra is not None else ce
        optimizer.zero_grad(set_to_none=True)
        if measure_term and extra is not None and steps == 0:
            ce_grads = torch.autograd.grad(ce, trainable, retain_graph=True, allow_unused=True)
            term_grads = (torch.autograd.grad(extra, trainable, allow_unused=True) if extra.requires_grad
                          else [None] * len(trainable))
            for p, g_ce, g_term in zip(trainable, ce_grads, term_grads):
                p.grad = g_term if g_ce is None else (g_ce if g_term is None else g_ce + g_term)
            norms = (_grad_norm(term_grads), _grad_norm(ce_grads))
        else:
            loss.backward()
        if settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        if settings.lr_schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(settings.lr, steps, len(batches))
        optimizer.step()
        total += loss.detach()
        total_ce += ce.detach()
        steps += 1
        if on_epoch is not None and steps % per_epoch == 0 and steps < len(batches):
            on_epoch(_progress(steps // per_epoch, steps, model, optimizer, generator, total, total_ce, norms))
    return TrainStats(
        train_loss=float(total) / steps,
        ce_loss=float(total_ce) / steps,
        num_examples=len(images),
        steps=steps,
        term_grad_ratio=None if norms is None else _norm_ratio(*norms),
    )


def _progress(epochs_done: int, steps: int, model: nn.Module, optimizer: torch.optim.SGD,
              generator: torch.Generator, total: Tensor, total_ce: Tensor, norms) -> TrainProgress:
    names = {p: n for n, p in model.named_parameters()}
    momentum = {names[p]: s["momentum_buffer"].detach().clone() for p, s in optimizer.state.items()
                if s.get("momentum_buffer") is not None}
    cuda = next((t.device for t in model.state_dict().values() if t.device.type == "cuda"), None)
    return TrainProgress(epochs_done, steps, {k: v.detach().clone() for k, v in model.state_dict().items()},
                         momentum, generator.get_state(), torch.get_rng_state(),
                         torch.cuda.get_rng_state(cuda) if cuda is not None else torch.empty(0, dtype=torch.uint8),
                         total.detach().cpu().clone(), total_ce.detach().cpu().clone(), norms)


def _restore(progress: TrainProgress, model: nn.Module, optimizer: torch.optim.SGD, generator: torch.Generator,
             settings: TrainSettings, per_epoch: int, device: torch.device) -> tuple[Tensor, Tensor, int, tuple | None]:
    """Put ``progress`` back into the model, the optimizer and the RNGs; returns the running sums, the steps
    taken and the first step's norms."""
    if not 0 < progress.epochs_done < settings.epochs or progress.steps != progress.epochs_done * per_epoch:
        raise ValueError(f"cannot resume after epoch {progress.epochs_done} (step {progress.steps}) of a call of "
                         f"{settings.epochs} epochs of {per_epoch} steps: the progress is of other arguments")
    params = dict(model.named_parameters())
    unknown = sorted(set(progress.momentum) - set(params))
    if unknown or (settings.momentum and not progress.momentum):
        raise ValueError(f"the progress's momentum buffers do not fit this model (unknown {unknown[:3]}); "
                         "resume with the model it was taken from")
    model.load_state_dict(progress.model)
    for name, buffer in progress.momentum.items():
        optimizer.state[params[name]]["momentum_buffer"] = buffer.to(params[name].device).clone()
    generator.set_state(progress.generator)
    torch.set_rng_state(progress.rng)
    if progress.cuda_rng.numel():
        torch.cuda.set_rng_state(progress.cuda_rng, next(iter(params.values())).device)
    return progress.total.to(device, copy=True), progress.total_ce.to(device, copy=True), progress.steps, progress.norms


def term_grad_ratio(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    settings: TrainSettings,
    *,
    seed: int,
    transform: BatchTransform,
    term: LossTerm,
) -> float:
    """||grad term|| / ||grad CE|| over the trainable parameters on the first step
    ``train_local`` would take with the same arguments (same batch, augmentation and dropout),
    without taking it: what ``train_local(measure_term=True)`` reports, for callers that train
    otherwise (the vectorized engine) or not at all (``benchmarks/term_strength.py``).

    The model and the global RNG are left as they were: BN statistics are updated on copies, no
    parameter moves, and dropout draws from a forked generator seeded like ``train_local``'s.
    """
    generator = torch.Generator().manual_seed(seed)
    idx = batch_order(len(images), settings.batch_size, settings.epochs, generator)[0].to(images.device)
    x, y = transform(images[idx], generator), labels[idx]
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    fork = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(seed)  # dropout as on train_local's first step, whatever ran before
            logits, features = torch.func.functional_call(model, (params, buffers), (x,), {"return_features": True})
            ce = F.cross_entropy(logits, y)
            extra = term(params, features, x, y)
            trainable = [p for p in params.values() if p.requires_grad]
            ce_grads = torch.autograd.grad(ce, trainable, retain_graph=True, allow_unused=True)
            term_grads = torch.autograd.grad(extra, trainable, allow_unused=True) if extra.requires_grad else []
    finally:
        model.train(was_training)
    return _norm_ratio(_grad_norm(term_grads), _grad_norm(ce_grads))


def _norm_ratio(term_norm: Tensor, ce_norm: Tensor) -> float:
    """||grad term|| / ||grad CE||; inf when the CE gradient is zero."""
    return float(term_norm / ce_norm) if float(ce_norm) > 0 else float("inf")


def _grad_norm(grads) -> Tensor:
    squares = [g.pow(2).sum() for g in grads if g is not None]
    return torch.sqrt(sum(squares)) if squares else torch.zeros(())


# Evaluation batch per device type. On a CPU, batches of 1024 run a conv net's forward pass at half the
# images/s of batches of 32-128 (the working set leaves the caches; benchmarks/speed.py measures both).
EVAL_BATCH_SIZE = {"cpu": 128}
EVAL_BATCH_SIZE_ACCELERATOR = 1024


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    transform: BatchTransform,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode, in batches of ``batch_size`` (default:
    ``EVAL_BATCH_SIZE`` for the images' device type)."""
    batch_size = batch_size or EVAL_BATCH_SIZE.get(images.device.type, EVAL_BATCH_SIZE_ACCELERATOR)
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(images), batch_size):
        x = transform(images[start:start + batch_size], None)
        y = labels[start:start + batch_size]
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(images), loss_sum / len(images)

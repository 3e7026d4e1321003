"""Test error and CE loss of many parameter points at once, with a BatchNorm policy.

A *point* is a full set of parameters; points come in :class:`Line` s, ``anchor + t * direction``
for each coefficient ``t``. Points are evaluated in chunks: the chunk's parameters **and
buffers** are stacked and one ``torch.func.functional_call`` runs under ``torch.func.vmap``
(``vectorize=True``), or point by point (the loop fallback, also used automatically when vmap
fails). Parameters that no line of a chunk perturbs stay unstacked, so a CLF-only line costs a
batched classifier, not a batched network.

BN policies, applied at every point (endpoints included):

* ``recalibrate`` (default; paper A.3): running statistics are reset (mean 0, var 1) and recomputed
  in train mode over ``data.recal_x`` as a cumulative average: before a batch of ``b`` samples,
  after ``n`` samples, each BN momentum is set to ``b / (n + b)`` (PyTorch's ``momentum=None``
  average reads a batched counter and cannot run under vmap; this weights batches by their size).
  Other modules (dropout) stay in eval mode. Then the point is evaluated in eval mode.
* ``stale``: the anchor's running statistics (moved along ``buffer_direction`` if given).
* ``none``: no running statistics: BN normalizes every test batch with that batch's own statistics
  (train-mode BN with momentum 0), so results depend on ``data.batch_size``.

A model without BN has no statistics: every policy then runs as ``stale`` (and needs no ``recal_x``).

Point by point, each point's parameters take the memory layout of the module's own (a model put in
``torch.channels_last`` is evaluated in it: ~1.4x faster convolutions on a CPU, the same values).

Data: an :class:`EvalData` (whole transformed tensors, the platform's route), or anything
:func:`as_eval_data` turns into a :class:`LoaderData` -- a ``DataLoader`` or ``Dataset`` yielding
``(x, y, ...)``, or an ``(x, y)`` pair of tensors -- evaluated batch by batch on the model's device.
Recalibration then reads the inputs of ``recal`` (default: the data itself; the paper recalibrates
on training images, so pass those). Loaders are iterated once per chunk of points: keep them
deterministic (no shuffling, no random augmentation) so every point sees the same images.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils.data import DataLoader, Dataset

from fedsign.training import BatchTransform

from .errors import LandscapeError

Params = dict[str, Tensor]
BN_POLICIES = ("recalibrate", "stale", "none")


class PolicyError(LandscapeError):
    """An unknown BN policy, or recalibration without recalibration data."""


class DataError(LandscapeError):
    """Evaluation data of an unsupported kind or batch layout."""


class NonFiniteError(LandscapeError):
    """A model (or direction) with NaN or infinite parameters."""


@dataclass(frozen=True)
class EvalData:
    """Transformed float inputs: ``x``/``y`` to evaluate on, ``recal_x`` for BN recalibration."""

    x: Tensor
    y: Tensor
    recal_x: Tensor | None = None
    batch_size: int = 256

    @property
    def has_recal(self) -> bool:
        return self.recal_x is not None

    def device_for(self, model: nn.Module) -> torch.device:
        return self.x.device

    def batches(self, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.x), self.batch_size):
            yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]

    def recal_batches(self, device: torch.device) -> Iterator[Tensor]:
        yield from self.recal_x.split(self.batch_size)

    def head(self, samples: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The first ``samples`` evaluation examples (for Hessian and activation analyses)."""
        return self.x[:samples], self.y[:samples]


def _inputs(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _pair(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], torch.as_tensor(batch[1])
    raise DataError(f"an evaluation batch must be (inputs, labels, ...), got {type(batch).__name__}")


@dataclass(frozen=True)
class LoaderData:
    """Evaluation data as iterables of batches: ``loader`` yields ``(x, y, ...)``, ``recal`` yields
    ``x`` or ``(x, ...)`` (None: no recalibration data). ``device``: where batches go (None: the
    model's device)."""

    loader: Iterable
    recal: Iterable | None = None
    device: torch.device | str | None = None

    @property
    def has_recal(self) -> bool:
        return self.recal is not None

    def device_for(self, model: nn.Module) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        first = next(iter(model.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    def batches(self, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.loader:
            x, y = _pair(batch)
            yield x.to(device), y.long().to(device)

    def recal_batches(self, device: torch.device) -> Iterator[Tensor]:
        for batch in self.recal:
            yield _inputs(batch).to(device)

    def head(self, samples: int, device: torch.device) -> tuple[Tensor, Tensor]:
        xs, ys, seen = [], [], 0
        for x, y in self.batches(device):
            xs.append(x)
            ys.append(y)
            seen += len(x)
            if seen >= samples:
                break
        if not xs:
            raise DataError("the evaluation data is empty")
        return torch.cat(xs)[:samples], torch.cat(ys)[:samples]


def _as_loader(data: Any, batch_size: int) -> Iterable:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, Tensor):
        return data.split(batch_size)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return list(zip(data[0].split(batch_size), data[1].split(batch_size)))
    raise DataError(f"unsupported evaluation data {type(data).__name__}: pass an EvalData, a DataLoader, "
                    "a Dataset or an (inputs, labels) pair of tensors")


def as_eval_data(data: Any, recal: Any = None, *, batch_size: int = 256,
                 device: torch.device | str | None = None) -> EvalData | LoaderData:
    """``data`` as evaluation data: an :class:`EvalData` / :class:`LoaderData` unchanged; a ``DataLoader``,
    a ``Dataset`` (batches of ``batch_size``, in order) or an ``(x, y)`` tensor pair as a
    :class:`LoaderData` whose BN recalibration reads ``recal`` (a loader, dataset or input tensor), by
    default the data itself."""
    if isinstance(data, (EvalData, LoaderData)):
        return data
    loader = _as_loader(data, batch_size)
    recal_loader = loader if recal is None else _as_loader(recal, batch_size)
    return LoaderData(loader, recal_loader, device)


Data = EvalData | LoaderData | DataLoader | Dataset | tuple


def check_finite(params: Mapping[str, Tensor], what: str = "model") -> None:
    """Raise :class:`NonFiniteError` when a tensor of ``params`` holds NaN or Inf."""
    for name, t in params.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteError(f"the {what} has {bad} non-finite values in {name!r} (NaN/Inf: a diverged "
                                 "run or a corrupt file); landscape analyses need a finite model")


def subset_indices(n: int, limit: int, generator: torch.Generator) -> Tensor:
    """Sorted indices of a random subset of ``limit`` of ``n`` items drawn from ``generator`` (all when
    ``limit`` is 0 or at least ``n``)."""
    if 0 < limit < n:
        return torch.randperm(n, generator=generator)[:limit].sort().values
    return torch.arange(n)


def _transform_all(images: Tensor, transform: BatchTransform, batch_size: int) -> Tensor:
    return torch.cat([transform(images[i:i + batch_size], None) for i in range(0, len(images), batch_size)])


def prepare_data(
    test_images: Tensor,
    test_labels: Tensor,
    transform: BatchTransform,
    recal_images: Tensor | None = None,
    *,
    test_samples: int = 0,
    recal_samples: int = 2048,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> EvalData:
    """Transform (eval transform: no augmentation) seeded subsets once: ``test_samples`` test images
    (0 = all) and ``recal_samples`` recalibration images (0 = all of ``recal_images``)."""
    generator = torch.Generator().manual_seed(seed)
    idx = subset_indices(len(test_images), test_samples, generator)
    x = _transform_all(test_images[idx].to(device), transform, batch_size)
    recal_x = None
    if recal_images is not None:
        ridx = subset_indices(len(recal_images), recal_samples, generator)
        recal_x = _transform_all(recal_images[ridx].to(device), transform, batch_size)
    return EvalData(x, torch.as_tensor(test_labels)[idx].long().to(device), recal_x, batch_size)


@dataclass
class Line:
    """Points ``anchor + t * direction`` for ``t`` in ``coefs``.

    ``anchor``: every parameter of the model; ``direction``: the perturbed names only.
    ``buffers``: the anchor's floating-point buffers (default: the model's own); ``buffer_direction``
    moves them along with the parameters (used by ``stale`` interpolation between two models).
    """

    anchor: Mapping[str, Tensor]
    direction: Mapping[str, Tensor]
    coefs: Sequence[float]
    buffers: Mapping[str, Tensor] | None = None
    buffer_direction: Mapping[str, Tensor] | None = None


@dataclass
class Evaluation:
    """Per-line arrays of test error and mean CE loss, and the timing of the whole call."""

    error: list[np.ndarray]
    loss: list[np.ndarray]
    points: int
    seconds: float
    vectorized: bool
    chunk: int = field(default=0)

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("inf")


def model_state(model: nn.Module) -> tuple[Params, Params]:
    """Detached copies of the model's parameters and floating-point buffers."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if b.is_floating_point()}
    return params, buffers


def split_state(model: nn.Module, state: Mapping[str, Tensor]) -> tuple[Params, Params]:
    """Split a floating-point state dict (as saved by the platform) into parameters and buffers."""
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"state lacks parameters {missing[:3]} of the model")
    buffers = {n for n, b in model.named_buffers() if b.is_floating_point()}
    return {n: state[n] for n in names}, {n: state[n] for n in buffers if n in state}


def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def bn_mode(model: nn.Module, bn_train: bool, momentum: float = 0.0) -> Iterator[list]:
    """Everything in eval mode, BN layers in train mode if ``bn_train`` (with ``momentum``);
    yields the BN modules and restores modes and momenta on exit."""
    modes = {m: m.training for m in model.modules()}
    bns = _bn_modules(model)
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.train(bn_train)
        m.momentum = momentum
    try:
        yield bns
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, mom in zip(bns, momenta):
            m.momentum = mom


def has_batch_norm(model: nn.Module) -> bool:
    return bool(_bn_modules(model))


def _check_policy(model: nn.Module, bn: str, data: EvalData | LoaderData) -> str:
    """The policy to run: a model without BN has no statistics, so every policy is ``stale``."""
    if bn not in BN_POLICIES:
        raise PolicyError(f"unknown BN policy {bn!r}; use one of {', '.join(BN_POLICIES)}")
    if not has_batch_norm(model):
        return "stale"
    if bn == "recalibrate" and not data.has_recal:
        raise PolicyError("BN policy 'recalibrate' needs recalibration images (EvalData.recal_x or a recal loader)")
    return bn


def _stack_chunk(
    model: nn.Module, lines: Sequence[Line], part: Sequence[tuple[int, float]], bn: str
) -> tuple[Params, Params, Params, Params]:
    """(stacked params, shared params, stacked float buffers, fixed non-float buffers) of a chunk."""
    first = lines[part[0][0]]
    same_anchor = all(lines[i].anchor is first.anchor for i, _ in part)
    moved = set().union(*(lines[i].direction.keys() for i, _ in part))
    names = [n for n, _ in model.named_parameters()]
    batched = [n for n in names if not same_anchor or n in moved]
    params = {n: torch.stack([lines[i].anchor[n] + c * lines[i].direction[n] if n in lines[i].direction
                              else lines[i].anchor[n] for i, c in part]) for n in batched}
    shared = {n: first.anchor[n] for n in names if n not in params}
    own = dict(model.named_buffers())
    float_names = [n for n, b in own.items() if b.is_floating_point()]

    def buffer(i: int, c: float, n: str) -> Tensor:
        line = lines[i]
        b = (line.buffers or {}).get(n, own[n].detach())
        if line.buffer_direction is not None and n in line.buffer_direction:
            b = b + c * line.buffer_direction[n]
        return b

    fixed = {n: b.detach().clone() for n, b in own.items() if not b.is_floating_point()}
    same_buffers = all(lines[i].buffers is first.buffers and lines[i].buffer_direction is None for i, _ in part)
    if bn == "stale" and same_buffers:  # read-only and equal for every point: no need to stack them
        return params, shared, {}, {**fixed, **{n: buffer(part[0][0], 0.0, n) for n in float_names}}
    buffers = {n: torch.stack([buffer(i, c, n) for i, c in part]) for n in float_names}
    if bn == "recalibrate":
        for m_name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                prefix = f"{m_name}." if m_name else ""
                buffers[prefix + "running_mean"].zero_()
                buffers[prefix + "running_var"].fill_(1.0)
    return params, shared, buffers, fixed


def _in_module_layout(model: nn.Module, params: Params) -> Params:
    """``params`` with the memory layout of the module's own parameters (a model put in channels_last gets
    its points in channels_last: stacking and slicing leave them contiguous, and on a CPU channels_last
    convolutions run ~1.2-1.5x faster; the values are unchanged)."""
    own = dict(model.named_parameters())
    return {n: torch.empty_like(own[n]).copy_(t) if n in own and t.dim() >= 4 and t.stride() != own[n].stride()
            else t for n, t in params.items()}


def _forward(model, params, shared, buffers, fixed, x, vectorized: bool) -> Tensor:
    """Logits ``[P, B, C]`` of every stacked point on the (unstacked) input ``x``; point by point, each
    point's parameters take the module's memory layout (:func:`_in_module_layout`)."""
    def run(p: Params, b: Params) -> Tensor:
        point = {**shared, **p} if vectorized else _in_module_layout(model, {**shared, **p})
        return functional_call(model, {**point, **b, **fixed}, (x,))

    if not params and not buffers:  # nothing stacked: every point is the same network
        return run({}, {})[None]
    if vectorized:
        return vmap(run)(params, buffers)
    count = len(next(iter({**params, **buffers}.values())))
    return torch.stack([run({n: v[i] for n, v in params.items()}, {n: v[i] for n, v in buffers.items()})
                        for i in range(count)])


def _recalibrate(model: nn.Module, stacked: tuple, data: EvalData | LoaderData, vectorized: bool,
                 device: torch.device) -> None:
    """Recompute the stacked BN statistics in place: cumulative average over the recalibration inputs."""
    seen = 0
    with torch.no_grad(), bn_mode(model, True) as bns:
        for xb in data.recal_batches(device):
            for m in bns:
                m.momentum = len(xb) / (seen + len(xb))
            _forward(model, *stacked, xb, vectorized)
            seen += len(xb)


def _chunk_metrics(model, stacked, data: EvalData | LoaderData, bn: str, vectorized: bool, bf16: bool,
                   count: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.no_grad(), cast:
        if bn == "recalibrate":
            _recalibrate(model, stacked, data, vectorized, device)
        wrong = torch.zeros(count, dtype=torch.float64, device=device)
        loss = torch.zeros(count, dtype=torch.float64, device=device)
        n = 0
        with bn_mode(model, bn == "none", momentum=0.0):
            for xb, yb in data.batches(device):
                n += len(yb)
                logits = _forward(model, *stacked, xb, vectorized).float()
                if logits.shape[0] != count:  # nothing was stacked: every point is the anchor
                    logits = logits.expand(count, *logits.shape[1:])
                ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(count), reduction="none")
                loss += ce.view(count, -1).double().sum(1)
                wrong += (logits.argmax(-1) != yb).double().sum(1)
    if n == 0:
        raise DataError("the evaluation data is empty")
    return (wrong / n).cpu().numpy(), (loss / n).cpu().numpy()


def _points(lines: Sequence[Line]) -> tuple[list[tuple[int, float]], list[tuple[int, int]], list]:
    """The points to evaluate, ``(line, coef)``, with their ``(line, index)`` slots, and the slots that copy
    another's result: ``t = 0`` is the anchor itself, evaluated once for all lines sharing the anchor and
    buffers objects (a valley's directions all start at the trained model)."""
    items, slots, copies, anchors = [], [], [], {}
    for i, line in enumerate(lines):
        for j, c in enumerate(line.coefs):
            if float(c) == 0.0:
                first = anchors.setdefault((id(line.anchor), id(line.buffers)), (i, j))
                if first != (i, j):
                    copies.append(((i, j), first))
                    continue
            items.append((i, float(c)))
            slots.append((i, j))
    return items, slots, copies


def evaluate_lines(
    model: nn.Module,
    lines: Sequence[Line],
    data: Data,
    *,
    bn: str = "recalibrate",
    chunk: int = 8,
    vectorize: bool = True,
    bf16: bool = False,
) -> Evaluation:
    """Test error and CE loss of every point of every line (see module docstring).

    ``chunk`` points share one vmapped call; ``vectorize=False`` evaluates point by point;
    ``bf16`` runs forward passes under bfloat16 autocast (metrics accumulate in float64).
    ``t = 0`` of lines sharing their anchor and buffers is evaluated once (``Evaluation.points`` counts
    the points evaluated).
    Lines whose anchor or direction holds NaN/Inf are refused (:class:`NonFiniteError`).
    """
    data = as_eval_data(data)
    bn = _check_policy(model, bn, data)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    checked: set[int] = set()
    for line in lines:
        for what, tensors in (("model", line.anchor), ("direction", line.direction)):
            if id(tensors) not in checked:
                check_finite(tensors, what)
                checked.add(id(tensors))
    device = data.device_for(model)
    model.to(device)
    items, slots, copies = _points(lines)
    errors = [np.empty(len(line.coefs)) for line in lines]
    losses = [np.empty(len(line.coefs)) for line in lines]
    start_time = time.perf_counter()
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        try:
            err, loss = _chunk_metrics(model, _stack_chunk(model, lines, part, bn), data, bn, vectorize,
                                       bf16, len(part), device)
        except RuntimeError as exc:
            if not vectorize:
                raise
            warnings.warn(f"vmap failed ({str(exc).splitlines()[0]}); evaluating point by point", stacklevel=2)
            vectorize = False
            err, loss = _chunk_metrics(model, _stack_chunk(model, lines, part, bn), data, bn, False,
                                       bf16, len(part), device)
        for k, (i, j) in enumerate(slots[start:start + len(part)]):
            errors[i][j], losses[i][j] = err[k], loss[k]
    for (i, j), (a, b) in copies:
        errors[i][j], losses[i][j] = errors[a][b], losses[a][b]
    seconds = time.perf_counter() - start_time
    return Evaluation(errors, losses, len(items), seconds, vectorize, chunk)


def evaluate_point(
    model: nn.Module,
    params: Mapping[str, Tensor],
    data: Data,
    *,
    buffers: Mapping[str, Tensor] | None = None,
    bn: str = "recalibrate",
) -> tuple[float, float]:
    """(error, loss) of one parameter set."""
    result = evaluate_lines(model, [Line(params, {}, [0.0], buffers)], data, bn=bn, chunk=1, vectorize=False)
    return float(result.error[0][0]), float(result.loss[0][0])


def point_buffers(
    model: nn.Module,
    params: Mapping[str, Tensor],
    data: Data,
    *,
    buffers: Mapping[str, Tensor] | None = None,
    bn: str = "recalibrate",
) -> Params:
    """The floating-point buffers a point is evaluated with: recalibrated ones, or (``stale``) ``buffers``.

    For eval-mode analyses (activations, Hessian traces); policy ``none`` has no buffers and is refused.
    """
    data = as_eval_data(data)
    bn = _check_policy(model, bn, data)
    if bn == "none":
        raise PolicyError("BN policy 'none' keeps no statistics; use 'recalibrate' or 'stale' here")
    device = data.device_for(model)
    model.to(device)
    if bn == "stale":
        own = {n: b.detach() for n, b in model.named_buffers() if b.is_floating_point()}
        return {**own, **(buffers or {})}
    stacked = _stack_chunk(model, [Line(params, {}, [0.0], buffers)], [(0, 0.0)], bn)
    _recalibrate(model, stacked, data, False, device)
    return {n: b[0] for n, b in stacked[2].items()}

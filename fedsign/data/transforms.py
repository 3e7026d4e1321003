"""Batch transforms: uint8 [B,C,H,W] -> normalized float32, with vectorized train-time augmentation."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from .specs import DatasetSpec

CROP_PADDING = 4

BatchTransform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def crop_flip_draws(batch: int, generator: torch.Generator | None,
                    padding: int = CROP_PADDING) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers of :func:`random_crop_flip` for ``batch`` images, in its draw order:
    crop offsets ``[2, batch]`` in ``[0, 2 * padding]`` (rows, cols) and flip flags ``[batch]``,
    on the generator's device (the CPU for the global RNG)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=gdev)
    flips = torch.rand(batch, generator=generator, device=gdev) < 0.5
    return offsets, flips


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = CROP_PADDING,
              flip: bool = True) -> torch.Tensor:
    """Crop every image of ``x`` at ``offsets`` after zero padding ``padding`` (size unchanged) and,
    if ``flip``, mirror those with ``flips`` set: one gather over the whole batch, no host sync."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)                       # [B,H]
    ar = torch.arange(w, device=x.device)
    cols = offsets[1, :, None] + (torch.where(flips[:, None], w - 1 - ar, ar) if flip else ar)  # [B,W]
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bidx, cidx, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None, padding: int = CROP_PADDING,
                     flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (zero padding ``padding``, output size unchanged) and, if ``flip``, random
    horizontal flip. Random numbers come from ``generator`` (any device; the global RNG when None)
    and are moved to ``x.device``."""
    offsets, flips = crop_flip_draws(len(x), generator, padding)
    return crop_flip(x, offsets.to(x.device), flips.to(x.device), padding, flip)


def make_batch_transform(spec: DatasetSpec, train: bool) -> BatchTransform:
    """fn(x_uint8 [B,C,H,W] on any device, generator) -> float32 normalized on the same device.

    With ``train`` and ``spec.augment``: random crop (pad 4) plus, where ``spec.hflip``, horizontal flip,
    seeded by ``generator``. Otherwise deterministic (the generator is ignored). Built once per
    ``(spec, train)`` (every client of a round asks for the same one); the function keeps no state but
    its per-device constants."""
    return _batch_transform(spec, bool(train))


@lru_cache(maxsize=32)
def _batch_transform(spec: DatasetSpec, train: bool) -> BatchTransform:
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    scale, shift = 1.0 / (255.0 * std), mean / std
    per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
    augment = train and spec.augment

    def transform(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != spec.channels:
            raise ValueError(f"{spec.name} transform expects uint8 [B,{spec.channels},H,W], got "
                             f"{x.dtype} {list(x.shape)}")
        if augment:
            x = random_crop_flip(x, generator, flip=spec.hflip)
        if x.device not in per_device:
            per_device[x.device] = (scale.to(x.device), shift.to(x.device))
        s, t = per_device[x.device]
        return x.float().mul_(s).sub_(t)

    return transform

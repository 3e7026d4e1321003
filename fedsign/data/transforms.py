"""Batch transforms: uint8 [B,C,H,W] -> normalized float32, with vectorized train-time augmentation."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .specs import DatasetSpec

CROP_PADDING = 4

BatchTransform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None, padding: int = CROP_PADDING,
                     flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (zero padding ``padding``, output size unchanged) and, if ``flip``, random
    horizontal flip, done with one gather over the whole batch. Random numbers come from ``generator``
    (any device; the global RNG when None) and are moved to ``x.device``."""
    b, c, h, w = x.shape
    gdev = generator.device if generator is not None else torch.device("cpu")
    draw = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gdev).to(x.device)
    flips = torch.rand(b, generator=generator, device=gdev).to(x.device) < 0.5
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = draw[0, :, None] + torch.arange(h, device=x.device)                       # [B,H]
    ar = torch.arange(w, device=x.device)
    cols = draw[1, :, None] + (torch.where(flips[:, None], w - 1 - ar, ar) if flip else ar)  # [B,W]
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bidx, cidx, rows[:, None, :, None], cols[:, None, None, :]]


def make_batch_transform(spec: DatasetSpec, train: bool) -> BatchTransform:
    """fn(x_uint8 [B,C,H,W] on any device, generator) -> float32 normalized on the same device.

    With ``train`` and ``spec.augment``: random crop (pad 4) plus, where ``spec.hflip``, horizontal flip,
    seeded by ``generator``. Otherwise deterministic (the generator is ignored)."""
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

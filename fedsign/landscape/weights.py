"""Reading model weights from untrusted files without pickle: ``.safetensors``, or ``.pt`` / ``.pth`` / ``.bin``
through ``torch.load(weights_only=True)``, and matching them to a model with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from .errors import LandscapeError

TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class WeightsError(LandscapeError):
    """A weights file that cannot be read or does not fit the model."""


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path``; a checkpoint dict holding it under ``state_dict`` / ``model`` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise WeightsError(f"weights file {path}: unknown suffix {path.suffix!r}; use .safetensors or "
                               f"{', '.join(TORCH_SUFFIXES)}")
    except WeightsError:
        raise
    except Exception as err:  # truncated / corrupt / pickled objects refused by weights_only
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read weights file {path} ({first[:200]}); is it complete and a plain "
                           "tensor state dict?") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} holds no {{name: tensor}} state dict")
    return state


def fit_weights(model: nn.Module, state: Mapping[str, Tensor], source: str = "the weights") -> dict[str, Tensor]:
    """The floating-point entries of ``state`` for ``model``: every parameter present with its shape
    (buffers optional), else :class:`WeightsError` naming the first mismatches."""
    own = dict(model.state_dict())
    params = [n for n, _ in model.named_parameters()]
    missing = [n for n in params if n not in state]
    if missing:
        foreign = [n for n in state if n not in own]
        raise WeightsError(f"{source} lack {len(missing)} of the model's {len(params)} parameters (e.g. "
                           f"{missing[0]!r}; the file has e.g. {foreign[0] if foreign else next(iter(state), '')!r}):"
                           " a different architecture or name prefix")
    wrong = [f"{n} {tuple(state[n].shape)} vs {tuple(t.shape)}" for n, t in own.items()
             if n in state and tuple(state[n].shape) != tuple(t.shape)]
    if wrong:
        raise WeightsError(f"{source} do not fit the model: {len(wrong)} shape mismatches, e.g. {wrong[0]} "
                           "(another dataset's model, e.g. a different number of classes or channels?)")
    return {n: state[n] for n in own if n in state and state[n].is_floating_point()}


def apply_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights file ``path`` into ``model`` (in place) after :func:`fit_weights`."""
    state = fit_weights(model, load_weights(path), f"weights file {path}")
    model.load_state_dict(state, strict=False)
    return model

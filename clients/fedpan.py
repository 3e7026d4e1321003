"""FedPAN (Li et al., CVPR 2022; lxcnju/FedPAN): position-aware neurons.

A fixed encoding ``e_i = sin(2*pi*T*i/J)`` of unit (channel) i of J couples each
hidden unit to its position, so that permuted neurons of different clients stop being
interchangeable. It is applied, over dim 1, to the input of every ``nn.ReLU`` module of
the model -- that is, to every conv (after its BN, if any) and hidden-linear output just
before its activation, never to the classifier, whose output has no ReLU:
``"mul"``: ``h * (1 + A*e)``, ``"add"``: ``h + A*e``. The same encoding is applied on
the server and on every client (``prepare_model`` runs wherever the run's model is built).

Placement against the official code: its VGG encodes every conv output before the
ReLU, as here. In its ResNet basic block the encoding goes on the second BN output
and on a projection shortcut *before* the residual sum (an identity shortcut is not
encoded) and the stem is left unencoded; here the encoding goes on the sum, before the
block's final ReLU, and on the stem. For ``"mul"`` with a projection shortcut both give
the same result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from clients.base import ClientAlgorithm
from fedsign.algorithms import PAN_OPS
from fedsign.config import RunConfig


def pan_encoding(num_units: int, period: float) -> Tensor:
    """e_i = sin(2*pi*T*i/J) for i = 0..J-1 (J = ``num_units``, T = ``period``)."""
    return torch.sin(2 * math.pi * period * torch.arange(num_units, dtype=torch.float64) / num_units).float()


def apply_pan(h: Tensor, encoding: Tensor, op: str, amplitude: float) -> Tensor:
    """Encode ``h`` over dim 1: ``h * (1 + A*e)`` (``"mul"``) or ``h + A*e`` (``"add"``)."""
    check_pan_op(op)
    e = amplitude * encoding.reshape((1, -1) + (1,) * (h.dim() - 2))
    return h * (1 + e) if op == "mul" else h + e


def check_pan_op(op: str) -> None:
    """ValueError unless ``op`` is one of ``PAN_OPS``."""
    if op not in PAN_OPS:
        raise ValueError(f"unknown pan-op {op!r}; use one of {', '.join(PAN_OPS)}")


class PositionEncoding:
    """Forward pre-hook that encodes a module's input with ``apply_pan``."""

    def __init__(self, op: str, amplitude: float, period: float) -> None:
        check_pan_op(op)  # at build time, before any training
        self.op, self.amplitude, self.period = op, amplitude, period
        self._encodings: dict[tuple, Tensor] = {}

    def encoding(self, num_units: int, like: Tensor) -> Tensor:
        key = (num_units, like.device, like.dtype)
        if key not in self._encodings:
            self._encodings[key] = pan_encoding(num_units, self.period).to(device=like.device, dtype=like.dtype)
        return self._encodings[key]

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        h = args[0]
        return (apply_pan(h, self.encoding(h.shape[1], h), self.op, self.amplitude), *args[1:])


def add_position_encoding(model: nn.Module, op: str, amplitude: float, period: float) -> list[RemovableHandle]:
    """Register one ``PositionEncoding`` pre-hook on every ``nn.ReLU`` of ``model``."""
    hook = PositionEncoding(op, amplitude, period)
    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]


class FedPANClient(ClientAlgorithm):
    """Plain CE on a model with position-aware neurons (``pan-op``, ``pan-amplitude``,
    ``pan-period``); no state."""

    name = "fedpan"

    def prepare_model(self, model: nn.Module, config: RunConfig) -> None:
        add_position_encoding(model, config.pan_op, config.pan_amplitude, config.pan_period)

"""Perturbation directions and their normalization: pure functions over ``{name: tensor}`` dicts.

Every direction is a dict over the *selected* parameters of the converged model ``theta``
(see :mod:`fedsign.landscape.groups`); random ones draw from a seeded ``torch.Generator``
(on the CPU, in dict order, then moved to each tensor's device), so a seed fixes them.

Names (:func:`make_direction`):

* the 7 common noises (paper §4.1): ``gauss`` G(0,1), ``uniform`` U(-1,1), ``ternary`` {-1,0,1},
  ``gauss1`` G(1,1), ``uniform01`` U(0,1), ``binary`` {0,1}, ``ones`` {1};
* their sign-consistent versions ``sc-<noise>`` = ``|eps| * sign(theta)``;
* ``ratio-<r>``: G(0,1) noise with a fraction r of its elements given theta's sign (Fig. 4);
* the 6 special directions (Fig. 5): ``init`` theta_0, ``final`` theta, ``sign`` sign(theta),
  ``sign-mu`` sign(theta - mu), ``sgp`` sgp(theta), ``sgp-mu`` sgp(theta - mu), with mu the mean
  of each parameter tensor and sgp(x) = 1 where x > 0, else 0.

``sign`` is ``torch.sign`` (0 for an exactly zero parameter, which then gets no noise).
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from fedsign.training import derive_seed

from .errors import LandscapeError

Params = dict[str, Tensor]

COMMON_NOISES: dict[str, str] = {
    "gauss": "G(0,1)", "uniform": "U(-1,1)", "ternary": "{-1,0,1}", "gauss1": "G(1,1)",
    "uniform01": "U(0,1)", "binary": "{0,1}", "ones": "{1}",
}
SPECIAL_DIRECTIONS: dict[str, str] = {
    "init": "θ0", "final": "θf", "sign": "sign(θf)", "sign-mu": "sign(θf-μ)",
    "sgp": "sgp(θf)", "sgp-mu": "sgp(θf-μ)",
}
DIRECTION_SETS: dict[str, tuple[str, ...]] = {
    "common": tuple(COMMON_NOISES),
    "common-sc": tuple(f"sc-{n}" for n in COMMON_NOISES),
    "special": tuple(SPECIAL_DIRECTIONS),
}
NORMALIZATIONS = ("ns", "filter", "none")

_DRAWS: dict[str, Callable[[tuple[int, ...], torch.Generator], Tensor]] = {
    "gauss": lambda s, g: torch.randn(s, generator=g),
    "uniform": lambda s, g: torch.rand(s, generator=g) * 2 - 1,
    "ternary": lambda s, g: torch.randint(-1, 2, s, generator=g).float(),
    "gauss1": lambda s, g: torch.randn(s, generator=g) + 1,
    "uniform01": lambda s, g: torch.rand(s, generator=g),
    "binary": lambda s, g: torch.randint(0, 2, s, generator=g).float(),
    "ones": lambda s, g: torch.ones(s),
}


class DirectionError(LandscapeError):
    """An unknown direction name or a direction that cannot be built or normalized."""


def draw_noise(kind: str, like: Mapping[str, Tensor], generator: torch.Generator) -> Params:
    """Noise of one of :data:`COMMON_NOISES`, shaped like ``like``."""
    if kind not in _DRAWS:
        raise DirectionError(f"unknown noise {kind!r}; use one of {', '.join(COMMON_NOISES)}")
    return {n: _DRAWS[kind](tuple(t.shape), generator).to(t) for n, t in like.items()}


def sign_replaced(noise: Mapping[str, Tensor], theta: Mapping[str, Tensor]) -> Params:
    """``|noise| * sign(theta)``: the noise made sign-consistent with ``theta``."""
    return {n: noise[n].abs() * torch.sign(theta[n]) for n in noise}


def ratio_noise(theta: Mapping[str, Tensor], ratio: float, generator: torch.Generator) -> Params:
    """G(0,1) noise where a random ``round(ratio * numel)`` elements of each tensor take theta's sign.

    Its expected sign consistency with theta is ``ratio + (1 - ratio) / 2``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise DirectionError(f"sign ratio must be in [0, 1], got {ratio}")
    out = {}
    for n, t in theta.items():
        eps = torch.randn(tuple(t.shape), generator=generator).reshape(-1)
        chosen = torch.randperm(eps.numel(), generator=generator)[:round(ratio * eps.numel())]
        eps[chosen] = eps[chosen].abs() * torch.sign(t.detach().reshape(-1).cpu()[chosen])
        out[n] = eps.reshape(t.shape).to(t)
    return out


def special_direction(kind: str, theta: Mapping[str, Tensor], theta0: Mapping[str, Tensor] | None = None) -> Params:
    """One of :data:`SPECIAL_DIRECTIONS`; ``init`` needs the initialization ``theta0``."""
    if kind == "init":
        if theta0 is None:
            raise DirectionError("direction 'init' needs the initial parameters theta_0")
        return {n: theta0[n].detach().clone() for n in theta}
    centered = kind.endswith("-mu")
    base = {n: t.detach() - t.detach().mean() if centered else t.detach() for n, t in theta.items()}
    if kind == "final":
        return {n: t.clone() for n, t in base.items()}
    if kind in ("sign", "sign-mu"):
        return {n: torch.sign(t) for n, t in base.items()}
    if kind in ("sgp", "sgp-mu"):
        return {n: (t > 0).to(t.dtype) for n, t in base.items()}
    raise DirectionError(f"unknown special direction {kind!r}; use one of {', '.join(SPECIAL_DIRECTIONS)}")


def difference(theta2: Mapping[str, Tensor], theta1: Mapping[str, Tensor]) -> Params:
    """``theta2 - theta1`` over the names of ``theta1``."""
    return {n: theta2[n].detach() - theta1[n].detach() for n in theta1}


def perturb(theta: Mapping[str, Tensor], direction: Mapping[str, Tensor], coef: float) -> Params:
    """``theta + coef * direction`` (names outside the direction unchanged)."""
    return {n: t + coef * direction[n] if n in direction else t for n, t in theta.items()}


def global_norm(tensors: Mapping[str, Tensor]) -> float:
    """Frobenius norm of all tensors together."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors.values()))


FILTER_1D = ("copy", "zero", "element")


def normalize(direction: Mapping[str, Tensor], theta: Mapping[str, Tensor], mode: str = "ns",
              filter_1d: str = "copy") -> Params:
    """Scale ``direction`` to the converged model ``theta``.

    * ``"ns"`` (norm-scaled, the paper's default): ``d / ||d|| * ||theta||``, Frobenius norms over
      all selected parameters together; the direction itself is unchanged.
    * ``"filter"`` (Filter-NS, Li et al. 2018): every tensor of 2 or more dimensions is split along its
      first dimension and each slice ("filter") gets the norm of theta's slice (a zero slice of ``d``
      stays zero). 1-D (and 0-D) tensors -- biases, BN weights and biases -- follow ``filter_1d``:

      - ``"copy"`` (default): ``d = theta``, what Li et al.'s ``normalize_directions_for_weights``
        does unless told to ignore them, and so the default of their ``plot_surface.py``
        (``--xignore ''``), the reference the paper cites for Filter-NS;
      - ``"zero"``: ``d = 0``, their ``ignore='biasbn'`` (1-D tensors get no noise);
      - ``"element"``: each element is its own filter, ``d_i -> sign(d_i) * |theta_i|`` (keeps only the
        sign of the draw; this package's rule before the two reference modes were added).
    * ``"none"``: the raw direction.
    """
    if mode == "none":
        return {n: d.clone() for n, d in direction.items()}
    if mode == "ns":
        d_norm = global_norm(direction)
        if d_norm == 0.0:
            raise DirectionError("cannot norm-scale a zero direction")
        factor = global_norm({n: theta[n] for n in direction}) / d_norm
        return {n: d * factor for n, d in direction.items()}
    if mode == "filter":
        if filter_1d not in FILTER_1D:
            raise DirectionError(f"unknown Filter-NS 1-D rule {filter_1d!r}; use one of {', '.join(FILTER_1D)}")
        out = {}
        for n, d in direction.items():
            t = theta[n].detach()
            if d.dim() <= 1 and filter_1d == "copy":
                out[n] = t.clone().reshape(d.shape)
                continue
            if d.dim() <= 1 and filter_1d == "zero":
                out[n] = torch.zeros_like(d)
                continue
            if d.dim() <= 1:  # "element": one filter per element
                d, t = d.reshape(-1, 1), t.reshape(-1, 1)
            flat_d, flat_t = d.reshape(d.shape[0], -1), t.reshape(t.shape[0], -1)
            d_norms = flat_d.norm(dim=1, keepdim=True)
            scale = torch.where(d_norms > 0, flat_t.norm(dim=1, keepdim=True) / d_norms.clamp_min(1e-30), 0.0)
            out[n] = (flat_d * scale).reshape(direction[n].shape)
        return out
    raise DirectionError(f"unknown normalization {mode!r}; use one of {', '.join(NORMALIZATIONS)}")


def direction_label(name: str) -> str:
    """A figure label: ``G(0,1)``, ``|G(0,1)|*sign(θf)``, ``sign(θf)``, ``r=0.3``..."""
    if name in COMMON_NOISES:
        return COMMON_NOISES[name]
    if name.startswith("sc-") and name[3:] in COMMON_NOISES:
        return f"|{COMMON_NOISES[name[3:]]}|·sign(θf)"
    if name.startswith("ratio-"):
        return f"r={name[6:]}"
    return SPECIAL_DIRECTIONS.get(name, name)


def make_direction(
    name: str,
    theta: Mapping[str, Tensor],
    generator: torch.Generator,
    theta0: Mapping[str, Tensor] | None = None,
) -> Params:
    """The raw (unnormalized) direction ``name`` over the names of ``theta`` (see module docstring)."""
    if name in COMMON_NOISES:
        return draw_noise(name, theta, generator)
    if name.startswith("sc-") and name[3:] in COMMON_NOISES:
        return sign_replaced(draw_noise(name[3:], theta, generator), theta)
    if name.startswith("ratio-"):
        try:
            ratio = float(name[6:])
        except ValueError:
            raise DirectionError(f"bad ratio direction {name!r}; write ratio-0.3") from None
        return ratio_noise(theta, ratio, generator)
    if name in SPECIAL_DIRECTIONS:
        return special_direction(name, theta, theta0)
    raise DirectionError(f"unknown direction {name!r}; use {', '.join(COMMON_NOISES)}, sc-<noise>, ratio-<r>, "
                         f"{', '.join(SPECIAL_DIRECTIONS)} or the sets {', '.join(DIRECTION_SETS)}")


def direction_seed(name: str, seed: int) -> int:
    """The generator seed of direction ``name``: shared by a noise and its ``sc-`` version (same draw,
    signs replaced) and by all ``ratio-<r>`` (same noise; the sign-replaced elements of a smaller r
    are a subset of those of a larger r)."""
    base = "ratio" if name.startswith("ratio-") else name.removeprefix("sc-")
    return derive_seed(seed, zlib.crc32(base.encode()))


def make_directions(
    names: Sequence[str],
    theta: Mapping[str, Tensor],
    seed: int,
    *,
    normalization: str = "ns",
    theta0: Mapping[str, Tensor] | None = None,
    filter_1d: str = "copy",
) -> dict[str, Params]:
    """Normalized directions by name over the names of ``theta`` (see :func:`direction_seed`;
    ``filter_1d``: :func:`normalize`'s rule for 1-D tensors under Filter-NS)."""
    return {name: normalize(make_direction(name, theta, torch.Generator().manual_seed(direction_seed(name, seed)),
                                           theta0), theta, normalization, filter_1d) for name in names}

"""The algorithm registry: every algorithm declared once.

An entry names the algorithm, its server strategy and client objective (``module:Class``,
loaded on demand so this module imports nothing else of the project), its hyperparameters
(run-config key, default, range, one-line doc), the grid Table 1 tunes it over and the
model Table 1 reports. ``fedsign.config.RunConfig`` gets one field per hyperparameter, the
pyproject defaults and the README key table are checked against it by tests, and
``benchmarks/table1.py`` takes its methods and grids from here.

Adding an algorithm: one file in ``strategies/`` (the server; a subclass of
``strategies.FedAvg``), one in ``clients/`` (a subclass of ``clients.ClientAlgorithm``) and
one ``Algorithm`` entry below.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

Scalar = bool | int | float | str


@dataclass(frozen=True)
class Hyperparameter:
    """One run-config key of an algorithm: its default (whose type the key takes), a range or
    the allowed values, and what it does."""

    key: str
    default: Scalar
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    open_minimum: bool = False  # value must be > minimum (else >= minimum)
    maximum: float | None = None
    open_maximum: bool = False  # value must be < maximum (else <= maximum)

    @property
    def field(self) -> str:
        """The ``RunConfig`` field name (snake_case)."""
        return self.key.replace("-", "_")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range (one line naming the key), None when it is fine."""
        if self.choices and value not in self.choices:
            return f"{self.key} must be one of {', '.join(self.choices)}; got '{value}'"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.key} must be a finite number, got {value}"
        if self.minimum is not None and (value <= self.minimum if self.open_minimum else value < self.minimum):
            return f"{self.key} must be {'>' if self.open_minimum else '>='} {self.minimum:g}, got {value}"
        if self.maximum is not None and (value >= self.maximum if self.open_maximum else value > self.maximum):
            return f"{self.key} must be {'<' if self.open_maximum else '<='} {self.maximum:g}, got {value}"
        return None


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm."""

    name: str  # the run-config value of ``strategy``
    label: str  # as tables print it
    strategy: str  # "module:Class" of the server strategy
    client: str  # "module:Class" of the client objective
    hyperparameters: tuple[Hyperparameter, ...] = ()
    tuning: tuple[str, tuple[float, ...]] | None = None  # (key, grid) Table 1 selects from
    reported_model: str = ""  # metrics.csv prefix of the model Table 1 reports ("": the global model)

    def strategy_class(self) -> type:
        return _load(self.strategy)

    def client_class(self) -> type:
        return _load(self.client)


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


SIGN_REDUCTIONS = ("root4", "sum", "sqrt", "mean")  # clients.fedsign's docstring gives each one's gradient
PAN_OPS = ("mul", "add")  # clients.fedpan
MOON_FIRST_PREVIOUS = ("init", "random", "global", "none")  # clients.moon
FEDSIGN_REDUCTION = Hyperparameter(
    "fedsign-reduction", "root4", "how Eq. 1 reduces the per-weight reward (clients/fedsign.py)",
    choices=SIGN_REDUCTIONS)
# The FedSign term added to any other algorithm; its reduction is ``fedsign-reduction``.
SIGN_GAMMA = Hyperparameter("sign-gamma", 0.0, "adds FedSign's term with this weight to any other strategy",
                            minimum=0.0)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("fedavg", "FedAvg", "strategies.fedavg:FedAvg", "clients.fedavg:FedAvgClient"),
    Algorithm("fedprox", "FedProx", "strategies.fedprox:FedProx", "clients.fedprox:FedProxClient",
              (Hyperparameter("proximal-mu", 0.01, "weight μ of the proximal term (μ/2)‖θ − θ_t‖²",
                              minimum=0.0),),
              tuning=("proximal-mu", (0.001, 0.01, 0.1))),
    Algorithm("moon", "MOON", "strategies.moon:MOON", "clients.moon:MOONClient",
              (Hyperparameter("moon-mu", 5.0, "weight mu of the model-contrastive loss", minimum=0.0),
               Hyperparameter("moon-temperature", 0.5, "temperature tau of the contrastive loss",
                              minimum=0.0, open_minimum=True),
               Hyperparameter("moon-out-dim", 256, "output size of MOON's projection head", minimum=1),
               Hyperparameter("moon-head", True, "add the projection head (false: headless MOON)"),
               Hyperparameter("moon-first-previous", "init",
                              "a first-time client's stand-in for its previous model: θ⁰ (FedRepo), "
                              "its own random init (official MOON after round 1), the global model, or "
                              "none: no contrastive term in its first round (official MOON in round 1)",
                              choices=MOON_FIRST_PREVIOUS)),
              tuning=("moon-mu", (0.1, 1.0, 5.0))),
    Algorithm("feddyn", "FedDyn", "strategies.feddyn:FedDyn", "clients.feddyn:FedDynClient",
              (Hyperparameter("feddyn-alpha", 0.01, "FedDyn's regularization strength alpha",
                              minimum=0.0, open_minimum=True),
               Hyperparameter("feddyn-adaptive-alpha", True,
                              "client k uses alpha * mean(n) / n_k, as the official code")),
              tuning=("feddyn-alpha", (0.001, 0.01, 0.1)), reported_model="participant_mean_"),
    Algorithm("fedpan", "FedPAN", "strategies.fedpan:FedPAN", "clients.fedpan:FedPANClient",
              (Hyperparameter("pan-op", "mul", "how the position encoding is applied", choices=PAN_OPS),
               Hyperparameter("pan-amplitude", 0.1, "amplitude A of the position encoding", minimum=0.0),
               Hyperparameter("pan-period", 4.0, "period T of the sinusoidal encoding",
                              minimum=0.0, open_minimum=True)),
              tuning=("pan-amplitude", (0.05, 0.1, 0.2))),
    Algorithm("fedsign", "FedSign", "strategies.fedsign:FedSign", "clients.fedsign:FedSignClient",
              (Hyperparameter("fedsign-gamma", 0.01, "weight gamma of Eq. 1's sign reward", minimum=0.0),
               FEDSIGN_REDUCTION),
              tuning=("fedsign-gamma", (0.001, 0.01, 0.1))),
)}

# Hyperparameter keys in registry order, each once (FedSign's reduction also serves ``sign-gamma``).
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    h.key: h for h in [*(h for a in ALGORITHMS.values() for h in a.hyperparameters), SIGN_GAMMA]}


def get_algorithm(name: str) -> Algorithm:
    """The entry registered under ``name``; ValueError listing the names otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm '{name}'; known: {', '.join(ALGORITHMS)}") from None


def client_hyperparameters(name: str, sign_gamma: float) -> tuple[Hyperparameter, ...]:
    """The keys a strategy sends its clients: its algorithm's, plus the sign term's when ``sign_gamma`` > 0."""
    own = get_algorithm(name).hyperparameters
    if sign_gamma > 0 and FEDSIGN_REDUCTION not in own:
        return (*own, SIGN_GAMMA, FEDSIGN_REDUCTION)
    return own


def hyperparameter_table() -> str:
    """The README's table of algorithm hyperparameters (a test keeps the README equal to it)."""
    lines = ["| algorithm | key | default | values | meaning |", "|---|---|---|---|---|"]
    for algorithm in ALGORITHMS.values():
        for h in algorithm.hyperparameters:
            lines.append(f"| {algorithm.label} | `{h.key}` | {_literal(h.default)} | {_values(h)} | {h.doc} |")
    lines.append(f"| any | `{SIGN_GAMMA.key}` | {_literal(SIGN_GAMMA.default)} | {_values(SIGN_GAMMA)} | "
                 f"{SIGN_GAMMA.doc} (reduction: `fedsign-reduction`) |")
    return "\n".join(lines) + "\n"


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if isinstance(value, str) else f"{value:g}"


def _values(h: Hyperparameter) -> str:
    if h.choices:
        return ", ".join(f"`{c}`" for c in h.choices)
    if isinstance(h.default, bool):
        return "true, false"
    low = "" if h.minimum is None else f"{'>' if h.open_minimum else '≥'} {h.minimum:g}"
    high = "" if h.maximum is None else f"{'<' if h.open_maximum else '≤'} {h.maximum:g}"
    return ", ".join(x for x in (low, high) if x) or "any"

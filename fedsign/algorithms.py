"""The algorithm registry: every algorithm declared once.

An algorithm is its client objective (``clients/<name>.py``, a subclass of
``clients.ClientAlgorithm``), its typed options (a frozen dataclass below, one field per
hyperparameter, declared with :func:`hyperparameter`) and one ``Algorithm`` line in
``ALGORITHMS``; a server strategy file (a subclass of ``strategies.FedAvg``) only when the server
differs from FedAvg's, else the entry's strategy defaults to ``strategies.FedAvg``. Classes are
named as ``module:Class`` and loaded on demand, so this module imports nothing else of the
project (and no torch). ``fedsign.config.RunConfig`` inherits every option field through
:class:`AlgorithmOptions` (a test checks that it lists every entry's options); tests check the
pyproject defaults and the README tables against it; ``benchmarks/table1.py`` takes its methods
and grids from here.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field, fields
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
    client: str  # "module:Class" of the client objective
    options: type | None = None  # the frozen dataclass of its hyperparameters (fields made by ``hyperparameter``)
    strategy: str = "strategies.fedavg:FedAvg"  # "module:Class" of the server strategy
    tuning: tuple[str, tuple[float, ...]] | None = None  # (key, grid) Table 1 selects from
    reported_model: str = ""  # metrics.csv prefix of the model Table 1 reports ("": the global model)

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        return () if self.options is None else options_hyperparameters(self.options)

    def strategy_class(self) -> type:
        return _load(self.strategy)

    def client_class(self) -> type:
        return _load(self.client)


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def hyperparameter(default: Scalar, doc: str, **limits: Any) -> Any:
    """An options-dataclass field: its default (whose type the key takes), what it does, and
    ``choices`` / ``minimum`` / ``maximum`` (``open_minimum``, ``open_maximum``) as in :class:`Hyperparameter`."""
    return field(default=default, metadata={"doc": doc, **limits})


def options_hyperparameters(options: type) -> tuple[Hyperparameter, ...]:
    """The hyperparameters an options dataclass declares, in field order."""
    return tuple(Hyperparameter(f.name.replace("_", "-"), f.default, **f.metadata) for f in fields(options))


SIGN_REDUCTIONS = ("root4", "sum", "sqrt", "mean")  # clients.fedsign's docstring gives each one's gradient
PAN_OPS = ("mul", "add")  # clients.fedpan
MOON_FIRST_PREVIOUS = ("init", "random", "global", "none")  # clients.moon


@dataclass(frozen=True)
class FedProxOptions:
    proximal_mu: float = hyperparameter(0.01, "weight μ of the proximal term (μ/2)‖θ − θ_t‖²", minimum=0.0)


@dataclass(frozen=True)
class MOONOptions:
    moon_mu: float = hyperparameter(5.0, "weight mu of the model-contrastive loss", minimum=0.0)
    moon_temperature: float = hyperparameter(0.5, "temperature tau of the contrastive loss",
                                             minimum=0.0, open_minimum=True)
    moon_out_dim: int = hyperparameter(256, "output size of MOON's projection head", minimum=1)
    moon_head: bool = hyperparameter(True, "add the projection head (false: headless MOON)")
    moon_first_previous: str = hyperparameter(
        "init", "a first-time client's stand-in for its previous model: θ⁰ (FedRepo), its own random init "
        "(official MOON after round 1), the global model, or none: no contrastive term in its first round "
        "(official MOON in round 1)", choices=MOON_FIRST_PREVIOUS)


@dataclass(frozen=True)
class FedDynOptions:
    feddyn_alpha: float = hyperparameter(0.01, "FedDyn's regularization strength alpha",
                                         minimum=0.0, open_minimum=True)
    feddyn_adaptive_alpha: bool = hyperparameter(True, "client k uses alpha * mean(n) / n_k, as the official code")


@dataclass(frozen=True)
class FedPANOptions:
    pan_op: str = hyperparameter("mul", "how the position encoding is applied", choices=PAN_OPS)
    pan_amplitude: float = hyperparameter(0.1, "amplitude A of the position encoding", minimum=0.0)
    pan_period: float = hyperparameter(4.0, "period T of the sinusoidal encoding", minimum=0.0, open_minimum=True)


@dataclass(frozen=True)
class FedSignOptions:
    fedsign_gamma: float = hyperparameter(0.01, "weight gamma of Eq. 1's sign reward", minimum=0.0)
    fedsign_reduction: str = hyperparameter("root4", "how Eq. 1 reduces the per-weight reward (clients/fedsign.py)",
                                            choices=SIGN_REDUCTIONS)


@dataclass(frozen=True)
class SignTermOptions:
    """The FedSign term added to any other algorithm; its reduction is ``fedsign-reduction``."""

    sign_gamma: float = hyperparameter(0.0, "adds FedSign's term with this weight to any other strategy", minimum=0.0)


# Bases in reverse: a dataclass lists the fields of its last base first, so RunConfig's keys follow the registry.
@dataclass(frozen=True)
class AlgorithmOptions(SignTermOptions, FedSignOptions, FedPANOptions, FedDynOptions, MOONOptions, FedProxOptions):
    """Every algorithm's options: the hyperparameter fields ``fedsign.config.RunConfig`` inherits."""


FEDSIGN_REDUCTION, SIGN_GAMMA = options_hyperparameters(FedSignOptions)[1], options_hyperparameters(SignTermOptions)[0]

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("fedavg", "FedAvg", "clients.fedavg:FedAvgClient"),
    Algorithm("fedprox", "FedProx", "clients.fedprox:FedProxClient", FedProxOptions,
              tuning=("proximal-mu", (0.001, 0.01, 0.1))),
    Algorithm("moon", "MOON", "clients.moon:MOONClient", MOONOptions, tuning=("moon-mu", (0.1, 1.0, 5.0))),
    Algorithm("feddyn", "FedDyn", "clients.feddyn:FedDynClient", FedDynOptions, "strategies.feddyn:FedDyn",
              tuning=("feddyn-alpha", (0.001, 0.01, 0.1)), reported_model="participant_mean_"),
    Algorithm("fedpan", "FedPAN", "clients.fedpan:FedPANClient", FedPANOptions,
              tuning=("pan-amplitude", (0.05, 0.1, 0.2))),
    Algorithm("fedsign", "FedSign", "clients.fedsign:FedSignClient", FedSignOptions,
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

"""The run configuration: one typed, validated object for every engine.

Keys are Flower's kebab-case run-config keys (``num-clients``); fields are their
snake_case twins (``num_clients``). The platform's keys are declared here; every
algorithm hyperparameter is a typed field of the registry's options dataclasses
(``fedsign.algorithms.AlgorithmOptions``). Defaults are mirrored in ``pyproject.toml``'s
``[tool.flwr.app.config]`` (a test keeps the two equal).
Validation runs before any data loading, Ray start or training, and raises
:class:`ConfigError` whose message is one line naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from fedsign.algorithms import ALGORITHMS, HYPERPARAMETERS, AlgorithmOptions
from fedsign.tracking import absolute_store, tracking_problem

ENGINES = ("auto", "inprocess", "vectorized")
INIT_CHOICES = ("auto", "fedrepo", "pytorch")
DEVICES = ("auto", "cpu", "cuda")
PARTITION_STYLES = ("per-class", "per-client")


# The key=value pattern of Flower's ``parse_config_args``.
_KEY_VALUE = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def merge_overrides(*parts: str) -> str:
    """``key=value`` strings joined with later parts replacing earlier keys (an ``--extra`` over a preset)."""
    merged: dict[str, str] = {}
    for part in parts:
        for key, value in _KEY_VALUE.findall(part):
            merged.pop(key, None)
            merged[key] = value
    return " ".join(f"{k}={v}" for k, v in merged.items())


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class PlatformConfig:
    """The platform's run-config keys with their defaults (README: "Run-config keys");
    ``RunConfig`` adds the algorithms' hyperparameters."""

    strategy: str = "fedavg"
    dataset: str = "digits"
    data_dir: str = ""
    model: str = "cnn"
    init: str = "auto"  # "fedrepo", "pytorch", or "auto": the model's default (fedsign.models.DEFAULT_INIT)
    num_clients: int = 10
    clients_per_round: int = 10
    num_rounds: int = 20
    local_epochs: int = 5
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    grad_clip: float = 0.0
    dirichlet_alpha: float = 0.5
    partition_style: str = "per-class"
    min_partition_size: int = 10
    train_samples: int = 0  # 0: the whole train split; else a fixed class-stratified subset of this size
    validation_fraction: float = 0.0  # share of the train data held out (stratified) for model selection
    seed: int = 0
    eval_every: int = 1
    out_dir: str = ""
    device: str = "auto"
    engine: str = "auto"  # "auto": vectorized on CUDA, inprocess on a CPU (fedsign.engines.choose_engine)
    mixed_precision: bool = False  # vectorized engine: bf16 autocast + channels-last images
    resume: bool = False
    checkpoint_every: int = 1
    weighted: bool = True
    min_replies: int = 1
    round_timeout: float = 3600.0
    fail_partitions: str = ""  # failure injection for reliability tests, see fedsign.faults
    tracking: str = ""  # '', 'tensorboard', 'mlflow' or 'tensorboard,mlflow' (fedsign.tracking)
    mlflow_uri: str = ""  # the MLflow store; '' = the SQLite store mlflow.db beside the run folder

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key_of(field_name: str) -> str:
        return field_name.replace("_", "-")

    @classmethod
    def keys(cls) -> list[str]:
        return [cls.key_of(f.name) for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Default values by kebab-case key."""
        return {cls.key_of(f.name): f.default for f in fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        """Values by kebab-case key (the form Flower's run config uses)."""
        return {self.key_of(f.name): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- parsing
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, validate: bool = True) -> "RunConfig":
        """Build from kebab-case keys (unknown keys and wrong types are errors)."""
        by_key = {cls.key_of(f.name): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in by_key:
                raise ConfigError(
                    f"unknown run-config key '{key}'; valid keys: {', '.join(sorted(by_key))}"
                )
            field = by_key[key]
            kwargs[field.name] = _coerce(key, value, type(field.default))
        config = cls(**kwargs)
        if validate:
            config.validate()
        return config

    @classmethod
    def from_overrides(cls, text: str | list[str] | None, *, validate: bool = True) -> "RunConfig":
        """Parse ``"key=value ..."`` exactly as ``flwr run --run-config`` does."""
        from flwr.common.config import parse_config_args

        items = [text] if isinstance(text, str) else text
        for item in items or []:
            if item.endswith(".toml") and not Path(item).expanduser().is_file():
                raise ConfigError(f"run-config file {item} does not exist")
            stray = _KEY_VALUE.sub(" ", item).split() if not item.endswith(".toml") else []
            if stray:  # Flower's parser silently skips what is not key=value
                raise ConfigError(f"could not parse --run-config near '{stray[0]}': use key=value pairs with "
                                  "TOML values, e.g. \"strategy='fedsign' num-rounds=5\"")
        try:
            overrides = parse_config_args(items)
        except Exception as err:  # click.ClickException, ValueError or TOMLDecodeError from Flower's parser
            raise ConfigError(
                "could not parse --run-config: use key=value pairs with TOML values, "
                "e.g. \"strategy='fedsign' num-rounds=5\", or a valid .toml file"
            ) from err
        return cls.from_mapping(overrides, validate=validate)

    # ------------------------------------------------------------ validation
    def validate(self) -> "RunConfig":
        """Check every value; raise ConfigError naming the key and the fix."""
        _one_of("strategy", self.strategy, tuple(ALGORITHMS))
        _one_of("engine", self.engine, ENGINES)
        _one_of("init", self.init, INIT_CHOICES)
        _one_of("device", self.device, DEVICES)
        _one_of("partition-style", self.partition_style, PARTITION_STYLES)
        for hyperparameter in HYPERPARAMETERS.values():
            problem = hyperparameter.problem(getattr(self, hyperparameter.field))
            if problem:
                raise ConfigError(problem)
        if not 0 <= self.validation_fraction < 0.5:
            raise ConfigError(f"validation-fraction must be in [0, 0.5), got {self.validation_fraction}")
        for key in ("num-clients", "clients-per-round", "num-rounds", "local-epochs",
                    "batch-size", "eval-every", "min-replies"):
            _positive(key, getattr(self, key.replace("-", "_")))
        for key in ("lr", "dirichlet-alpha", "round-timeout"):
            _positive(key, getattr(self, key.replace("-", "_")))
        for key in ("momentum", "weight-decay", "grad-clip",
                    "min-partition-size", "checkpoint-every", "seed", "train-samples"):
            _non_negative(key, getattr(self, key.replace("-", "_")))
        if self.momentum >= 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.clients_per_round > self.num_clients:
            raise ConfigError(
                f"clients-per-round ({self.clients_per_round}) exceeds num-clients "
                f"({self.num_clients}); lower clients-per-round or raise num-clients"
            )
        if self.min_replies > self.clients_per_round:
            raise ConfigError(
                f"min-replies ({self.min_replies}) exceeds clients-per-round "
                f"({self.clients_per_round}); lower min-replies"
            )
        if self.strategy == "fedsign" and self.sign_gamma > 0:
            raise ConfigError("sign-gamma adds the FedSign term to other strategies; "
                              "for strategy 'fedsign' set fedsign-gamma and leave sign-gamma at 0")
        if self.fail_partitions:
            from fedsign.faults import parse_fail_partitions  # here, not at the top: faults pulls in flwr (~0.4 s)

            try:
                parse_fail_partitions(self.fail_partitions, self.num_clients, self.num_rounds)
            except ValueError as err:
                raise ConfigError(f"fail-partitions: {err}") from None
        self._validate_round_timeout()
        tracking = tracking_problem(self.tracking, self.mlflow_uri)
        if tracking:
            raise ConfigError(tracking)
        for f in fields(PlatformConfig):  # inf passes the range checks above (round-timeout: its own message)
            if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name)):
                raise ConfigError(f"{self.key_of(f.name)} must be a finite number, got {getattr(self, f.name)}")
        if self.device == "cuda":
            import torch  # here, not at the top (~2 s): only device='cuda' needs it

            if not torch.cuda.is_available():
                raise ConfigError("device='cuda' but torch sees no CUDA GPU here; use device='cpu' or 'auto'")
        if self.out_dir and Path(self.out_dir).is_absolute():
            check_out_dir_creatable(Path(self.out_dir))
        self._validate_data_and_model()
        self._validate_partition()
        return self

    def _validate_round_timeout(self) -> None:
        from flwr.app.constants import DEFAULT_TTL  # a message expires after its TTL: no reply comes later

        if not self.round_timeout <= DEFAULT_TTL:
            raise ConfigError(f"round-timeout must be at most {DEFAULT_TTL} s (Flower's message lifetime), "
                              f"got {self.round_timeout}")

    def _validate_partition(self) -> None:
        """Draw the run's partition (cached for the run): too many clients for the data, or an
        alpha so small that no draw gives every client min-partition-size samples, is refused here."""
        from fedsign.data import DataSourceError, client_partitions  # here, not at the top: data pulls in torch (~2 s)

        try:
            client_partitions(self.dataset, self.data_dir, self.train_samples, self.validation_fraction,
                              self.num_clients, self.dirichlet_alpha, self.seed, self.partition_style,
                              self.min_partition_size)
        except DataSourceError as err:
            raise ConfigError(f"data-dir: {err}") from None
        except ValueError as err:
            raise ConfigError(f"partition: {err} (num-clients, min-partition-size, dirichlet-alpha)") from None

    def _validate_data_and_model(self) -> None:
        # here, not at the top: data and models pull in torch (~2 s); fedsign.config alone imports in 0.04 s
        from fedsign.data import DATASETS, DataSourceError, check_data_source
        from fedsign.models import MODEL_NAMES, check_model_input

        _one_of("dataset", self.dataset, tuple(DATASETS))
        _one_of("model", self.model, tuple(MODEL_NAMES))
        spec = DATASETS[self.dataset]
        try:
            check_model_input(self.model, spec.channels, spec.image_size)
        except ValueError as err:
            raise ConfigError(f"model '{self.model}' cannot take dataset '{self.dataset}': {err}") from None
        try:
            check_data_source(self.dataset, self.data_dir or None)
        except DataSourceError as err:
            raise ConfigError(f"data-dir: {err}") from None

    # ------------------------------------------------------------------ paths
    def resolved(self, base: str | os.PathLike | None = None) -> "RunConfig":
        """Return a copy whose data-dir and out-dir are absolute (relative to ``base``) and whose init
        names a scheme.

        An empty data-dir becomes the dataset's default location; an empty out-dir
        becomes ``runs/<run-name>-<timestamp>``; init 'auto' becomes the model's default."""
        root = Path(base) if base is not None else Path.cwd()
        data_dir = str((root / self.data_dir).resolve()) if self.data_dir else ""
        if not data_dir:  # the dataset's default location, made absolute for every process
            from fedsign.data import check_data_source  # here, not at the top: torch (~2 s)

            located = check_data_source(self.dataset, None)
            data_dir = str(located) if located is not None else ""
        out_dir = self.out_dir or str(Path("runs") / f"{self.run_name()}-{time.strftime('%Y%m%d-%H%M%S')}")
        out_path = Path(os.path.abspath(root / out_dir))
        check_out_dir_creatable(out_path)
        init = self.init
        if init == "auto":  # config.json names the scheme the model got
            from fedsign.models import DEFAULT_INIT  # here, not at the top: models pull in torch (~2 s)

            init = DEFAULT_INIT.get(self.model, self.init)
        return self.replace(data_dir=data_dir, out_dir=str(out_path.resolve()), init=init,
                            mlflow_uri=absolute_store(self.mlflow_uri, root))

    def run_name(self) -> str:
        """A readable default run name: strategy-dataset-alpha-seed."""
        return f"{self.strategy}-{self.dataset}-a{self.dirichlet_alpha:g}-s{self.seed}"


@dataclass(frozen=True)
class RunConfig(AlgorithmOptions, PlatformConfig):
    """Every run-config key: the platform's (:class:`PlatformConfig`) and each registered algorithm's
    hyperparameters (``fedsign.algorithms.AlgorithmOptions``), as typed fields."""


def refuse_crash_faults(config: RunConfig, engine: str) -> None:
    """ConfigError if ``config`` injects ``crash`` (fail-partitions), which ``engine`` cannot survive."""
    from fedsign.faults import parse_fail_partitions  # here, not at the top: faults pulls in flwr (~0.4 s)

    faults = parse_fail_partitions(config.fail_partitions, config.num_clients)
    if any(mode == "crash" for entries in faults.values() for mode, _ in entries):
        raise ConfigError(f"fail-partitions: 'crash' kills the ClientApp's process, which {engine} "
                          "shares; use it with `fedsign federation` (SuperNode subprocesses)")


def check_out_dir_creatable(path: Path) -> None:
    """ConfigError unless ``path`` is a folder or one that can be created here (names not too
    long, nothing on the way is a file, the nearest existing folder takes a new entry); the
    probe (a temporary folder, removed at once) leaves nothing behind."""
    name_max, path_max = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    too_long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if too_long or len(os.fsencode(str(path))) >= path_max:
        raise ConfigError(f"out-dir name too long ({'a folder name over ' + str(name_max) if too_long else 'the path'}"
                          f" bytes); choose a shorter out-dir")
    if path.is_file():
        raise ConfigError(f"out-dir {path} is a file; choose a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"out-dir {path} lies under the file {existing}; choose a path under a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedsign-probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"out-dir {path} cannot be created or written in {existing} ({err.strerror}); "
                          "choose a writable location") from None


def _coerce(key: str, value: Any, expected: type) -> Any:
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string (quote it: {key}='...'), got {value!r}")
    return value


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got '{value}'")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _non_negative(key: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")

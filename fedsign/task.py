"""What server and clients of one run share: the model, the data, their conversions.

Datasets and partitions are computed once per process and cached in memory, so an
in-process run (or a Ray worker serving many clients) decodes nothing twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from clients import ClientAlgorithm, make_client_algorithm
from fedsign.config import RunConfig
from fedsign.data import DATASETS, client_partitions, loaded_dataset, train_split
from fedsign.models import build_model
from fedsign.tensors import Tensors


def build_run_model(config: RunConfig, algorithm: ClientAlgorithm | None = None, seed: int | None = None) -> nn.Module:
    """The run's model with the algorithm's changes (MOON head, PAN encoding).

    Initialization (``config.init``) is seeded by ``seed`` (default ``config.seed``, so every engine
    starts from the same model θ⁰).
    """
    algorithm = algorithm or make_client_algorithm(config)
    spec = DATASETS[config.dataset]
    torch.manual_seed(config.seed if seed is None else seed)
    model = build_model(
        config.model,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        image_size=spec.image_size,
        init=config.init,
        **algorithm.model_options(config),
    )
    algorithm.prepare_model(model, config)
    return model


@lru_cache(maxsize=8)
def initial_model(config: RunConfig, seed: int) -> nn.Module:
    """``build_run_model(config, seed=seed)`` built once per process and shared: read it, never train it
    (MOON's stand-in for a first-time client's previous model is the same θ⁰ for every client)."""
    return build_run_model(config, seed=seed)


def run_train_split(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """The run's (client pool, validation) indices into the train split (``fedsign.data.train_split``)."""
    return train_split(config.dataset, config.data_dir, config.train_samples, config.validation_fraction)


@lru_cache(maxsize=4)
def _on_device(name: str, data_dir: str, split: str, device: str) -> tuple[Tensor, Tensor]:
    data = loaded_dataset(name, data_dir)
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    return torch.as_tensor(x).to(device), torch.as_tensor(y).long().to(device)


def client_data(config: RunConfig, partition_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """uint8 images and labels of one client's partition, on ``device`` (cached per process: callers
    read them, never write)."""
    if not 0 <= partition_id < config.num_clients:
        raise ValueError(f"partition-id {partition_id} outside [0, {config.num_clients}); "
                         f"run with num-supernodes equal to num-clients")
    return _client_data(*_partition_key(config), partition_id, str(device))


def _partition_key(config: RunConfig) -> tuple:
    """The config's values that decide the clients' partitions (``client_partitions``' arguments)."""
    return (config.dataset, config.data_dir, config.train_samples, config.validation_fraction, config.num_clients,
            config.dirichlet_alpha, config.seed, config.partition_style, config.min_partition_size)


def run_partitions(config: RunConfig) -> tuple[np.ndarray, ...]:
    """The run's client index arrays into the train split (deterministic in the config)."""
    return client_partitions(*_partition_key(config))


def mean_partition_size(config: RunConfig) -> float:
    """Mean number of training examples per client."""
    return _mean_partition_size(*_partition_key(config))


@lru_cache(maxsize=8)
def _mean_partition_size(*key) -> float:
    partitions = client_partitions(*key)
    return sum(len(p) for p in partitions) / len(partitions)


@lru_cache(maxsize=512)
def _client_data(*key_partition_device) -> tuple[Tensor, Tensor]:
    *key, partition_id, device = key_partition_device
    x, y = _on_device(key[0], key[1], "train", device)
    idx = torch.as_tensor(client_partitions(*key)[partition_id], device=device)
    return x[idx], y[idx]


def test_data(config: RunConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """The dataset's global test split on ``device``."""
    return _on_device(config.dataset, config.data_dir, "test", str(device))


def validation_data(config: RunConfig, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """The held-out validation images and labels on ``device`` (None without ``validation-fraction``)."""
    _, validation = run_train_split(config)
    if len(validation) == 0:
        return None
    x, y = _on_device(config.dataset, config.data_dir, "train", str(device))
    idx = torch.as_tensor(validation, device=device)
    return x[idx], y[idx]


def load_tensors(model: nn.Module, tensors: Tensors) -> None:
    """Load what ``fedsign.models.float_state`` returned (keys and shapes must match) into ``model``: the values
    ``load_state_dict`` would copy, in one ``_foreach_copy_``."""
    targets = {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}
    if list(tensors) != list(targets):
        missing = sorted(set(targets) - set(tensors))
        extra = sorted(set(tensors) - set(targets))
        raise ValueError(f"arrays do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, target in targets.items():
        if tensors[key].shape != target.shape:
            raise ValueError(f"array '{key}' has shape {tuple(tensors[key].shape)}, the model's "
                             f"{tuple(target.shape)}")
    with torch.no_grad():
        torch._foreach_copy_(list(targets.values()), list(tensors.values()))


class ClientModels:
    """The process's client models: built once per run config and device, then reused by every client
    (``acquire`` returns an idle one, with its non-floating buffers reset to their built values, as a
    freshly built model; the client loads the received global model into it, trains it and gives it
    back with ``release``). A further model is built only while all are in use (a client still running
    after its round timed out); the models of the two most recent configs are kept."""

    def __init__(self, keep_configs: int = 2) -> None:
        self.keep_configs = keep_configs
        self.built = 0  # models built so far (a reuse test reads it)
        self._idle: OrderedDict[tuple[RunConfig, str], list[tuple[nn.Module, dict[str, Tensor]]]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(config: RunConfig, device: torch.device) -> tuple[RunConfig, str]:
        return config, str(device)

    def acquire(self, config: RunConfig, algorithm: ClientAlgorithm, device: torch.device) -> nn.Module:
        key = self._key(config, device)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            while len(self._idle) > self.keep_configs:
                self._idle.popitem(last=False)
            entry = idle.pop() if idle else None
        if entry is None:
            model = build_run_model(config, algorithm).to(device)
            initial = {k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point()}
            self.built += 1
        else:
            model, initial = entry
            if initial:
                model.load_state_dict(initial, strict=False)
        model._client_models_entry = (key, initial)  # noqa: SLF001 - where release puts it back
        return model

    def release(self, model: nn.Module) -> None:
        """Give ``model`` back (its gradients dropped)."""
        model.zero_grad(set_to_none=True)
        key, initial = model.__dict__.pop("_client_models_entry")
        with self._lock:
            if key in self._idle:
                self._idle[key].append((model, initial))


CLIENT_MODELS = ClientModels()

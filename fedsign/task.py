"""What server and clients of one run share: the model, the data, their conversions.

Datasets and partitions are computed once per process and cached in memory, so an
in-process run (or a Ray worker serving many clients) decodes nothing twice.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import Tensor, nn

from clients import ClientAlgorithm, make_client_algorithm
from fedsign.config import RunConfig
from fedsign.data import DATASETS, ImageData, client_partitions, loaded_dataset, train_split
from fedsign.models import build_model


def build_run_model(config: RunConfig, algorithm: ClientAlgorithm | None = None, seed: int | None = None) -> nn.Module:
    """The run's model with the algorithm's changes (MOON head, PAN encoding).

    Initialization is seeded by ``seed`` (default ``config.seed``, so every engine starts from
    the same model θ⁰).
    """
    algorithm = algorithm or make_client_algorithm(config)
    spec = DATASETS[config.dataset]
    torch.manual_seed(config.seed if seed is None else seed)
    model = build_model(
        config.model,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        image_size=spec.image_size,
        **algorithm.model_options(config),
    )
    algorithm.prepare_model(model, config)
    return model


def dataset(name: str, data_dir: str) -> ImageData:
    """The decoded dataset, cached per process (``fedsign.data.loaded_dataset``)."""
    return loaded_dataset(name, data_dir)


def run_train_split(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """The run's (client pool, validation) indices into the train split (``fedsign.data.train_split``)."""
    return train_split(config.dataset, config.data_dir, config.train_samples, config.validation_fraction)


def run_partitions(config: RunConfig) -> tuple[np.ndarray, ...]:
    """The run's client index arrays into the train split (deterministic in the config)."""
    return client_partitions(config.dataset, config.data_dir, config.train_samples, config.validation_fraction,
                             config.num_clients, config.dirichlet_alpha, config.seed, config.partition_style,
                             config.min_partition_size)


@lru_cache(maxsize=4)
def _on_device(name: str, data_dir: str, split: str, device: str) -> tuple[Tensor, Tensor]:
    data = dataset(name, data_dir)
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    return torch.as_tensor(x).to(device), torch.as_tensor(y).long().to(device)


def client_data(config: RunConfig, partition_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """uint8 images and labels of one client's partition, on ``device``."""
    if not 0 <= partition_id < config.num_clients:
        raise ValueError(f"partition-id {partition_id} outside [0, {config.num_clients}); "
                         f"run with num-supernodes equal to num-clients")
    x, y = _on_device(config.dataset, config.data_dir, "train", str(device))
    idx = torch.as_tensor(run_partitions(config)[partition_id], device=device)
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


def model_arrays(model: nn.Module) -> ArrayRecord:
    """The model's floating-point state (parameters and BN statistics) as an ArrayRecord."""
    return ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items() if v.is_floating_point()})


def load_arrays(model: nn.Module, arrays: ArrayRecord) -> None:
    """Load an ArrayRecord made by ``model_arrays`` into ``model`` (keys must match)."""
    state = arrays.to_torch_state_dict()
    expected = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    if list(state) != expected:
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        raise ValueError(f"arrays do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    model.load_state_dict(state, strict=False)

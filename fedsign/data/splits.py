"""The data a run trains on: its train subset, validation hold-out and client partitions.

``train-samples`` (a class-stratified subset) and ``validation-fraction`` (a stratified hold-out of
that subset) are part of the data, not of the run: they are drawn with ``DATA_SPLIT_SEED``, the same
for every run seed. The Dirichlet partition of the rest is drawn with the run's seed. Everything is
cached per process, so an in-process run (or a Ray worker serving many clients) decodes nothing twice.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .loaders import ImageData, load_dataset
from .partition import dirichlet_partition

DATA_SPLIT_SEED = 0


@lru_cache(maxsize=4)
def loaded_dataset(name: str, data_dir: str) -> ImageData:
    """The decoded dataset (disk-cached by ``load_dataset``, memory-cached here)."""
    return load_dataset(name, data_dir or None)


def train_labels(name: str, data_dir: str) -> np.ndarray:
    labels = loaded_dataset(name, data_dir).train_y
    return labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)


@lru_cache(maxsize=8)
def train_split(name: str, data_dir: str, train_samples: int, validation_fraction: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(client pool, validation) indices into the train split: a class-stratified subset of
    ``train_samples`` (0: all), then a stratified ``validation_fraction`` of it held out."""
    from sklearn.model_selection import train_test_split  # sklearn costs ~2 s to import; only runs with a split

    labels = train_labels(name, data_dir)
    pool = np.arange(len(labels))
    if train_samples and train_samples > len(labels):
        raise ValueError(f"train-samples={train_samples} exceeds the {len(labels)} training images of "
                         f"'{name}'; lower it or set 0 for all")
    if train_samples and train_samples < len(labels):
        pool, _ = train_test_split(pool, train_size=train_samples, stratify=labels, random_state=DATA_SPLIT_SEED)
    validation = np.zeros(0, np.int64)
    if validation_fraction > 0:
        pool, validation = train_test_split(pool, test_size=validation_fraction, stratify=labels[pool],
                                            random_state=DATA_SPLIT_SEED)
    return np.sort(pool), np.sort(validation)


@lru_cache(maxsize=8)
def client_partitions(name: str, data_dir: str, train_samples: int, validation_fraction: float, num_clients: int,
                      alpha: float, seed: int, style: str, min_size: int) -> tuple[np.ndarray, ...]:
    """Every client's indices into the train split: a Dirichlet(``alpha``) partition of the client pool."""
    pool, _ = train_split(name, data_dir, train_samples, validation_fraction)
    labels = train_labels(name, data_dir)[pool]
    return tuple(pool[p] for p in dirichlet_partition(labels, num_clients, alpha, seed, style=style,
                                                      min_size=min_size))

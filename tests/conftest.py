"""Shared test set-up: ``@pytest.mark.requires_dataset(name, ...)`` skips a test, with the reason, when a real
dataset is not at its default place (Fashion-MNIST from apt, MNIST and CIFAR-10 under ../shared/data), so that
``make test`` passes on a fresh machine. It asks fedsign.data's own locator, as a run with that dataset would."""

import gzip
import struct

import numpy as np
import pytest
import torch

from fedsign.data import DataSourceError, check_data_source, loaders


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_dataset(name, ...): skip unless the real dataset is installed at "
                                       "its default data-dir")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("requires_dataset"):
        for name in marker.args:
            try:
                check_data_source(name)
            except DataSourceError as err:
                pytest.skip(f"needs the real {name} dataset: {err}")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    busy 2-core machine two threads spin against each other and run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_idx(path, arr):
    """An idx file (gzip), the MNIST / Fashion-MNIST format."""
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _write_fmnist(folder, n_train=30, n_test=12, seed=0):
    """Small random Fashion-MNIST idx files in ``folder``; returns their arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, stem in loaders._IDX_STEMS.items():
        _write_idx(folder / f"{stem}.gz", arrays[key])
    return arrays


@pytest.fixture
def write_idx():
    return _write_idx


@pytest.fixture
def write_fmnist():
    """``write_fmnist(folder, n_train=30, n_test=12, seed=0)``: Fashion-MNIST files a test writes, so that no
    test needs the apt package."""
    return _write_fmnist

"""Shared test set-up: ``@pytest.mark.requires_dataset(name, ...)`` skips a test, with the reason, when a real
dataset is not at its default place (Fashion-MNIST from apt, MNIST and CIFAR-10 under ../shared/data), so that
``make test`` passes on a fresh machine. It asks fedsign.data's own locator, as a run with that dataset would."""

import pytest
import torch

from fedsign.data import DataSourceError, check_data_source


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

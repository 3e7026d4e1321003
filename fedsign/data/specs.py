"""Dataset descriptions: the DATASETS registry and the DataSourceError raised for missing/corrupt data."""
from __future__ import annotations

from dataclasses import dataclass


class DataSourceError(FileNotFoundError, ValueError):
    """A dataset's files are missing or unreadable; the message names the dataset, the path and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one dataset.

    mean/std are per-channel in the 0..1 pixel scale. ``augment``: random 32x32 crop (zero padding 4) at
    training time; ``hflip``: also random horizontal flips (off for SVHN, whose digits are not mirror symmetric).
    ``default_data_dir``: used when no data dir is given; relative: from the project root, else the cwd.
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_data_dir: str | None
    source_hint: str
    augment: bool
    hflip: bool = False


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    # digits: mean/std of the 1,437 training images after scaling 0..16 -> 0..255 (no published values).
    DatasetSpec("digits", 10, 1, 8, (0.3046,), (0.3760,), None,
                "built into scikit-learn (sklearn.datasets.load_digits); no data-dir needed", augment=False),
    DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), "../shared/data/mnist",
                "pass data-dir pointing at the folder holding the four MNIST idx .gz files "
                "(e.g. ../shared/data/mnist) or a torchvision root containing MNIST/raw/", augment=False),
    DatasetSpec("fmnist", 10, 1, 28, (0.2860,), (0.3530,), "/usr/share/datasets/fashion-mnist",
                "apt-get install dataset-fashion-mnist (idx .gz files in /usr/share/datasets/fashion-mnist), "
                "or pass data-dir pointing at the folder holding them or a root containing FashionMNIST/raw/",
                augment=False),
    DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                "../shared/data/cifar10-jpeg.tar.gz",
                "pass data-dir pointing at cifar-10-batches-py (or its parent), an ImageFolder tree with "
                "train/<class>/ and test/<class>/, or ../shared/data/cifar10-jpeg.tar.gz",
                augment=True, hflip=True),
    DatasetSpec("cinic10", 10, 3, 32, (0.4789, 0.4723, 0.4305), (0.2421, 0.2383, 0.2587), None,
                "download CINIC-10 (https://datashare.ed.ac.uk/handle/10283/3192) and pass data-dir pointing "
                "at the folder holding train/, valid/ and test/", augment=True, hflip=True),
    DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), None,
                "pass data-dir pointing at cifar-100-python (or its parent), unpacked from "
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", augment=True, hflip=True),
    DatasetSpec("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), None,
                "pass data-dir pointing at the folder holding train_32x32.mat and test_32x32.mat "
                "(http://ufldl.stanford.edu/housenumbers/)", augment=True, hflip=False),
)}


def get_spec(name: str) -> DatasetSpec:
    """The spec for ``name``; ValueError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None

"""Datasets (specs, loaders with an on-disk cache, batch transforms) and client partitioning."""
from .cache import default_cache_dir
from .loaders import ImageData, check_data_source, load_dataset
from .partition import dirichlet_partition, partition_counts, partition_report
from .splits import DATA_SPLIT_SEED, client_partitions, loaded_dataset, train_split
from .specs import CIFAR10_CLASSES, DATASETS, DataSourceError, DatasetSpec, get_spec
from .transforms import make_batch_transform, random_crop_flip

__all__ = ["CIFAR10_CLASSES", "DATASETS", "DataSourceError", "DatasetSpec", "ImageData", "check_data_source",
           "DATA_SPLIT_SEED", "client_partitions", "default_cache_dir", "loaded_dataset", "train_split", "dirichlet_partition", "get_spec", "load_dataset", "make_batch_transform",
           "partition_counts", "random_crop_flip", "partition_report"]

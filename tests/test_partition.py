"""Dirichlet client partitions and the partition report."""
import csv
import io

import numpy as np
import pytest

from fedsign.data import dirichlet_partition, partition_counts, partition_report

STYLES = ["per-class", "per-client"]
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 300))  # 3,000 samples, balanced


def _mean_tv(labels, parts, num_classes=10):
    """Mean total-variation distance between each client's label distribution and the global one."""
    counts = partition_counts(labels, parts, num_classes)
    local = counts / counts.sum(1, keepdims=True)
    glob = np.bincount(labels, minlength=num_classes) / len(labels)
    return 0.5 * np.abs(local - glob).sum(1).mean()


@pytest.mark.parametrize("style", STYLES)
def test_disjoint_complete_sorted(style):
    parts = dirichlet_partition(LABELS, 12, 0.3, seed=1, style=style)
    assert len(parts) == 12
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


@pytest.mark.parametrize("style", STYLES)
def test_seeded(style):
    a = dirichlet_partition(LABELS, 8, 0.5, seed=3, style=style)
    b = dirichlet_partition(LABELS, 8, 0.5, seed=3, style=style)
    c = dirichlet_partition(LABELS, 8, 0.5, seed=4, style=style)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("style", STYLES)
def test_heterogeneity_grows_as_alpha_shrinks(style):
    tv = {alpha: np.mean([_mean_tv(LABELS, dirichlet_partition(LABELS, 10, alpha, seed=s, style=style))
                          for s in range(5)]) for alpha in (0.05, 0.5, 100.0)}
    assert tv[0.05] > tv[0.5] + 0.15 > tv[100.0] + 0.3
    assert tv[100.0] < 0.1 and tv[0.05] > 0.6


@pytest.mark.parametrize("style", STYLES)
def test_min_size_respected(style):
    parts = dirichlet_partition(LABELS, 20, 0.1, seed=0, style=style, min_size=60)
    assert min(len(p) for p in parts) >= 60


def test_per_class_caps_full_clients_like_niid_bench():
    # A client stops receiving new classes once it holds >= N/K samples, so it ends below N/K + one class.
    for seed in range(5):
        sizes = [len(p) for p in dirichlet_partition(LABELS, 10, 0.1, seed=seed, style="per-class")]
        assert max(sizes) < len(LABELS) / 10 + 300


def test_per_client_sizes_more_balanced_than_per_class():
    def mean_cv(style):
        sizes = [np.array([len(p) for p in dirichlet_partition(LABELS, 10, 0.5, seed=s, style=style)])
                 for s in range(10)]
        return np.mean([s.std() / s.mean() for s in sizes])
    assert mean_cv("per-client") < 0.75 * mean_cv("per-class")


def test_single_client_gets_everything():
    parts = dirichlet_partition(LABELS, 1, 0.1, seed=0)
    np.testing.assert_array_equal(parts[0], np.arange(len(LABELS)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0.0), "alpha must be a positive"),
    (dict(alpha=float("nan")), "alpha must be a positive"),
    (dict(num_clients=0), "num_clients must be a positive integer"),
    (dict(style="iid"), "unknown partition style"),
    (dict(num_clients=10, min_size=301), "exceeds the 3000 samples"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(labels=LABELS, num_clients=5, alpha=0.5, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        dirichlet_partition(**args)


def test_bad_labels_and_impossible_min_size_raise():
    with pytest.raises(ValueError, match="1-D array of non-negative integers"):
        dirichlet_partition(LABELS.reshape(2, -1), 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="1-D array of non-negative integers"):
        dirichlet_partition(LABELS.astype(float), 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="larger alpha or a smaller min_size"):
        dirichlet_partition(np.repeat(np.arange(10), 10), 10, 0.01, seed=0, min_size=10, max_tries=200)


def test_counts_and_report():
    parts = dirichlet_partition(LABELS, 6, 0.5, seed=2)
    counts = partition_counts(LABELS, parts, 10)
    assert counts.shape == (6, 10)
    np.testing.assert_array_equal(counts.sum(1), [len(p) for p in parts])
    np.testing.assert_array_equal(counts.sum(0), np.bincount(LABELS))
    report = partition_report(LABELS, parts, 10)
    rows = list(csv.reader(io.StringIO(report["partition_counts.csv"].decode())))
    assert rows[0] == ["client"] + [f"class_{c}" for c in range(10)] + ["total"]
    assert [[int(v) for v in r] for r in rows[1:]] == [[i, *counts[i], counts[i].sum()] for i in range(6)]
    assert report["partition.png"][:8] == b"\x89PNG\r\n\x1a\n" and len(report["partition.png"]) > 5000

"""Label-skewed client partitions drawn from Dirichlet distributions, and a partition report.

Styles (both resample everything until each client holds >= min_size samples):
  "per-class"  NIID-Bench (Li et al. 2022): per class, proportions over clients ~ Dir(alpha); clients that
               already hold >= N/num_clients samples get proportion 0; the class's shuffled indices are cut
               at the cumulative proportions. Client sizes vary a lot for small alpha.
  "per-client" FedRepo style: each client's class mix ~ Dir(alpha) (matrix clients x classes); each class
               column is normalized across clients and that class's indices are cut by it. Client sizes
               stay roughly balanced.
"""
from __future__ import annotations

import csv
import io

import numpy as np

STYLES = ("per-class", "per-client")


def _check_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("labels must be a non-empty 1-D array of non-negative integers")
    return y.astype(np.int64)


def _cut(idx: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    return np.split(idx, (np.cumsum(proportions) * len(idx)).astype(np.int64)[:-1])


def _normalized(p: np.ndarray) -> np.ndarray:
    s = p.sum()
    return p / s if np.isfinite(s) and s > 0 else np.full(len(p), 1.0 / len(p))


def _draw(by_class: list[np.ndarray], n: int, k: int, alpha: float, style: str,
          rng: np.random.Generator) -> list[list[np.ndarray]]:
    chunks: list[list[np.ndarray]] = [[] for _ in range(k)]
    sizes = np.zeros(k, np.int64)
    mix = rng.dirichlet(np.full(len(by_class), alpha), size=k) if style == "per-client" else None
    for c, members in enumerate(by_class):
        idx = rng.permutation(members)
        if style == "per-class":
            p = rng.dirichlet(np.full(k, alpha))
            capped = p * (sizes < n / k)
            p = _normalized(capped if capped.sum() > 0 else p)
        else:
            p = _normalized(mix[:, c])
        for j, part in enumerate(_cut(idx, p)):
            chunks[j].append(part)
            sizes[j] += len(part)
    return chunks


def dirichlet_partition(labels, num_clients: int, alpha: float, seed: int, style: str = "per-class",
                        min_size: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
    """Split sample indices among ``num_clients`` with Dirichlet(``alpha``) label skew (see module doc).

    Returns disjoint, covering, sorted int64 index arrays, one per client; deterministic in ``seed``.
    Raises ValueError for bad arguments or when ``max_tries`` draws all leave some client below min_size."""
    y = _check_labels(labels)
    if style not in STYLES:
        raise ValueError(f"unknown partition style {style!r}; choose one of {STYLES}")
    if int(num_clients) != num_clients or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"Dirichlet alpha must be a positive number, got {alpha}")
    if min_size < 0 or min_size * num_clients > len(y):
        raise ValueError(f"min_size={min_size} x {num_clients} clients exceeds the {len(y)} samples; "
                         "lower min_size or num_clients")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
    for _ in range(max_tries):
        chunks = _draw(by_class, len(y), int(num_clients), float(alpha), style, rng)
        parts = [np.sort(np.concatenate(ch)).astype(np.int64) for ch in chunks]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(f"no {style} Dirichlet(alpha={alpha}) partition over {num_clients} clients gave every "
                     f"client >= {min_size} samples in {max_tries} tries; use a larger alpha or a smaller "
                     "min_size / num_clients")


def partition_counts(labels, partitions: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Sample counts, int64 [clients, classes]."""
    y = _check_labels(labels)
    return np.stack([np.bincount(y[p], minlength=num_classes)[:num_classes] for p in partitions])


def partition_report(labels, partitions: list[np.ndarray], num_classes: int) -> dict[str, bytes]:
    """The contents of ``partition_counts.csv`` (client, class_0.., total) and ``partition.png`` (stacked
    horizontal bars of each client's class counts), by file name; the caller writes them."""
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure  # no pyplot: nothing touches the global backend
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    counts = partition_counts(labels, partitions, num_classes)
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(["client"] + [f"class_{c}" for c in range(num_classes)] + ["total"])
    for i, row in enumerate(counts):
        w.writerow([i, *row.tolist(), int(row.sum())])

    k = len(partitions)
    cmap = colormaps["tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "turbo"]
    colors = [cmap(c / max(num_classes - 1, 1)) if num_classes > 20 else cmap(c) for c in range(num_classes)]
    fig = Figure(figsize=(8, min(2 + 0.22 * k, 40)))
    ax = fig.add_subplot()
    left = np.zeros(k)
    rows = np.arange(k)
    for c in range(num_classes):  # one collection per class (a patch per bar takes seconds for 100 clients)
        right = left + counts[:, c]
        boxes = [[(x0, y - 0.425), (x1, y - 0.425), (x1, y + 0.425), (x0, y + 0.425)]
                 for x0, x1, y in zip(left, right, rows) if x1 > x0]
        ax.add_collection(PolyCollection(boxes, facecolors=[colors[c]], edgecolors="none"))
        left = right
    ax.set_ylim(k - 0.5, -0.5)
    ax.set_xlim(0, max(int(left.max()), 1) * 1.02)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("samples")
    ax.set_ylabel("client")
    ax.set_title(f"class mix per client ({k} clients, {num_classes} classes)")
    if num_classes <= 20:
        ax.legend(handles=[Patch(color=colors[c], label=f"class {c}") for c in range(num_classes)],
                  loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
    return {"partition_counts.csv": table.getvalue().encode(), "partition.png": png.getvalue()}

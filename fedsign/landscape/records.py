"""Writing analysis records: ``<name>.json`` (the record) and ``<name>.npz`` (its arrays)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays and tuples become Python numbers and lists, NaN/Inf become None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(record: Mapping[str, Any]) -> str:
    """Strict JSON text of ``record`` (no bare NaN / Infinity: they are written as null)."""
    return json.dumps(_plain(record), indent=1, allow_nan=False)


def write_record(out_dir: str | Path, name: str, record: Mapping[str, Any],
                 arrays: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write ``out_dir/name.json`` and, when ``arrays`` is given, ``out_dir/name.npz``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json"]
    paths[0].write_text(to_json(record) + "\n")
    if arrays:
        paths.append(out / f"{name}.npz")
        np.savez_compressed(paths[1], **{k: np.asarray(v) for k, v in arrays.items()})
    return paths


def curve_arrays(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``error`` and ``loss`` arrays ``[direction, scale, lambda]`` of a valley record, with the axes."""
    names = list(record["curves"])
    scales = [f"{s:g}" for s in record["scales"]]
    out = {"lambdas": np.asarray(record["lambdas"]), "scales": np.asarray(record["scales"]),
           "directions": np.asarray(names)}
    for metric in ("error", "loss"):
        out[metric] = np.array([[record["curves"][n]["scales"][s][metric] for s in scales] for n in names])
    return out

"""Checkpoints: what a run needs to continue exactly where it stopped.

Every ``checkpoint-every`` rounds the server replaces ``<out-dir>/checkpoint.safetensors``
atomically (temp file + rename). The file is plain safetensors, read without pickle: its
tensors are the global model (``model/<name>``), array-valued strategy state such as
FedDyn's h (``strategy/<key>/<name>``) and, for the in-process engine, every node's
``context.state`` (``client/<partition>/<record>/<name>``); its header metadata holds one
JSON document with the rest: the tensor order, round, run config, metrics rows, the state key under which
SuperNodes keep client state on disk, and the strategy's other state (the sampling RNG
state, a tuple of ints). ``resume=true`` with the same out-dir and config continues from it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from safetensors import SafetensorError
from safetensors.numpy import load, save

from fedsign.config import RunConfig
from fedsign.results import OutDirError, atomic_write, strict_json

CHECKPOINT_NAME = "checkpoint.safetensors"
LEGACY_NAME = "checkpoint.pt"  # the pickle format of earlier versions: never loaded
FORMAT = 2
METADATA_KEY = "fedsign-checkpoint"
# Keys a resumed run may change (the out-dir may move): they do not alter what the remaining rounds compute.
RESUMABLE_CHANGES = ("resume", "out-dir", "device", "round-timeout", "checkpoint-every", "tracking", "mlflow-uri")


# A metrics column: a plain name (no comma, quote, newline, or a leading =+-@ a spreadsheet runs as a formula).
_COLUMN = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")


class CheckpointError(OutDirError):
    """The out-dir's checkpoint cannot be used to resume this run."""


@dataclass
class Checkpoint:
    """A run's state after ``round``."""

    round: int
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]
    strategy: dict[str, Any]
    rows: list[dict[str, Any]]
    state_key: str
    client_states: dict[int, RecordDict] | None = field(default=None)

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The global model's arrays as tensors on ``device``."""
        return {k: torch.from_numpy(np.array(v)).to(device) for k, v in self.arrays.items()}


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_NAME


def encode(checkpoint: Checkpoint) -> bytes:
    """The checkpoint as safetensors bytes (tensors + one JSON metadata document)."""
    tensors = {f"model/{k}": v for k, v in checkpoint.arrays.items()}
    array_state = [k for k, v in checkpoint.strategy.items() if isinstance(v, dict)]
    for key in array_state:
        tensors.update({f"strategy/{_plain(key)}/{k}": v for k, v in checkpoint.strategy[key].items()})
    records = None
    if checkpoint.client_states is not None:
        records = {}
        for pid, state in checkpoint.client_states.items():
            records[str(pid)] = [_plain(r) for r in state.array_records]
            for name, record in state.array_records.items():
                tensors.update({f"client/{pid}/{name}/{k}": a.numpy() for k, a in record.items()})
    meta = {"format": FORMAT, "tensors": list(tensors), "round": checkpoint.round, "config": checkpoint.config, "rows": checkpoint.rows,
            "state_key": checkpoint.state_key, "strategy_arrays": array_state, "client_records": records,
            "strategy": {k: v for k, v in checkpoint.strategy.items() if k not in array_state}}
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    return save(contiguous, metadata={METADATA_KEY: strict_json(meta)})


def _plain(key: str) -> str:
    if "/" in key:
        raise ValueError(f"checkpoint key {key!r} must not contain '/'")
    return key


def save_checkpoint(out_dir: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Replace the out-dir's checkpoint atomically."""
    path = checkpoint_path(out_dir)
    atomic_write(path, encode(checkpoint))
    return path


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples strategy state holds (``random.Random.getstate()``)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def decode(data: bytes, where: str) -> Checkpoint:
    """A checkpoint from ``encode``'s bytes; CheckpointError naming ``where`` otherwise."""
    fix = "delete it to rerun from round 1, or pick a new out-dir"
    try:
        tensors = load(data)
        meta = json.loads(_metadata(data).get(METADATA_KEY, "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {where} is unreadable ({type(err).__name__}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {where} is not a FedSign checkpoint (format {FORMAT}); {fix}")
    try:
        if sorted(meta["tensors"]) != sorted(tensors):
            raise ValueError("tensor list")
        tensors = {k: tensors[k] for k in meta["tensors"]}  # safetensors sorts names; models need their order
        strategy = {k: _tuples(v) for k, v in meta["strategy"].items()}
        for key in meta["strategy_arrays"]:
            strategy[key] = _prefixed(tensors, f"strategy/{key}/")
        client_states = None
        if meta["client_records"] is not None:
            client_states = {int(pid): RecordDict({name: ArrayRecord({k: Array(v) for k, v in _prefixed(
                tensors, f"client/{pid}/{name}/").items()}) for name in names})
                for pid, names in meta["client_records"].items()}
        checkpoint = Checkpoint(round=meta["round"], config=meta["config"], arrays=_prefixed(tensors, "model/"),
                                strategy=strategy, rows=meta["rows"], state_key=meta["state_key"],
                                client_states=client_states)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise CheckpointError(f"checkpoint {where} lacks fields of format {FORMAT}; {fix}") from None
    if not (isinstance(checkpoint.round, int) and checkpoint.round >= 1 and isinstance(checkpoint.rows, list)
            and len(checkpoint.rows) == checkpoint.round and isinstance(checkpoint.config, dict)):
        raise CheckpointError(f"checkpoint {where} is inconsistent (round {checkpoint.round!r}, "
                              f"{len(checkpoint.rows)} metric rows); {fix}")
    num_rounds = checkpoint.config.get("num-rounds")
    if not (isinstance(num_rounds, int) and checkpoint.round <= num_rounds):
        raise CheckpointError(f"checkpoint {where} is at round {checkpoint.round} of a {num_rounds!r}-round config; "
                              f"{fix}")
    problem = _rows_problem(checkpoint.rows)
    if problem:
        raise CheckpointError(f"checkpoint {where} holds metric rows metrics.csv cannot take ({problem}); {fix}")
    return checkpoint


def _rows_problem(rows: list[Any]) -> str | None:
    """Why ``rows`` are not round 1, 2, ... rows of plain column names and numbers (None: they are)."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or row.get("round") != number:
            return f"row {number} is not round {number}"
        for column, value in row.items():
            if not _COLUMN.fullmatch(column):
                return f"round {number}: column {column[:40]!r} is not a plain name"
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"round {number}: {column} is {str(value)[:40]!r}, not a number"
    return None


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (``load`` checked the header)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


def _prefixed(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(out_dir: str | os.PathLike) -> Checkpoint | None:
    """The out-dir's checkpoint, None if it has none; CheckpointError if it is unreadable.

    A ``checkpoint.pt`` (the earlier pickle format) is refused unread: unpickling runs code."""
    path = checkpoint_path(out_dir)
    if not path.exists():
        legacy = Path(out_dir) / LEGACY_NAME
        if legacy.exists():
            raise CheckpointError(f"{legacy} is a pickle checkpoint, which FedSign does not load (unpickling can run "
                                  "code); delete it to rerun from round 1, or pick a new out-dir")
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} is unreadable ({err.strerror}); fix its permissions") from None
    return decode(data, str(path))


def config_changes(saved: dict[str, Any], config: RunConfig) -> list[str]:
    """``key: saved -> now`` for every key that differs, except ``RESUMABLE_CHANGES``."""
    now = config.to_dict()
    keys = [k for k in dict.fromkeys([*saved, *now]) if k not in RESUMABLE_CHANGES]
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def check_arrays(checkpoint: Checkpoint, expected: dict[str, tuple[tuple[int, ...], np.dtype]], where: str,
                 num_clients: int) -> None:
    """CheckpointError unless the checkpoint's model arrays have exactly ``expected``'s names, shapes,
    dtypes; every client state (partitions below ``num_clients``) holds only arrays named and shaped
    as model arrays; and every floating-point array (model, strategy, client state) is finite."""
    fix = "delete it to rerun from round 1, or pick a new out-dir"
    got = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in checkpoint.arrays.items()}
    for name in dict.fromkeys([*expected, *got]):
        if got.get(name) != expected.get(name):
            have = "missing" if name not in got else f"{list(got[name][0])} {got[name][1]}"
            want = "absent" if name not in expected else f"{list(expected[name][0])} {expected[name][1]}"
            raise CheckpointError(f"checkpoint {where} does not fit this run's model: '{name}' is {have}, "
                                  f"expected {want}; {fix}")
    arrays = {f"model/{k}": v for k, v in checkpoint.arrays.items()}
    for key, value in checkpoint.strategy.items():
        if isinstance(value, dict):
            arrays.update({f"strategy/{key}/{k}": v for k, v in value.items()})
    for partition, state in (checkpoint.client_states or {}).items():
        if not 0 <= partition < num_clients:
            raise CheckpointError(f"checkpoint {where} holds client state of partition {partition}, outside "
                                  f"[0, {num_clients}); {fix}")
        for record_name, record in state.array_records.items():
            for name, array in record.items():
                shape = tuple(array.shape)
                if name not in expected or shape != expected[name][0]:
                    want = "no such model array" if name not in expected else f"expected {list(expected[name][0])}"
                    raise CheckpointError(f"checkpoint {where}: client state {record_name} of partition {partition} "
                                          f"holds '{name}' {list(shape)} ({want}); {fix}")
                arrays[f"client/{partition}/{record_name}/{name}"] = array.numpy()
    for name, array in arrays.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise CheckpointError(f"checkpoint {where}: array {name} has NaN or Inf values; {fix}")


def resume_point(out_dir: str | os.PathLike, config: RunConfig) -> Checkpoint | None:
    """The checkpoint ``config`` resumes from (None: start at round 1).

    Raises CheckpointError, before anything is written, when the checkpoint is unreadable
    or was written by a different config; without a checkpoint, an out-dir whose
    config.json differs from ``config`` is refused too."""
    if not config.resume:
        return None
    checkpoint = load_checkpoint(out_dir)
    if checkpoint is not None:
        saved, source = checkpoint.config, checkpoint_path(out_dir)
    else:
        config_json = Path(out_dir) / "config.json"
        if not config_json.exists():
            return None
        try:
            saved, source = json.loads(config_json.read_text()), config_json
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(f"{config_json} is not valid JSON; restore it or pick a new out-dir") from None
        if not isinstance(saved, dict):
            raise CheckpointError(f"{config_json} is not a run config; restore it or pick a new out-dir")
    changes = config_changes(saved, config)
    if changes:
        raise CheckpointError(f"resume: {source} was written with a different config ({'; '.join(changes)}); "
                              "resume with the same config or pick a new out-dir")
    return checkpoint

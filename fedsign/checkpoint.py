"""Checkpoints: what a run needs to continue exactly where it stopped.

Every ``checkpoint-every`` rounds the server replaces ``<out-dir>/checkpoint.pt``
atomically (temp file + rename) with the round number, the run config, the global
model's arrays, the strategy's ``state_dict()`` (sampling RNG, FedDyn's h, ...), the
metrics rows so far, the state key under which SuperNodes keep client state on disk
and, for the in-process engine, every node's ``context.state``. ``resume=true`` with the
same out-dir and config continues from it.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from fedsign.config import RunConfig
from fedsign.results import OutDirError, atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1
# Keys a resumed run may change (the out-dir may move): they do not alter what the remaining rounds compute.
RESUMABLE_CHANGES = ("resume", "out-dir", "device", "round-timeout", "checkpoint-every")


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

    def array_record(self) -> ArrayRecord:
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in self.arrays.items()})


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_NAME


def save_checkpoint(out_dir: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Replace the out-dir's checkpoint atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **{f.name: getattr(checkpoint, f.name) for f in fields(checkpoint)}}, buffer)
    path = checkpoint_path(out_dir)
    atomic_write(path, buffer.getvalue())
    return path


def load_checkpoint(out_dir: str | os.PathLike) -> Checkpoint | None:
    """The out-dir's checkpoint, None if it has none; CheckpointError if it is unreadable."""
    path = checkpoint_path(out_dir)
    if not path.exists():
        return None
    fix = "delete it to rerun from round 1, or pick a new out-dir"
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, bad pickle, not a torch file: all unreadable
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a FedSign checkpoint (format {FORMAT}); {fix}")
    data.pop("format")
    try:
        checkpoint = Checkpoint(**data)
    except TypeError:
        raise CheckpointError(f"checkpoint {path} lacks fields of format {FORMAT}; {fix}") from None
    if not (isinstance(checkpoint.round, int) and checkpoint.round >= 1 and len(checkpoint.rows) == checkpoint.round):
        raise CheckpointError(f"checkpoint {path} is inconsistent (round {checkpoint.round!r}, "
                              f"{len(checkpoint.rows)} metric rows); {fix}")
    return checkpoint


def config_changes(saved: dict[str, Any], config: RunConfig) -> list[str]:
    """``key: saved -> now`` for every key that differs, except ``RESUMABLE_CHANGES``."""
    now = config.to_dict()
    keys = [k for k in dict.fromkeys([*saved, *now]) if k not in RESUMABLE_CHANGES]
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


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
    changes = config_changes(saved, config)
    if changes:
        raise CheckpointError(f"resume: {source} was written with a different config ({'; '.join(changes)}); "
                              "resume with the same config or pick a new out-dir")
    return checkpoint

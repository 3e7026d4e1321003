"""Failure injection for reliability tests: run-config ``fail-partitions``.

``fail-partitions = "1:raise 3:nan@2 4:hang@3"`` makes partition 1 fail in every round,
partition 3 in round 2 only and partition 4 in round 3 only. Modes:

- ``raise``: the ClientApp raises before training (the node replies with an error);
- ``hang``: the ClientApp sleeps ``round-timeout`` + 1 s, then raises (no reply in time);
- ``crash``: the ClientApp's process exits at once (``os._exit``); this needs a process of
  its own, a SuperNode's ClientApp subprocess (``fedsign federation``): the in-process
  engine and Ray's actor pool refuse it;
- ``nan``: trains, then replies with NaN in every array;
- ``shape``: trains, then replies with its first array flattened and one element short.

The server must drop every such reply, count it in ``num_failures`` and go on with the
others while at least ``min-replies`` arrive.
"""

from __future__ import annotations

import os
import re
import time

import torch
from torch import Tensor

MODES = ("raise", "hang", "crash", "nan", "shape")
CRASH_EXIT_CODE = 70
_ITEM = re.compile(r"^([0-9]+):([a-z]+)(?:@([0-9]+))?$")  # ASCII digits only (\d takes full-width ones)


class InjectedFailure(RuntimeError):
    """The failure a ``fail-partitions`` entry asked for."""


def parse_fail_partitions(text: str, num_clients: int,
                          num_rounds: int | None = None) -> dict[int, list[tuple[str, int | None]]]:
    """``{partition: [(mode, round or None for every round), ...]}``; ValueError on bad input, on an
    entry that another one for its partition shadows, and (given ``num_rounds``) on a round the run
    never reaches: each entry fires."""
    faults: dict[int, list[tuple[str, int | None]]] = {}
    for item in text.replace(",", " ").split():
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(f"'{item}' is not PARTITION:MODE or PARTITION:MODE@ROUND (e.g. \"1:raise 3:nan@2\")")
        partition, mode, server_round = int(match[1]), match[2], match[3]
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' in '{item}' must be one of {', '.join(MODES)}")
        if partition >= num_clients:
            raise ValueError(f"partition {partition} in '{item}' outside [0, {num_clients})")
        only_round = None if server_round is None else int(server_round)
        if only_round is not None and only_round < 1:
            raise ValueError(f"round in '{item}' must be >= 1")
        if only_round is not None and num_rounds is not None and only_round > num_rounds:
            raise ValueError(f"'{item}' never fires: the run has num-rounds={num_rounds}")
        earlier = faults.setdefault(partition, [])
        if any(r is None or only_round is None or r == only_round for _, r in earlier):
            raise ValueError(f"'{item}' overlaps another entry for partition {partition}: give each partition "
                             "one entry per round, or one for every round")
        earlier.append((mode, only_round))
    return faults


def fault_for(text: str, num_clients: int, partition_id: int, server_round: int) -> str | None:
    """The mode injected into this partition's reply in this round, if any."""
    for mode, only_round in parse_fail_partitions(text, num_clients).get(partition_id, []):
        if only_round is None or only_round == server_round:
            return mode
    return None


def fail_before_training(mode: str, round_timeout: float) -> None:
    """Act out ``raise``, ``hang`` and ``crash``; the other modes act on the reply."""
    if mode == "raise":
        raise InjectedFailure("injected failure (fail-partitions: raise)")
    if mode == "hang":
        time.sleep(round_timeout + 1.0)
        raise InjectedFailure("injected failure (fail-partitions: hang) gave up after round-timeout")
    if mode == "crash":
        os._exit(CRASH_EXIT_CODE)


def corrupt_reply(mode: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The reply tensors for ``nan`` and ``shape``; unchanged for the other modes."""
    if mode == "nan":
        return {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    if mode == "shape":
        items = list(tensors.items())
        first, tensor = items[0]
        return {first: tensor.reshape(-1)[:-1].clone(), **dict(items[1:])}
    return tensors

"""A model's tensors in Flower messages and client state.

Where a message crosses a process boundary (a Ray simulation, a deployment) it carries an
``ArrayRecord``: Flower's format, CPU bytes. Where sender and receiver share a process (the
in-process and vectorized engines) the content is a :class:`DeviceRecordDict`, which holds
the tensors themselves by reference, on their device: a round there never leaves the device.
Server and clients call ``pack`` / ``unpack`` and never see the difference; both readings
give the same values.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ArrayRecord, RecordDict
from torch import Tensor

Tensors = dict[str, Tensor]


class DeviceRecordDict(RecordDict):
    """A RecordDict that also holds named tensor dicts by reference (``tensors``): content that never
    leaves its process (Flower serializes only the records, so the tensors cannot travel by mistake)."""

    def __init__(self, records: dict[str, Any] | None = None, tensors: dict[str, Tensors] | None = None) -> None:
        super().__init__(records)
        self.tensors: dict[str, Tensors] = dict(tensors or {})


def shares_process(grid: object) -> bool:
    """Whether ``grid`` runs its ClientApps in this process (it says so with ``shares_process = True``)."""
    return bool(getattr(grid, "shares_process", False))


def to_array_record(tensors: Tensors) -> ArrayRecord:
    """The tensors as an ArrayRecord (copied to the CPU, order kept)."""
    return ArrayRecord({k: v.detach().cpu() for k, v in tensors.items()})


def from_array_record(record: ArrayRecord, device: torch.device | str = "cpu") -> Tensors:
    """An ArrayRecord's arrays as tensors on ``device``."""
    return {k: v.to(device) for k, v in record.to_torch_state_dict().items()}


def pack(records: dict[str, Any], key: str, tensors: Tensors, *, by_reference: bool) -> RecordDict:
    """``records`` plus ``tensors`` under ``key``: by reference (a DeviceRecordDict) or as an ArrayRecord."""
    if by_reference:
        return DeviceRecordDict(records, {key: tensors})
    return RecordDict({**records, key: to_array_record(tensors)})


def unpack(content: RecordDict, key: str, device: torch.device | str) -> Tensors | None:
    """The tensors ``pack`` put under ``key``, on ``device`` (None when there are none)."""
    if isinstance(content, DeviceRecordDict) and key in content.tensors:
        return {k: v.to(device) for k, v in content.tensors[key].items()}
    if key in content.array_records:
        return from_array_record(content.array_records[key], device)
    return None


def as_tensors(arrays: ArrayRecord | Tensors, device: torch.device | str | None = None) -> Tensors:
    """Tensors from either form (Flower's strategy interface passes ArrayRecords); ``device``: where
    ArrayRecords go (default CPU), tensors stay where they are unless it is given."""
    if isinstance(arrays, ArrayRecord):
        return from_array_record(arrays, device or "cpu")
    return dict(arrays) if device is None else {k: v.to(device) for k, v in arrays.items()}


def finite_flags(tensors_list: list[Tensors]) -> list[bool]:
    """For each tensor dict, whether all its floating-point values are finite.

    One ``_foreach_norm`` over every tensor of every dict first (a norm is finite only if all its
    values are): when all norms are finite that is the answer, in one host sync; otherwise (a
    non-finite value, or finite values whose norm overflows) each dict is checked element-wise."""
    floats = [v for tensors in tensors_list for v in tensors.values() if v.is_floating_point()]
    if not floats:
        return [True] * len(tensors_list)
    norms = torch._foreach_norm(floats)
    if len({(n.dtype, n.device) for n in norms}) > 1:  # mixed precision or devices: one dtype to stack
        norms = [n.to(norms[0].device, torch.float64) for n in norms]
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return [True] * len(tensors_list)
    return [all(bool(torch.isfinite(v).all()) for v in tensors.values() if v.is_floating_point())
            for tensors in tensors_list]

"""FedAvg (McMahan et al., 2017) on Flower's Message API, with seeded client sampling.

Flower's ``FedAvg`` samples nodes with the unseeded ``random`` module and always
weights by ``num-examples``. This subclass keeps Flower's aggregation (the same
function, so identical results for the same replies) and adds:

- seeded sampling over a stable node order (by partition id, see ``set_node_order``);
- the model as tensors on the server's device (``fedsign.tensors``): sent by reference to a grid
  that shares this process, as an ArrayRecord otherwise; screening and aggregation run on the
  device with Flower's arithmetic (the weighted mean equals Flower's to the bit);
- ``weighted=False`` for the unweighted mean the authors' FedRepo code uses;
- reply screening: error replies and replies whose arrays are non-finite or do not
  match the keys and shapes that were sent are dropped and counted, never averaged; the
  others are aggregated in partition order whatever order they arrived in;
- ``client_config``: the algorithm's hyperparameters, sent to every sampled client in
  ``configure_train`` (as Flower's FedProx sends ``proximal-mu``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.supercore import log

from fedsign.tensors import Tensors, as_tensors, finite_flags, pack, shares_process, to_array_record, unpack


@dataclass(frozen=True)
class RoundResult:
    """One round's outcome: the new global model and train metrics (None when the round is skipped:
    fewer than ``min_replies`` usable replies), the usable replies' contents and models, and why the
    others were dropped."""

    arrays: Tensors | None
    metrics: MetricRecord | None
    usable: list[RecordDict]
    dropped: list[str]
    client_arrays: list[Tensors]


class FedAvg(FlowerFedAvg):
    """Federated Averaging with seeded sampling and reply screening.

    Hooks the server's round loop (``fedsign.server.train_round``) calls, each overridable:
    Flower's ``configure_train`` (the global model arrives as a ``{name: tensor}`` dict or an
    ArrayRecord; ``fedsign.tensors.as_tensors`` reads either) and ``aggregate_train`` (its returned
    arrays and metrics become the round's, see ``aggregate_round``); ours: ``sample_train_nodes``,
    ``screen_replies``, ``aggregate_arrays``, ``evaluation_extras``, ``options_from_config``,
    ``state_dict`` / ``load_state_dict``. Flower's ``start``, ``configure_evaluate`` and
    ``aggregate_evaluate`` are not called: the platform runs the loop and evaluates centrally.

    Parameters
    ----------
    *args, **kwargs
        Flower ``FedAvg``'s constructor arguments (``fraction_train``,
        ``min_train_nodes``, ``weighted_by_key``, ...).
    weighted : bool (default: True)
        Weight each reply by ``weighted_by_key`` (``num-examples``); False gives the
        plain mean over the round's participants.
    seed : int (default: 0)
        Seed of the client-sampling generator.
    min_replies : int (default: 1)
        Fewest usable replies a round needs; with fewer, ``aggregate_train`` returns None
        before any aggregation (so no strategy state changes) and the round is skipped.
    client_config : Mapping[str, bool | int | float | str] (default: none)
        Hyperparameters sent to every sampled client with the global model (run-config keys,
        e.g. ``{"proximal-mu": 0.01}``; the registry, ``fedsign.algorithms``, says which).
    """

    def __init__(self, *args: Any, weighted: bool = True, seed: int = 0, min_replies: int = 1,
                 client_config: Mapping[str, bool | int | float | str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("fraction_evaluate", 0.0)  # the server evaluates centrally
        flwr_logger = logging.getLogger("flwr")
        level = flwr_logger.level
        if kwargs["fraction_evaluate"] == 0.0:  # Flower warns about exactly this choice
            flwr_logger.setLevel(logging.ERROR)
        try:
            super().__init__(*args, **kwargs)
        finally:
            flwr_logger.setLevel(level)
        self.weighted = weighted
        self.min_replies = min_replies
        self.client_config = dict(client_config or {})
        self.rng = random.Random(seed)
        self.node_order: list[int] | None = None
        self.sent_arrays: Tensors | None = None
        self._screened: RoundResult | None = None  # FedAvg.aggregate_train's last screening

    @classmethod
    def options_from_config(cls, config: Any) -> dict[str, Any]:
        """Constructor arguments of this strategy taken from a run config (none for FedAvg)."""
        return {}

    def evaluation_extras(self) -> dict[str, Tensors]:
        """Further models of the last round the server should evaluate, by name (none here)."""
        return {}

    # ---------------------------------------------------------------- sampling
    def set_node_order(self, node_ids: list[int]) -> None:
        """Fix the order nodes are sampled from (the server sorts them by partition id)."""
        self.node_order = list(node_ids)

    def sample_train_nodes(self, grid: Grid) -> list[int]:
        """Seeded sample of ``max(fraction_train * N, min_train_nodes)`` nodes."""
        available = set(grid.get_node_ids())
        order = [n for n in (self.node_order or sorted(available)) if n in available]
        sample_size = max(int(len(order) * self.fraction_train), self.min_train_nodes)
        if sample_size > len(order):
            raise RuntimeError(
                f"need {sample_size} nodes to sample from but only {len(order)} are connected"
            )
        return self.rng.sample(order, sample_size)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord | Tensors, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global model (tensors, or an ArrayRecord as Flower passes it), config and
        ``client_config`` to a seeded sample of nodes."""
        if self.fraction_train == 0.0:
            return []
        node_ids = self.sample_train_nodes(grid)
        log(INFO, "configure_train: sampled %s nodes", len(node_ids))
        for key, value in self.client_config.items():
            config[key] = value
        config["server-round"] = server_round
        self.sent_arrays = as_tensors(arrays)
        record = pack({self.configrecord_key: config}, self.arrayrecord_key, self.sent_arrays,
                      by_reference=shares_process(grid))
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    # ------------------------------------------------------------- aggregation
    def screen_replies(self, replies: Iterable[Message]) -> tuple[list[RecordDict], list[Tensors], list[str]]:
        """(contents of the usable replies, their models on the device of the sent model, why each
        other reply was dropped), in the node order of ``set_node_order`` (partition order), not in
        the order replies arrived: floating-point sums then do not depend on the engine's timing."""
        candidates: list[tuple[Message, Tensors]] = []
        dropped: list[str] = []
        rank = {node: i for i, node in enumerate(self.node_order or [])}
        for msg in sorted(replies, key=lambda m: rank.get(m.metadata.src_node_id, len(rank))):
            tensors, reason = self._reply_problem(msg)
            if reason is None:
                candidates.append((msg, tensors))
            else:
                self._drop(msg, reason, dropped)
        usable, models = [], []
        for (msg, tensors), finite in zip(candidates, finite_flags([t for _, t in candidates])):
            if finite:
                usable.append(msg.content)
                models.append(tensors)
            else:
                name = next(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
                self._drop(msg, f"array '{name}' has non-finite values", dropped)
        return usable, models, dropped

    @staticmethod
    def _drop(msg: Message, reason: str, dropped: list[str]) -> None:
        dropped.append(reason)
        log(WARNING, "dropped reply from node %s: %s", msg.metadata.src_node_id, reason.splitlines()[0])

    def _reply_problem(self, msg: Message) -> tuple[Tensors | None, str | None]:
        """(the reply's model, None) or (None, why it is unusable); finiteness is checked later for all at once."""
        if msg.has_error():
            return None, f"client error: {msg.error.reason}"
        content = msg.content
        device = next(iter(self.sent_arrays.values())).device if self.sent_arrays else "cpu"
        tensors = unpack(content, self.arrayrecord_key, device)
        if tensors is None:
            return None, f"no ArrayRecord '{self.arrayrecord_key}'"
        metric_records = list(content.metric_records.values())
        if not metric_records or self.weighted_by_key not in metric_records[0]:
            return None, f"no '{self.weighted_by_key}' metric"
        weight = metric_records[0][self.weighted_by_key]
        if not (isinstance(weight, (int, float)) and np.isfinite(weight) and weight > 0):
            return None, f"bad '{self.weighted_by_key}' value {weight!r}"
        if self.sent_arrays is not None:
            if list(tensors) != list(self.sent_arrays):
                return None, "array keys differ from the global model's"
            for key, sent in self.sent_arrays.items():
                if tuple(tensors[key].shape) != tuple(sent.shape):
                    return None, f"array '{key}' has shape {tuple(tensors[key].shape)}, expected {tuple(sent.shape)}"
        return tensors, None

    def aggregate_arrays(self, models: list[Tensors], contents: list[RecordDict]) -> Tensors:
        """The weighted mean of the replies' ``models`` by their ``weighted_by_key`` metric (Flower's
        ``aggregate_arrayrecords`` arithmetic: factors w/Σw, summed in reply order), or the plain mean."""
        def as_float(value: torch.Tensor) -> torch.Tensor:  # integer arrays average in float64, as NumPy's
            return value if value.is_floating_point() else value.double()

        if not self.weighted:
            return {key: torch.stack([as_float(m[key]) for m in models]).mean(0) for key in models[0]}
        weights = [float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents]
        total = sum(weights)
        mean: Tensors = {}
        for model, weight in zip(models, weights):
            for key, value in model.items():
                part = as_float(value) * (weight / total)
                mean[key] = part if key not in mean else mean[key] + part
        return mean

    def screen_and_aggregate(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """Screen and aggregate one round's replies (``screen_replies``, then ``aggregate_arrays`` and
        Flower's ``train_metrics_aggr_fn``)."""
        usable, models, dropped = self.screen_replies(replies)
        if not usable or len(usable) < self.min_replies:
            return RoundResult(None, None, usable, dropped, models)
        return RoundResult(self.aggregate_arrays(models, usable),
                           self.train_metrics_aggr_fn(usable, self.weighted_by_key), usable, dropped, models)

    def aggregate_round(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """What the server's round loop calls. A subclass that overrides Flower's ``aggregate_train`` gets
        it called: its arrays and metrics are the round's (screening counts come from FedAvg's
        ``aggregate_train`` when the override calls it; else every reply without an error counts as used).
        Otherwise ``screen_and_aggregate``, the same arithmetic without the ArrayRecord round trip."""
        if type(self).aggregate_train is FedAvg.aggregate_train:
            return self.screen_and_aggregate(server_round, replies)
        replies = list(replies)
        self._screened = None
        arrays, metrics = self.aggregate_train(server_round, replies)
        screened = self._screened or RoundResult(
            None, None, [m.content for m in replies if not m.has_error()],
            [f"client error: {m.error.reason}" for m in replies if m.has_error()], [])
        device = next(iter(self.sent_arrays.values())).device if self.sent_arrays else None
        return dataclasses.replace(screened, arrays=None if arrays is None else as_tensors(arrays, device),
                                   metrics=metrics)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's interface: the aggregated arrays as an ArrayRecord and the metrics (None, None when
        fewer than ``min_replies`` replies are usable)."""
        result = self.screen_and_aggregate(server_round, replies)
        self._screened = result
        return (None if result.arrays is None else to_array_record(result.arrays)), result.metrics

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Strategy state a checkpoint must keep (sampling RNG)."""
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(state["rng"])

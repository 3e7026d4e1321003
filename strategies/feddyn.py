"""FedDyn (Acar et al., ICLR 2021, Algorithm 1 and the official alpemreacar/FedDyn code) on the server.

The server keeps h (zero at start) and, with K the number of *all* clients (the grid's
node count), P_t the round's participants and theta^{t-1} the arrays ``configure_train``
sent:

    h       <- h - (alpha / K) * sum_{k in P_t} (theta_k - theta^{t-1})
    theta^t  = mean_{k in P_t} theta_k - h / alpha        (unweighted mean)

Only trainable parameters get the h-correction. BatchNorm running statistics
(arrays named ``*.running_mean`` / ``*.running_var``; the official code's models have
none) are not part of theta: the server takes their plain participant mean. The plain
participant mean of the whole model is also kept, and the server evaluates it
(``evaluation_extras``, logged as ``participant_mean_accuracy``) as the official code does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedsign.tensors import Tensors
from strategies.fedavg import FedAvg

BN_STATISTICS = ("running_mean", "running_var")


def is_trainable(key: str) -> bool:
    """Whether an array of the model is a trainable parameter (not a BN running statistic)."""
    return key.rsplit(".", 1)[-1] not in BN_STATISTICS


class FedDyn(FedAvg):
    """FedDyn server: participant mean corrected by the running state h (module docstring).

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments. ``weighted`` is ignored: FedDyn
        averages its participants with equal weights.
    alpha : float (default: 0.01)
        FedDyn's regularization strength (run-config ``feddyn-alpha``), > 0; the same value
        the clients use.
    """

    def __init__(self, *args: Any, alpha: float = 0.01, **kwargs: Any) -> None:
        kwargs["weighted"] = False
        super().__init__(*args, **kwargs)
        if not alpha > 0:
            raise ValueError(f"FedDyn needs alpha > 0, got {alpha}")
        self.alpha = alpha
        self.h: Tensors = {}  # float64, on the model's device
        self.num_clients = 0
        self.participant_mean: Tensors | None = None

    @classmethod
    def options_from_config(cls, config: Any) -> dict[str, Any]:
        return {"alpha": config.feddyn_alpha}

    def evaluation_extras(self) -> dict[str, Tensors]:
        """The plain participant mean of the last round, as ``participant_mean``."""
        return {} if self.participant_mean is None else {"participant_mean": self.participant_mean}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord | Tensors, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling; also records K, the number of all clients."""
        self.num_clients = len(list(grid.get_node_ids()))
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_arrays(self, models: list[Tensors], contents: list[RecordDict]) -> Tensors:
        """Update h and return theta^t (module docstring), in float64 on the models' device."""
        if self.sent_arrays is None or self.num_clients == 0:
            raise RuntimeError("FedDyn.aggregate_arrays needs configure_train to have run this round")
        self.participant_mean = super().aggregate_arrays(models, contents)
        result = {}
        for key, mean in self.participant_mean.items():
            if not is_trainable(key):
                result[key] = mean
                continue
            previous = self.sent_arrays[key].double()
            drift, difference = torch.zeros_like(previous), torch.empty_like(previous)
            for model in models:  # sum of (theta_k - previous) in float64, in reply order, one buffer
                drift.add_(difference.copy_(model[key]).sub_(previous))
            h = self.h[key].to(previous.device) if key in self.h else torch.zeros_like(previous)
            self.h[key] = h - drift.mul_(self.alpha / self.num_clients)
            result[key] = mean.double().sub_(self.h[key] / self.alpha).float()
        return result

    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus h (as float64 arrays)."""
        return {**super().state_dict(), "h": {k: v.cpu().numpy().copy() for k, v in self.h.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.h = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in state["h"].items()}

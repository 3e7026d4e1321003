"""Server strategies on Flower's Message API, one module each."""

from strategies.fedavg import FedAvg

STRATEGY_CLASSES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
}

__all__ = ["FedAvg", "STRATEGY_CLASSES"]

"""Server strategies on Flower's Message API: FedAvg (every algorithm's server unless its registry entry,
``fedsign.algorithms``, names another) and the servers that differ from it, one module each."""

from strategies.fedavg import FedAvg
from strategies.feddyn import FedDyn

__all__ = ["FedAvg", "FedDyn"]

"""Server strategies on Flower's Message API, one module each (registered in ``fedsign.algorithms``)."""

from fedsign.algorithms import ALGORITHMS
from strategies.fedavg import FedAvg
from strategies.feddyn import FedDyn
from strategies.fedpan import FedPAN
from strategies.fedprox import FedProx
from strategies.fedsign import FedSign
from strategies.moon import MOON

STRATEGY_CLASSES: dict[str, type[FedAvg]] = {name: a.strategy_class() for name, a in ALGORITHMS.items()}

__all__ = ["FedAvg", "FedDyn", "FedPAN", "FedProx", "FedSign", "MOON", "STRATEGY_CLASSES"]

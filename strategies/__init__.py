"""Server strategies on Flower's Message API, one module each."""

from strategies.fedavg import FedAvg
from strategies.feddyn import FedDyn
from strategies.fedpan import FedPAN
from strategies.fedprox import FedProx
from strategies.fedsign import FedSign
from strategies.moon import MOON

STRATEGY_CLASSES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "moon": MOON,
    "feddyn": FedDyn,
    "fedpan": FedPAN,
    "fedsign": FedSign,
}

__all__ = ["FedAvg", "FedDyn", "FedPAN", "FedProx", "FedSign", "MOON", "STRATEGY_CLASSES"]

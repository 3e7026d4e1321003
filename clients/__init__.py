"""Client-side algorithms: objectives and per-client state, one module each."""

from clients.base import ClientAlgorithm, ClientRound, ClientState
from clients.fedavg import FedAvgClient
from clients.feddyn import FedDynClient
from clients.fedpan import FedPANClient
from clients.fedprox import FedProxClient
from clients.fedsign import FedSignClient, WithSignTerm
from clients.moon import MOONClient
from fedsign.algorithms import ALGORITHMS
from fedsign.config import RunConfig

CLIENT_ALGORITHMS: dict[str, type[ClientAlgorithm]] = {name: a.client_class() for name, a in ALGORITHMS.items()}


def get_client_algorithm(name: str) -> ClientAlgorithm:
    """The client algorithm registered under ``name``."""
    try:
        return CLIENT_ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown client algorithm '{name}'; known: {', '.join(CLIENT_ALGORITHMS)}") from None


def make_client_algorithm(config: RunConfig) -> ClientAlgorithm:
    """The run's client algorithm: ``strategy``'s, plus the FedSign term (weight
    ``sign-gamma``, reduction ``fedsign-reduction``) when ``sign-gamma`` > 0."""
    algorithm = get_client_algorithm(config.strategy)
    if config.sign_gamma > 0:
        algorithm = WithSignTerm(algorithm, config.sign_gamma, config.fedsign_reduction)
    return algorithm


__all__ = [
    "CLIENT_ALGORITHMS",
    "ClientAlgorithm",
    "ClientRound",
    "ClientState",
    "FedAvgClient",
    "FedDynClient",
    "FedPANClient",
    "FedProxClient",
    "FedSignClient",
    "MOONClient",
    "WithSignTerm",
    "get_client_algorithm",
    "make_client_algorithm",
]

"""Client-side algorithms: objectives and per-client state, one module each."""

from clients.base import ClientAlgorithm, ClientRound, ClientState
from clients.fedavg import FedAvgClient
from clients.feddyn import FedDynClient
from clients.fedpan import FedPANClient
from clients.fedprox import FedProxClient
from clients.fedsign import FedSignClient, WithSignTerm
from clients.moon import MOONClient
from fedsign.algorithms import get_algorithm
from fedsign.config import RunConfig


def make_client_algorithm(config: RunConfig) -> ClientAlgorithm:
    """The run's client algorithm: ``strategy``'s, plus the FedSign term (weight
    ``sign-gamma``, reduction ``fedsign-reduction``) when ``sign-gamma`` > 0."""
    algorithm = get_algorithm(config.strategy).client_class()()
    if config.sign_gamma > 0:
        algorithm = WithSignTerm(algorithm, config.sign_gamma, config.fedsign_reduction)
    return algorithm


__all__ = [
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
    "make_client_algorithm",
]

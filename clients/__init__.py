"""Client-side algorithms: objectives and per-client state, one module each."""

from clients.base import ClientAlgorithm, ClientState
from clients.fedavg import FedAvgClient

CLIENT_ALGORITHMS: dict[str, type[ClientAlgorithm]] = {
    FedAvgClient.name: FedAvgClient,
}


def get_client_algorithm(name: str) -> ClientAlgorithm:
    """The client algorithm registered under ``name``."""
    try:
        return CLIENT_ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown client algorithm '{name}'; known: {', '.join(CLIENT_ALGORITHMS)}") from None


__all__ = ["CLIENT_ALGORITHMS", "ClientAlgorithm", "ClientState", "FedAvgClient", "get_client_algorithm"]

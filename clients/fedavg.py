"""FedAvg client (McMahan et al., 2017): local SGD on cross-entropy only."""

from clients.base import ClientAlgorithm


class FedAvgClient(ClientAlgorithm):
    """Local SGD on the plain cross-entropy loss; keeps no state."""

    name = "fedavg"

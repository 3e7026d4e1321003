"""FedProx (Li et al., MLSys 2020) on the server: FedAvg's sampling and aggregation.

The algorithm lives in the client objective: the proximal term (``proximal-mu``), see
``clients.fedprox``. Clients read their hyperparameters from the run config that every node
receives, so the server needs none.
"""

from strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """FedProx server: aggregation as :class:`strategies.FedAvg`.

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments (Flower ``FedAvg``'s plus
        ``weighted`` and ``seed``).
    """

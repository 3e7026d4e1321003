"""FedProx (Li et al., MLSys 2020) on the server: FedAvg's sampling and aggregation.

The algorithm lives in the client objective: the proximal term (``proximal-mu``), see
``clients.fedprox``. The strategy sends the hyperparameters to the sampled clients in ``configure_train``
(``client_config``), as Flower's strategies do; clients train with the values they receive.
"""

from strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """FedProx server: aggregation as :class:`strategies.FedAvg`.

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments (Flower ``FedAvg``'s plus
        ``weighted``, ``seed``, ``min_replies`` and ``client_config``).
    """

"""FedSign (the paper, Algorithm 1) on the server: FedAvg's sampling and aggregation.

The algorithm lives in the client objective: the sign-alignment term (``fedsign-gamma``,
``fedsign-reduction``), see ``clients.fedsign``. Clients read their hyperparameters from the
run config that every node receives, so the server needs none. Algorithm 1 averages with
equal weights: run-config ``weighted=false``.
"""

from strategies.fedavg import FedAvg


class FedSign(FedAvg):
    """FedSign server: aggregation as :class:`strategies.FedAvg`.

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments (Flower ``FedAvg``'s plus
        ``weighted`` and ``seed``).
    """

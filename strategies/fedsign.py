"""FedSign (the paper, Algorithm 1) on the server: FedAvg's sampling and aggregation.

The algorithm lives in the client objective: the sign-alignment term (``fedsign-gamma``,
``fedsign-reduction``), see ``clients.fedsign``. The strategy sends the hyperparameters to the sampled
clients in ``configure_train`` (``client_config``), as Flower's strategies do; clients train with
the values they receive. Algorithm 1 averages with
equal weights: run-config ``weighted=false``.
"""

from strategies.fedavg import FedAvg


class FedSign(FedAvg):
    """FedSign server: aggregation as :class:`strategies.FedAvg`.

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments (Flower ``FedAvg``'s plus
        ``weighted``, ``seed``, ``min_replies`` and ``client_config``).
    """

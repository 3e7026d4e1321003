"""FedPAN (Li et al., CVPR 2022) on the server: FedAvg's sampling and aggregation.

The algorithm lives in the model: the position-aware neurons (``pan-*`` keys), built into the
server's model and every client's alike, see ``clients.fedpan``. The strategy sends the hyperparameters to the sampled clients in ``configure_train``
(``client_config``), as Flower's strategies do; clients train with the values they receive.
"""

from strategies.fedavg import FedAvg


class FedPAN(FedAvg):
    """FedPAN server: aggregation as :class:`strategies.FedAvg`.

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments (Flower ``FedAvg``'s plus
        ``weighted``, ``seed``, ``min_replies`` and ``client_config``).
    """

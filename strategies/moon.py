"""MOON (Li, He, Song, CVPR 2021) on the server: FedAvg's sampling and aggregation.

The algorithm lives in the client objective: the model-contrastive loss and its projection head
(``moon-*`` keys), see ``clients.moon``. Clients read their hyperparameters from the run config that
every node receives, so the server needs none.
"""

from strategies.fedavg import FedAvg


class MOON(FedAvg):
    """MOON server: aggregation as :class:`strategies.FedAvg`.

    Parameters
    ----------
    *args, **kwargs
        :class:`strategies.FedAvg`'s constructor arguments (Flower ``FedAvg``'s plus
        ``weighted`` and ``seed``).
    """

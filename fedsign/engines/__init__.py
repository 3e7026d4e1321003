"""The engines this project owns: the in-process grid (ClientApp calls in this process, no Ray, no
SuperLink) and the vectorized grid (a round's clients trained at once under ``torch.func.vmap``).
Both drive the same round loop (``fedsign.server``) and ClientApp code as a Ray simulation or a real
deployment, which use Flower's own engines."""

from __future__ import annotations

from fedsign.client_app import app as client_app
from fedsign.config import RunConfig, refuse_crash_faults
from fedsign.engines.inprocess import InProcessGrid, error_reply
from fedsign.engines.vectorized import VectorizedInProcessGrid, vectorization_problem
from fedsign.results import RunResults
from fedsign.server import run_server


def run_inprocess(config: RunConfig, *, progress: bool = True) -> RunResults:
    """Run ``config`` (validated, paths resolved) in this process with ``config.engine``'s grid."""
    refuse_crash_faults(config, "the in-process engine")
    grid_class = InProcessGrid
    if config.engine == "vectorized":
        problem = vectorization_problem(config)
        if problem is None:
            grid_class = VectorizedInProcessGrid
        else:
            print(f"vectorized engine: running clients sequentially: {problem}", flush=True)
    grid = grid_class(client_app, config.num_clients, config.to_dict())
    if isinstance(grid, VectorizedInProcessGrid):
        grid.mixed_precision = config.mixed_precision
    return run_server(grid, config, progress=progress)


__all__ = ["InProcessGrid", "VectorizedInProcessGrid", "error_reply", "run_inprocess"]

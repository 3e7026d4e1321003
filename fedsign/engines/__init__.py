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
from fedsign.training import resolve_device


def choose_engine(config: RunConfig) -> str:
    """The engine ``engine='auto'`` runs: ``vectorized`` on CUDA (a round's clients at once), ``inprocess``
    on a CPU, where vmapping clients gains nothing (benchmarks/results/speed_mnist.md: 1.2-1.3x slower)."""
    if config.engine != "auto":
        return config.engine
    return "vectorized" if resolve_device(config.device).type == "cuda" else "inprocess"


def run_inprocess(config: RunConfig, *, progress: bool = True) -> RunResults:
    """Run ``config`` (validated, paths resolved) in this process with ``config.engine``'s grid
    (``auto``: ``choose_engine``'s, written into config.json and said in the run's first line)."""
    refuse_crash_faults(config, "the in-process engine")
    if config.engine == "auto":
        config = config.replace(engine=choose_engine(config))
        if progress:
            print(f"engine: {config.engine} (engine='auto' on {resolve_device(config.device).type})", flush=True)
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
    try:
        return run_server(grid, config, progress=progress)
    finally:
        grid.close()


__all__ = ["InProcessGrid", "VectorizedInProcessGrid", "choose_engine", "error_reply", "run_inprocess"]

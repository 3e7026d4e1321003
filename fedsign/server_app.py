"""The ServerApp: validates the run config, then runs the shared round loop.

Relative ``data-dir`` / ``out-dir`` are resolved against ``$FEDSIGN_WORKDIR`` (set by
``fedsign simulate`` and the Makefile), else the ServerApp's working directory — which
under ``flwr run`` is not the project, so pass absolute paths there.
"""

from __future__ import annotations

import os

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsign.config import RunConfig
from fedsign.server import run_server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = RunConfig.from_mapping(context.run_config).resolved(os.environ.get("FEDSIGN_WORKDIR"))
    run_server(grid, config)

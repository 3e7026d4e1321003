"""What every ``fedsign`` command shares: the one-line error type, run-config loading, the project folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsign.config import RunConfig

PROJECT_DIR = Path(__file__).resolve().parents[2]


class CLIError(RuntimeError):
    """A command-line problem reported as one line."""


def load_config(run_config: list[str] | None) -> RunConfig:
    """Parse, validate and resolve paths against the current directory."""
    return RunConfig.from_overrides(run_config or []).resolved()


def add_run_config(parser: argparse.ArgumentParser) -> None:
    """The ``--run-config`` / ``-c`` option, as ``flwr run`` takes it."""
    parser.add_argument("--run-config", "-c", action="append",
                        help="key=value pairs (TOML values) or a .toml file, as for flwr run")

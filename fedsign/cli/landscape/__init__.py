"""fedsign landscape: the paper's landscape analyses from the command line.

Analyses of a trained model take a *run directory* -- one written by the platform (``fedsign run`` /
``simulate``: ``config.json`` + ``model.safetensors``) or by ``fedsign landscape train`` -- or a
``.safetensors`` file inside one (e.g. a client model the run saved). The model is rebuilt with
``fedsign.task.build_run_model`` from the run's config, evaluated on that run's dataset (test split;
BN recalibration on the training split), and theta_0 is ``init.safetensors`` when the directory has
one, else the run's seeded initialization. Each command writes ``<name>.json`` / ``.npz`` records and
PNG figures to ``--out`` (default ``<run dir>/landscape``) and prints a short summary.

One module per command (``HELP``, ``add_arguments``, ``run``); ``common`` holds what they share.
"""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from fedsign.cli.common import CLIError
from fedsign.cli.landscape import (activations, bench, curves, digits_demo, digits_pattern, fl, hessian, interpolate,
                                   ratio, relu_sim, soups, train)
from fedsign.landscape.errors import LandscapeError
from fedsign.models import ModelConfigError

COMMANDS = {"train": train, "curves": curves, "ratio": ratio, "interpolate": interpolate, "soups": soups, "fl": fl,
            "digits-demo": digits_demo, "digits-pattern": digits_pattern, "relu-sim": relu_sim,
            "activations": activations, "hessian": hessian, "bench": bench}


def errors_as_cli(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report the landscape package's and the models' input errors as one-line ``CLIError`` s."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (LandscapeError, ModelConfigError) as err:
            raise CLIError(str(err)) from None

    return run


def add_landscape_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedsign landscape <command>`` to the ``fedsign`` parser's subcommands."""
    top = sub.add_parser("landscape", help="loss-landscape analyses (valleys, interpolation, soups, theory)",
                         description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="landscape_command", required=True)
    for name, module in COMMANDS.items():
        p = commands.add_parser(name, help=module.HELP, description=module.HELP)
        p.set_defaults(func=errors_as_cli(module.run))
        module.add_arguments(p)

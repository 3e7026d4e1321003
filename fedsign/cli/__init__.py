"""``fedsign`` command line: run (in-process), simulate (flwr run on Ray), validate, compare, federation, landscape.

``--run-config`` takes exactly what ``flwr run . --run-config`` takes: space-separated
``key=value`` pairs with TOML values (quote strings: ``strategy='fedsign'``) or a
``.toml`` file. Bad input prints one line ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from fedsign.cli.common import CLIError
from fedsign.cli.compare import add_compare_parser
from fedsign.cli.federation import add_federation_parser
from fedsign.cli.run import add_run_parsers
from fedsign.config import ConfigError
from fedsign.data import DataSourceError
from fedsign.deploy import DeployError
from fedsign.cli.landscape import add_landscape_parser
from fedsign.results import OutDirError, ResultsWriteError, RunFailed, RunInterrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parsers(sub)
    add_compare_parser(sub)
    add_federation_parser(sub)
    add_landscape_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (nothing written), 1 the run diverged or a results file could
    not be written, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataSourceError, OutDirError, CLIError, DeployError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RunFailed, ResultsWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (RunInterrupted, KeyboardInterrupt) as err:
        print(f"error: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return getattr(err, "exit_status", 130)


def exit_now(status: int) -> None:
    """Exit with ``status`` without waiting for client threads still inside torch (a Ctrl-C ends the
    main thread mid-round; finalising the interpreter under them aborts in C++)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.daemon and t.is_alive() for t in threading.enumerate()):
        os._exit(status)
    sys.exit(status)


def console() -> None:
    """The ``fedsign`` console script."""
    exit_now(main())

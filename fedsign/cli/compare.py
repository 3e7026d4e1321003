"""``fedsign compare RUN_DIR...``: the runs' table (differing keys, accuracy, rounds to target, s/round,
failures; seeds grouped as mean ± std) on stdout and an overlay plot of one metrics.csv column as PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsign.cli.common import CLIError
from fedsign.compare import (CompareError, compare_table, expand_paths, formatted, load_run, markdown,
                             mixed_datasets, overlay_plot)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.target is not None and not 0 < args.target <= 1:
        raise CLIError(f"--target is an accuracy in (0, 1], got {args.target:g}")
    try:
        runs = [load_run(path) for path in expand_paths(args.runs)]
        warning = mixed_datasets(runs)
        if warning:
            print(warning, file=sys.stderr)
        plot = Path(args.plot or f"compare-{args.metric}.png")
        warnings = overlay_plot(runs, args.metric, plot)
    except CompareError as err:
        raise CLIError(str(err)) from None
    table = compare_table(runs, args.target)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    elif args.markdown:
        print(markdown(formatted(table, args.target)), end="")
    else:
        print(formatted(table, args.target).to_string(index=False))
    for line in warnings:
        print(line, file=sys.stderr)
    print(f"plot: {plot} ({args.metric} against round)", file=sys.stderr)
    return 0


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the CLI."""
    p = sub.add_parser("compare", help="compare run folders: table of differing keys and results, overlay plot")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (out-dirs); globs accepted")
    p.add_argument("--target", type=float, default=None, help="accuracy whose first round each run reports")
    p.add_argument("--metric", default="accuracy", help="metrics.csv column to plot against round")
    p.add_argument("--plot", default="", help="PNG to write (default compare-<metric>.png)")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print the table as CSV (mean and _std columns)")
    output.add_argument("--markdown", action="store_true", help="print the table as markdown (mean ± std)")
    p.set_defaults(func=cmd_compare)

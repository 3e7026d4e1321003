"""fedsign landscape digits-pattern: Fig. 10: a digits softmax weight as w + λ·sign(w)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsign.cli.landscape.common import floats, print_written, record_config
from fedsign.landscape import plots
from fedsign.landscape.records import write_record
from fedsign.landscape.theory import digits_softmax, weight_patterns

HELP = 'Fig. 10: a digits softmax weight as w + λ·sign(w)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="recorded only: the fit is deterministic")
    p.add_argument("--cls", type=int, default=0, choices=range(10), help="the digit class (default 0)")
    p.add_argument("--lambdas", type=floats, default=floats("-1:1:0.5"), help="λ values (default -1:1:0.5)")


def run(args: argparse.Namespace) -> int:
    """Fig. 10: the digits softmax weight of one class as w + λ·sign(w)."""
    W, X, Y = digits_softmax()
    record = {"seed": args.seed, "config": record_config(args), **weight_patterns(W, X, Y, args.cls, args.lambdas)}
    out = Path(args.out)
    paths = write_record(out, "digits_pattern", record)
    paths.append(plots.plot_weight_patterns(record, out / "digits_pattern.png"))
    for lam, corr in zip(record["lambdas"], record["correlation"]):
        print(f"λ={lam:+.2f}: correlation with the mean digit {args.cls} {corr:+.3f}")
    print_written(paths)
    return 0

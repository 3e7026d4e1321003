"""fedsign landscape digits-demo: Listing 2 / Fig. 29: softmax regression on sklearn digits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fedsign.cli.landscape.common import print_written
from fedsign.landscape import plots
from fedsign.landscape.records import write_record
from fedsign.landscape.theory import DIGITS_METRICS, digits_demo

HELP = 'Listing 2 / Fig. 29: softmax regression on sklearn digits'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=10, help="noise draws averaged (default 10)")
    p.add_argument("--points", type=int, default=21, help="λ points in [-1, 1] (default 21)")


def run(args: argparse.Namespace) -> int:
    """Listing 2 / Fig. 29: softmax regression on digits under Gaussian and sign-consistent noise."""
    start = time.perf_counter()
    record, arrays = digits_demo(seed=args.seed, draws=args.draws, points=args.points)
    out = Path(args.out)
    paths = write_record(out, "digits_demo", record, {
        **arrays, "seed": np.asarray(args.seed), "metrics": np.asarray(DIGITS_METRICS)})
    paths.append(plots.plot_digits_demo(record, out / "digits_demo.png"))
    for noise, metrics in record["noises"].items():
        err = metrics["error"]
        print(f"{noise:<16} error at λ=-1 {err[0]:.4f}, λ=0 {err[len(err) // 2]:.4f}, λ=+1 {err[-1]:.4f}; "
              f"tr H at λ=-1 {metrics['trace_hessian'][0]:.2f}, λ=+1 {metrics['trace_hessian'][-1]:.2f}")
    print(f"{args.draws} noise draws in {time.perf_counter() - start:.1f} s")
    print_written(paths)
    return 0

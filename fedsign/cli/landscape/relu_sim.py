"""fedsign landscape relu-sim: Listing 1 / Fig. 27: ReLU pre-activation simulation."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsign.cli.landscape.common import print_written, record_config
from fedsign.landscape import plots
from fedsign.landscape.records import write_record
from fedsign.landscape.theory import relu_simulation, relu_summary

HELP = 'Listing 1 / Fig. 27: ReLU pre-activation simulation'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=10000)


def run(args: argparse.Namespace) -> int:
    """Listing 1 / Fig. 27: the distribution of (w + λ sign(w))^T h."""
    sim = relu_simulation(seed=args.seed, samples=args.samples)
    record = {"seed": args.seed, "config": record_config(args), **relu_summary(sim)}
    out = Path(args.out)
    paths = write_record(out, "relu_sim", record, sim)
    paths.append(plots.plot_relu_simulation(sim, out / "relu_sim.png"))
    for lam, mean, active in zip(record["lambdas"], record["mean"], record["active_fraction"]):
        print(f"λ={lam:+.1f}: mean {mean:+8.3f}, activated {active:.3f}")
    print_written(paths)
    return 0

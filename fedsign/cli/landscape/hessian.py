"""fedsign landscape hessian: Hutchinson Hessian trace along a direction."""

from __future__ import annotations

import argparse
from fedsign.cli.landscape.common import (add_direction_analysis, output_folder, print_written, record_config,
                                          run_data_direction, title)
from fedsign.landscape import plots
from fedsign.landscape.hessian import trace_curve
from fedsign.landscape.records import write_record

HELP = 'Hutchinson Hessian trace along a direction'


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_direction_analysis(p, "hessian", group="CLF", lambdas="-1:1:0.5", samples=512)
    p.add_argument("--probes", type=int, default=16, help="Rademacher probes per point")


def run(args: argparse.Namespace) -> int:
    """Hutchinson trace of the CE Hessian (w.r.t. a parameter group) along a direction."""
    run, data, direction = run_data_direction(args)
    record = trace_curve(run.model, run.params, direction, data, args.lambdas, buffers=run.buffers, bn=args.bn,
                         probes=args.probes, samples=args.samples, seed=args.seed)
    record = {"seed": args.seed, "config": record_config(args), "run": str(run.run_dir), "group": args.group, **record}
    out = output_folder(args, args.run)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_trace_curve(record, out / f"{args.name}.png", title(run, args)))
    for lam, tr, err in zip(record["lambdas"], record["trace"], record["stderr"]):
        print(f"λ={lam:+5.2f}: tr H ≈ {tr:.4f} ± {err:.4f}")
    print_written(paths)
    return 0

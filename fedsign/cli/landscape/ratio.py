"""fedsign landscape ratio: ratio-r sweep of sign-consistent elements (Fig. 4)."""

from __future__ import annotations

import argparse
import numpy as np

from fedsign.cli.landscape.common import (add_common, add_eval, add_model_source, analysis_target, evaluation_options,
                                          floats, output_folder, print_timing, print_written, record_config, title)
from fedsign.landscape import plots
from fedsign.landscape.curves import lambda_grid, ratio_sweep
from fedsign.landscape.records import write_record

HELP = 'ratio-r sweep of sign-consistent elements (Fig. 4)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?")
    add_model_source(p)
    p.add_argument("--ratios", type=floats, default=floats("0:1:0.1"), help="ratios r (default 0:1:0.1)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--points", type=int, default=21)
    add_common(p, "ratio")
    add_eval(p)


def run(args: argparse.Namespace) -> int:
    """Fig. 4: mean error over the positive / negative side against the sign-consistency ratio r."""
    device, run, data, names = analysis_target(args)
    record = ratio_sweep(run.model, run.params, names, data, ratios=args.ratios, scale=args.scale,
                         lambdas=lambda_grid(args.points), normalization=args.norm, filter_1d=args.filter_1d,
                         seed=args.seed, buffers=run.buffers, **evaluation_options(args, device))
    record = {"seed": args.seed, "config": record_config(args), "run": str(run.run_dir), "group": args.group, **record}
    out = output_folder(args, args.run)
    paths = write_record(out, args.name, record, {k: np.asarray(v) for k, v in record["sweep"].items()})
    paths.append(plots.plot_ratio_sweep(record, out / f"{args.name}.png", title(run, args)))
    sweep = record["sweep"]
    print("    r     SSR   err[0,1]  err[-1,0]   asym")
    for r, ssr, pos, neg in zip(sweep["ratios"], sweep["ssr"], sweep["error_pos_mean"], sweep["error_neg_mean"]):
        print(f"{r:5.2f}  {ssr:6.3f}  {pos:8.4f}  {neg:8.4f}  {neg - pos:+.4f}")
    print_timing(record["timing"])
    print_written(paths)
    return 0

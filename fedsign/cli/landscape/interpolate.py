"""fedsign landscape interpolate: (1-λ)θ1 + λθ2 with group statistics and SSR (Fig. 8)."""

from __future__ import annotations

import argparse
import numpy as np

from fedsign.cli.common import CLIError
from fedsign.cli.landscape.common import (add_common, add_eval, add_model_source, command_device, eval_data,
                                          evaluation_options, load_target, output_folder, print_timing, print_written,
                                          record_config)
from fedsign.landscape import plots
from fedsign.landscape.curves import interpolation, lambda_grid
from fedsign.landscape.groups import parameter_roles
from fedsign.landscape.records import write_record

HELP = '(1-λ)θ1 + λθ2 with group statistics and SSR (Fig. 8)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run1", help="run directory or model file; with --model a weights file")
    p.add_argument("run2")
    add_model_source(p, files="positional")
    p.add_argument("--points", type=int, default=31, help="λ points in [-1, 2] (default 31)")
    add_common(p, "interpolation")
    add_eval(p)


def run(args: argparse.Namespace) -> int:
    """Fig. 8: interpolation of two models, per-group statistics and sign consistency with d."""
    device = command_device(args)
    run1, run2 = load_target(args, args.run1, device), load_target(args, args.run2, device)
    for key in ("model", "dataset") if run1.config and run2.config else ():
        if getattr(run1.config, key) != getattr(run2.config, key):
            raise CLIError(f"the two runs differ in {key}: {getattr(run1.config, key)} vs {getattr(run2.config, key)}")
    if list(run1.params) != list(run2.params):
        raise CLIError("the two models have different parameters (e.g. one has a MOON head); cannot interpolate")
    data = eval_data(run1, args, device)
    record = interpolation(run1.model, run1.params, run2.params, data, groups=parameter_roles(run1.model, args.clf),
                           buffers1=run1.buffers, buffers2=run2.buffers,
                           lambdas=lambda_grid(args.points, -1.0, 2.0), **evaluation_options(args, device))
    record = {"seed": args.seed, "config": record_config(args), "runs": [str(args.run1), str(args.run2)], **record}
    out = output_folder(args, args.run1)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_interpolation(record, out / f"{args.name}.png",
                                          title=f"θ1 = {args.run1}, θ2 = {args.run2}, BN {args.bn}"))
    lam = np.asarray(record["lambdas"])
    at = {v: record["error"][int(np.argmin(np.abs(lam - v)))] for v in (0.0, 0.5, 1.0)}
    print(f"error at λ=0 (θ1) {at[0.0]:.4f}, λ=0.5 {at[0.5]:.4f}, λ=1 (θ2) {at[1.0]:.4f}")
    ssr = record["ssr"]
    print(f"SSR(θ1, θ2) {ssr['theta1_theta2']['all']:.4f}, SSR(θ1, d) {ssr['theta1_d']['all']:.4f}, "
          f"SSR(θ2, d) {ssr['theta2_d']['all']:.4f}")
    print_timing(record["timing"])
    print_written(paths)
    return 0

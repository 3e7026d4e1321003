"""fedsign landscape fl: FL runs side by side: global-model valleys (7 raw + 7 sign-consistent noises), initial-to-final interpolation, per-round client SSR."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedsign.algorithms import get_algorithm
from fedsign.cli.common import CLIError
from fedsign.cli.landscape.common import (add_common, add_eval, command_device, directions, eval_data,
                                          evaluation_options, load_run, print_written, record_config)
from fedsign.config import RunConfig
from fedsign.landscape import plots
from fedsign.landscape.curves import interpolation, lambda_grid, valley_curves
from fedsign.landscape.directions import DIRECTION_SETS
from fedsign.landscape.groups import parameter_roles, select_parameters
from fedsign.landscape.records import write_record
from fedsign.results import read_metrics

HELP = 'FL runs side by side: global-model valleys (7 raw + 7 sign-consistent noises), initial-to-final interpolation, per-round client SSR'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="finished FL run directories (config.json, model.safetensors, metrics.csv)")
    p.add_argument("--scale", type=float, default=1.0, help="scale s of the valleys (default 1)")
    p.add_argument("--points", type=int, default=11, help="λ points in [-1, 1] (default 11)")
    p.add_argument("--interp-points", type=int, default=9, help="λ points in [-0.5, 1.5] (default 9)")
    add_common(p, "fl_valleys", out_required=True)
    add_eval(p)


def _algorithm_label(config: RunConfig) -> str:
    """The run's algorithm with the hyperparameter Table 1 tunes (and the sign term's weight), e.g.
    ``fedsign fedsign-gamma=0.01``."""
    entry = get_algorithm(config.strategy)
    keys = ([entry.tuning[0]] if entry.tuning else []) + (["sign-gamma"] if config.sign_gamma > 0 else [])
    return " ".join([config.strategy, *(f"{k}={getattr(config, k.replace('-', '_')):g}" for k in keys)])


def _ssr_rows(run_dir: Path) -> list[dict]:
    """Per round of metrics.csv: the clients' mean SSR with the global model they received (``ssr_clients``)."""

    if not (run_dir / "metrics.csv").is_file():
        raise CLIError(f"{run_dir} has no metrics.csv: is it a finished FL run (fedsign run / simulate)?")
    try:
        rows = read_metrics(run_dir)
    except (OSError, ValueError, KeyError) as err:
        raise CLIError(f"{run_dir / 'metrics.csv'} cannot be read ({err})") from None
    return [{"round": r["round"], "ssr_clients": r.get("ssr_clients"), "accuracy": r.get("accuracy")}
            for r in rows if r.get("round") is not None]


def run(args: argparse.Namespace) -> int:
    """The valleys of FL runs' global models side by side: 7 raw and 7 sign-consistent noises, the
    interpolation from the initial to the final global model, and the clients' per-round SSR."""
    device = command_device(args)
    runs = [load_run(path, device) for path in args.runs]  # every run loads (and fails) before any work
    ssr = [_ssr_rows(run.run_dir) for run in runs]
    names = list(DIRECTION_SETS["common"]) + list(DIRECTION_SETS["common-sc"])
    record: dict = {"seed": args.seed, "config": record_config(args), "runs": []}
    for run, rows in zip(runs, ssr):
        data = eval_data(run, args, device)
        params = select_parameters(run.model, args.group, args.clf)
        saved = (run.run_dir / "init.safetensors").is_file()
        first = ("init.safetensors (saved initial global model)" if saved else
                 f"initial global model rebuilt from config.json (seed {run.config.seed})")
        dirs = directions(run, names, params, args)
        valleys = valley_curves(run.model, run.params, dirs, data, scales=(args.scale,),
                                lambdas=lambda_grid(args.points), buffers=run.buffers, **evaluation_options(args, device))
        interp = interpolation(run.model, run.init, run.params, data, groups=parameter_roles(run.model, args.clf),
                               lambdas=lambda_grid(args.interp_points, -0.5, 1.5), **evaluation_options(args, device))
        record["runs"].append({
            "run": str(run.run_dir), "label": f"{_algorithm_label(run.config)}\n{run.config.model} on "
                                              f"{run.config.dataset} (seed {run.config.seed}, "
                                              f"{run.config.num_rounds} rounds)",
            "first_model": first, "group": args.group, "valleys": valleys, "interpolation": interp,
            "ssr_clients": rows})
    out = Path(args.out)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_fl_valleys(record, out / f"{args.name}.png"))
    print(f"{'run':<40} {'raw asym':>9} {'sc asym':>9} {'err θ0':>7} {'err θT':>7} {'SSR last':>8}  θ0")
    for r in record["runs"]:
        curves = r["valleys"]["curves"]
        key = f"{args.scale:g}"
        raw = np.mean([curves[n]["scales"][key]["asymmetry"]["error"]["asymmetry"] for n in DIRECTION_SETS["common"]])
        sc = np.mean([curves[n]["scales"][key]["asymmetry"]["error"]["asymmetry"] for n in DIRECTION_SETS["common-sc"]])
        lam = np.asarray(r["interpolation"]["lambdas"])
        err = r["interpolation"]["error"]
        last = next((row["ssr_clients"] for row in reversed(r["ssr_clients"]) if row["ssr_clients"] is not None),
                    float("nan"))
        print(f"{Path(r['run']).name[:40]:<40} {raw:+9.4f} {sc:+9.4f} {err[int(np.argmin(np.abs(lam)))]:7.4f} "
              f"{err[int(np.argmin(np.abs(lam - 1)))]:7.4f} {last:8.4f}  {r['first_model']}")
    print_written(paths)
    return 0

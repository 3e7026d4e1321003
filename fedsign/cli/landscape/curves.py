"""fedsign landscape curves: valleys θf + λ·s·d along directions (Figs. 3, 5-7, 9)."""

from __future__ import annotations

import argparse
from fedsign.cli.landscape.common import (add_common, add_eval, add_model_source, analysis_target, directions,
                                          evaluation_options, floats, output_folder, print_timing, print_written,
                                          record_config, title)
from fedsign.landscape import plots
from fedsign.landscape.curves import lambda_grid, valley_curves
from fedsign.landscape.directions import DIRECTION_SETS, DirectionError
from fedsign.landscape.records import curve_arrays, write_record

HELP = 'valleys θf + λ·s·d along directions (Figs. 3, 5-7, 9)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run directory or a .safetensors file in one (or use --model)")
    add_model_source(p)
    p.add_argument("--directions", default="common,common-sc",
                   help=f"comma-separated names or sets ({', '.join(DIRECTION_SETS)}); default common,common-sc")
    p.add_argument("--scales", type=floats, default=[0.2, 1.0, 2.0], help="scales s (default 0.2,1,2)")
    p.add_argument("--points", type=int, default=21, help="λ points in [-1, 1] (default 21)")
    add_common(p, "valleys")
    add_eval(p)


def _direction_rows(spec: str) -> list[list[str]]:
    """Figure rows: one per direction set named in ``spec``, then one for the single names."""
    rows, singles = [], []
    for item in (s.strip() for s in spec.split(",")):
        if item in DIRECTION_SETS:
            rows.append(list(DIRECTION_SETS[item]))
        elif item:
            singles.append(item)
    if singles:
        rows.append(singles)
    if not rows:
        raise DirectionError("no direction given")
    return rows


def run(args: argparse.Namespace) -> int:
    """Figs. 3, 5-7, 9: valleys along named directions for several scales."""
    device, run, data, names = analysis_target(args)
    out = output_folder(args, args.run)  # before the work: a foreign record there is refused now
    rows = _direction_rows(args.directions)
    record = valley_curves(run.model, run.params, directions(run, [d for row in rows for d in row], names, args), data, scales=args.scales,
                           lambdas=lambda_grid(args.points), buffers=run.buffers, **evaluation_options(args, device))
    record = {"seed": args.seed, "config": record_config(args), "run": str(run.run_dir), "group": args.group,
              "parameters": names, "normalization": args.norm, **record}
    paths = write_record(out, args.name, record, curve_arrays(record))
    for metric in ("error", "loss"):
        paths.append(plots.plot_valleys(record, rows, out / f"{args.name}_{metric}.png", metric, title(run, args)))
    print(f"{'direction':<22}" + "".join(f"  asym(s={s:g})" for s in args.scales) + "   err(λ=-1)  err(λ=+1)")
    for curve in record["curves"].values():
        per_scale = list(curve["scales"].values())
        asym = "".join(f"  {c['asymmetry']['error']['asymmetry']:+11.4f}" for c in per_scale)
        print(f"{curve['label']:<22}{asym}   {per_scale[-1]['error'][0]:9.4f}  {per_scale[-1]['error'][-1]:9.4f}")
    print_timing(record["timing"])
    print_written(paths)
    return 0

"""fedsign landscape bench: points/second of vmap vs loop evaluation on the same points."""

from __future__ import annotations

import argparse
import numpy as np
import torch

from fedsign.cli.landscape.common import (add_common, add_eval, add_model_source, analysis_target, directions,
                                          output_folder, print_written, record_config)
from fedsign.landscape.curves import lambda_grid
from fedsign.landscape.evaluate import Line, evaluate_lines
from fedsign.landscape.records import write_record

HELP = 'points/second of vmap vs loop evaluation on the same points'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?")
    add_model_source(p)
    p.add_argument("--direction", default="sc-gauss")
    p.add_argument("--points", type=int, default=16)
    add_common(p, "bench")
    add_eval(p)


def run(args: argparse.Namespace) -> int:
    """Points per second of the vmap and loop evaluators on the same points, and their agreement."""
    device, run, data, names = analysis_target(args)
    direction = directions(run, [args.direction], names, args)[args.direction]
    line = [Line(run.params, direction, lambda_grid(args.points).tolist(), run.buffers)]
    modes = {"vmap": dict(vectorize=True), "loop": dict(vectorize=False)}
    if args.bf16:
        modes["vmap-bf16"] = dict(vectorize=True, bf16=True)
    results = {}
    for mode, options in modes.items():
        ev = evaluate_lines(run.model, line, data, bn=args.bn, chunk=args.chunk, **options)
        results[mode] = {"points_per_second": ev.points_per_second, "seconds": ev.seconds, "points": ev.points,
                         "vectorized": ev.vectorized, "error": ev.error[0].tolist(), "loss": ev.loss[0].tolist()}
    ref = results["loop"]
    for mode, r in results.items():
        r["max_abs_diff_error"] = float(np.max(np.abs(np.subtract(r["error"], ref["error"]))))
        r["max_abs_diff_loss"] = float(np.max(np.abs(np.subtract(r["loss"], ref["loss"]))))
        print(f"{mode:<10} {r['points_per_second']:8.2f} points/s  ({r['points']} points, {r['seconds']:.1f} s; "
              f"max |Δ| vs loop: error {r['max_abs_diff_error']:.2e}, loss {r['max_abs_diff_loss']:.2e})")
    record = {"seed": args.seed, "config": record_config(args), "run": str(run.run_dir), "device": str(device),
              "threads": torch.get_num_threads(), "test_samples": len(data.x),
              "recal_samples": 0 if data.recal_x is None else len(data.recal_x), "modes": results}
    print_written(write_record(output_folder(args, args.run), args.name, record))
    return 0

"""fedsign landscape activations: activation confusion matrices along a direction (Fig. 28)."""

from __future__ import annotations

import argparse
from fedsign.cli.landscape.common import (add_direction_analysis, output_folder, print_written, record_config,
                                          run_data_direction, title)
from fedsign.landscape import plots
from fedsign.landscape.activations import activation_confusion
from fedsign.landscape.records import write_record

HELP = 'activation confusion matrices along a direction (Fig. 28)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_direction_analysis(p, "activations", group="ALL", lambdas="-1:1:0.2", samples=256)


def run(args: argparse.Namespace) -> int:
    """Fig. 28: activation confusion matrices along a direction."""
    run, data, direction = run_data_direction(args)
    record = activation_confusion(run.model, run.params, direction, data, args.lambdas, buffers=run.buffers,
                                  bn=args.bn, samples=args.samples)
    record = {"seed": args.seed, "config": record_config(args), "run": str(run.run_dir), **record}
    out = output_folder(args, args.run)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_activation_confusion(record, out / f"{args.name}.png", title(run, args)))
    print("   λ   unchanged")
    for lam, diag in zip(record["lambdas"], record["diagonal"]):
        print(f"{lam:+5.2f}  {diag:.4f}")
    print_written(paths)
    return 0

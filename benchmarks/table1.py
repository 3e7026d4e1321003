"""Table 1: methods x Dirichlet alpha x seeds (x dataset), each method tuned on a validation split.

The command line of the sweep; the protocol and the modules that run, read and write it are in
``benchmarks/table1_sweep/``. Cells run through the in-process engine (``--engine vectorized`` or ``ray``
also work). A cell whose ``summary.json`` says "finished" is done, so an interrupted sweep resumes (an
interrupted cell restarts from round 1, so cells write no per-round checkpoints: ``checkpoint-every=0``);
every cell is claimed with a lock file, so several processes (``--workers N``, or the same command started
again on another GPU) share one sweep without running or deleting each other's cells.

    python benchmarks/table1.py --preset cpu-full --workers 2          # the CPU table (both cores)
    python benchmarks/table1.py --preset cpu-converged --workers 2     # the small-data CPU protocol
    python benchmarks/table1.py --preset paper --datasets cifar10 --data-dir cifar10=/data/cifar10
    python benchmarks/table1.py --preset cpu-converged --aggregate-only  # tables from finished cells
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from table1_sweep.grid import METHODS, PRESETS  # noqa: E402
from table1_sweep.report import aggregate  # noqa: E402
from table1_sweep.sweep import archive_cells, run_sweep, validate_cells  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-full")
    parser.add_argument("--engine", choices=("inprocess", "vectorized", "ray"), default=None,
                        help="default: the preset's (vectorized for paper, inprocess otherwise)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--datasets", nargs="+", default=None, help="a subset of the preset's datasets")
    parser.add_argument("--data-dir", action="append", default=[], metavar="DATASET=PATH")
    parser.add_argument("--extra", default="", help="more run-config overrides for every cell, e.g. \"device='cuda'\"")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the sweep (cell locks)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (CPU results are bitwise reproducible per thread count)")
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="seconds after which no new cell starts (0: run to the end)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--runs", default="", help="cell folders (default <out>/table1_runs/<preset>)")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--archive", default="", help="also copy every finished cell's metrics.csv, config.json and "
                                                      "summary.json here (what the tables and a resumed sweep need)")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset]
    methods = tuple(args.methods)
    datasets = tuple(args.datasets or preset.datasets)
    unknown = [d for d in datasets if d not in preset.datasets]
    if unknown:
        parser.error(f"--datasets {unknown[0]!r}: the {args.preset} preset has {', '.join(preset.datasets)}")
    bad = [item for item in args.data_dir if "=" not in item or item.split("=", 1)[0] not in preset.datasets]
    if bad:
        parser.error(f"--data-dir {bad[0]!r}: write DATASET=PATH with DATASET one of {', '.join(preset.datasets)}")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    data_dirs = dict(item.split("=", 1) for item in args.data_dir)
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "table1_runs" / args.preset
    engine = args.engine or preset.engine
    if not args.aggregate_only:
        import torch

        torch.set_num_threads(args.threads)
        validate_cells(preset, methods, datasets, data_dirs, runs, args.extra)
        worker = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--workers", "1"]
        run_sweep(preset, methods, datasets, data_dirs, runs, args.extra, engine, args.time_budget, args.workers,
                  worker)
    print(aggregate(args.preset, preset, runs, out, methods, datasets))
    if args.archive:
        archive_cells(runs, Path(args.archive))


if __name__ == "__main__":
    main()

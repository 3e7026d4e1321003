"""The paper's landscape figures and claim verdicts: one command for the suites of ``benchmarks/landscape/``.

- ``--suite cnn`` (default): Figs. 3, 4, 5, 7, 8, 11, 29 at reduced scale on real MNIST (``cnn_suite``).
- ``--suite bn``: Figs. 3, 4, 5, 7, 8, 11 on a CIFAR-10 subset for resnet20, vgg8_bn and their BN-free twins
  (``bn_suite``; near chance at this scale).
- ``--suite trained``: the same figures on networks trained to convergence (Fashion-MNIST, CIFAR-10), weights
  cached in ``--cache-dir``, resumable, bounded by ``--time-budget`` (``trained_suite``; hours).
- ``--claims``: CLAIMS.md and claims_table.md from the numbers.json files in ``--out`` (``claims``).

    python benchmarks/landscape_figures.py            # ~9 min on the 2 shared cores here
    python benchmarks/landscape_figures.py --quick    # ~2 min smoke version (writes to runs/)
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.landscape import bn_suite, cnn_suite, trained_suite  # noqa: E402
from benchmarks.landscape.claims import write_claims  # noqa: E402
from benchmarks.landscape.common import OUT  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="cnn", choices=("cnn", "bn", "trained"),
                        help="cnn: the MNIST cnn/resnet20 figures (default); bn: CIFAR-10 subset, resnet20 / vgg8_bn "
                             "and their BN-free twins; trained: those networks trained to convergence")
    parser.add_argument("--claims", action="store_true",
                        help="only write claims_table.md and CLAIMS.md from the numbers.json and fl/*.json files in "
                             "--out (no computation)")
    parser.add_argument("--nets", default="",
                        help=f"--suite bn / trained: comma-separated subset of {', '.join(bn_suite.BN_NETS)}")
    parser.add_argument("--quick", action="store_true", help="smoke version (~2 min); default out runs/")
    parser.add_argument("--out", default="", help=f"output folder (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="", help="MNIST (cnn suite) or CIFAR-10 (bn suite) location; "
                                                       "--suite trained: NAME=PATH[,NAME=PATH] (fmnist, cifar10) "
                                                       "(default: the dataset's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--train-samples", type=int, help="cnn training images (Figs. 3-5, 8)")
    parser.add_argument("--epochs", type=int, help="cnn training epochs (Figs. 3-5, 8)")
    parser.add_argument("--bn-train-samples", type=int, help="resnet20 training images (Fig. 7)")
    parser.add_argument("--soup-samples", type=int, help="images split into the two soup halves (Fig. 11)")
    parser.add_argument("--test-samples", type=int, help="test images per evaluated point")
    parser.add_argument("--points", type=int, help="λ points in [-1, 1]")
    parser.add_argument("--recal-samples", type=int, help="--suite trained: BN recalibration images per point")
    parser.add_argument("--draws", type=int, help="--suite trained: noise draws per model (Fig. 3)")
    parser.add_argument("--cache-dir", default=str(trained_suite.CACHE),
                        help="--suite trained: trained weights (safetensors + JSON), outside git "
                             f"(default {trained_suite.CACHE.relative_to(ROOT)})")
    parser.add_argument("--runs", default="",
                        help="--suite trained: comma-separated <dataset>-seed<k> folders to run (default all), e.g. "
                             "fmnist-seed1; processes with disjoint --runs may share --out and --cache-dir")
    parser.add_argument("--train-only", action="store_true",
                        help="--suite trained: train the selected networks into --cache-dir, analyse none (may run "
                             "beside a process analysing the same --runs: a network being trained is waited for)")
    parser.add_argument("--time-budget", type=float, default=math.inf,
                        help="--suite trained: seconds after which no training or analysis starts (default none)")
    args = parser.parse_args(argv)
    unknown = [k for k in args.nets.split(",") if k and k not in bn_suite.BN_NETS]
    if unknown:
        parser.error(f"--nets: unknown {', '.join(unknown)}; use a subset of {', '.join(bn_suite.BN_NETS)}")
    if args.suite == "trained" and any(v is not None and v < 1 for v in (args.test_samples, args.recal_samples,
                                                                         args.draws, args.points)):
        parser.error("--test-samples, --recal-samples, --draws and --points must be positive")
    if args.suite == "trained" and args.data_dir and not all("=" in d for d in args.data_dir.split(",")):
        parser.error("--suite trained: --data-dir takes NAME=PATH pairs, e.g. "
                     "cifar10=../shared/data/cifar10-jpeg.tar.gz")
    return args


def trained_scale(args: argparse.Namespace) -> trained_suite.TrainedScale:
    """:data:`trained_suite.TRAINED` with the evaluation options applied (``--nets`` and ``--runs`` select what
    a call runs, not the scale: the numbers of separate calls belong to one suite)."""
    options = {"test_samples": args.test_samples, "recal_samples": args.recal_samples, "noise_seeds": args.draws,
               "points": args.points}
    return replace(trained_suite.TRAINED, **{k: v for k, v in options.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.claims:
        print(f"wrote {write_claims(Path(args.out) if args.out else OUT)}")
    elif args.suite == "bn":
        bn_suite.run(args)
    elif args.suite == "trained":
        try:
            done = trained_suite.run_suite(
                trained_scale(args), Path(args.out) if args.out else trained_suite.TRAINED_OUT, Path(args.cache_dir),
                time_budget=args.time_budget, threads=args.threads,
                data_dirs=dict(d.split("=", 1) for d in args.data_dir.split(",") if d),
                nets=[n for n in args.nets.split(",") if n] or None, runs=[r for r in args.runs.split(",") if r] or None,
                train_only=args.train_only)
        except trained_suite.SuiteError as err:  # bad options or folders: one line, before any work
            sys.exit(f"error: {err}")
        print(f"trained {len(done['trained'])}, analysed {len(done['analysed'])} networks"
              + (f"; stopped: {done['stopped']}" if done["stopped"] else
                 "; the selection is complete" if args.nets or args.runs else "; the suite is complete")
              + "\nrun `benchmarks/landscape_figures.py --claims` to regenerate CLAIMS.md")
    else:
        cnn_suite.run(args)


if __name__ == "__main__":
    main()

"""The paper's landscape figures and claim verdicts: one command for the suites of ``benchmarks/landscape/``.

- ``--suite cnn`` (default): Figs. 3, 4, 5, 7, 8, 11, 29 at reduced scale on real MNIST (``cnn_suite``).
- ``--suite bn``: Figs. 3, 4, 5, 7, 8, 11 on a CIFAR-10 subset for resnet20, vgg8_bn and their BN-free twins
  (``bn_suite``; near chance at this scale).
- ``--claims``: CLAIMS.md and claims_table.md from the numbers.json files in ``--out`` (``claims``).

    python benchmarks/landscape_figures.py            # ~9 min on the 2 shared cores here
    python benchmarks/landscape_figures.py --quick    # ~2 min smoke version (writes to runs/)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.landscape import bn_suite, cnn_suite  # noqa: E402
from benchmarks.landscape.claims import write_claims  # noqa: E402
from benchmarks.landscape.common import OUT  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="cnn", choices=("cnn", "bn"),
                        help="cnn: the MNIST cnn/resnet20 figures (default); bn: CIFAR-10, resnet20 / vgg8_bn and "
                             "their BN-free twins")
    parser.add_argument("--claims", action="store_true",
                        help="only write claims_table.md and CLAIMS.md from the numbers.json and fl/*.json files in "
                             "--out (no computation)")
    parser.add_argument("--nets", default="",
                        help=f"--suite bn: comma-separated subset of {', '.join(bn_suite.BN_NETS)}")
    parser.add_argument("--quick", action="store_true", help="smoke version (~2 min); default out runs/")
    parser.add_argument("--out", default="", help=f"output folder (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="", help="MNIST (cnn suite) or CIFAR-10 (bn suite) location "
                                                       "(default: the dataset's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--train-samples", type=int, help="cnn training images (Figs. 3-5, 8)")
    parser.add_argument("--epochs", type=int, help="cnn training epochs (Figs. 3-5, 8)")
    parser.add_argument("--bn-train-samples", type=int, help="resnet20 training images (Fig. 7)")
    parser.add_argument("--soup-samples", type=int, help="images split into the two soup halves (Fig. 11)")
    parser.add_argument("--test-samples", type=int, help="test images per evaluated point")
    parser.add_argument("--points", type=int, help="λ points in [-1, 1]")
    args = parser.parse_args(argv)
    unknown = [k for k in args.nets.split(",") if k and k not in bn_suite.BN_NETS]
    if unknown:
        parser.error(f"--nets: unknown {', '.join(unknown)}; use a subset of {', '.join(bn_suite.BN_NETS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.claims:
        print(f"wrote {write_claims(Path(args.out) if args.out else OUT)}")
    elif args.suite == "bn":
        bn_suite.run(args)
    else:
        cnn_suite.run(args)


if __name__ == "__main__":
    main()

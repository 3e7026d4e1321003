"""The measurement behind ``init='auto'``: FedAvg with each model under FedRepo's and PyTorch's initialization.

Every model that takes 28x28 images runs the same federated configuration on real MNIST (a fixed 6,000-image
stratified subset, 20 clients, Dirichlet 0.5, 10 per round, 1 local epoch, batch 64, SGD lr 0.01 without
momentum: the FL-bench comparison's settings on less data) for ``--rounds`` rounds from both schemes, and the
table gives test accuracy after each evaluated round. The VGGs (32x32 inputs) are not measured: they keep
FedRepo's scheme, the paper's, so the ``paper`` preset is unchanged. Writes ``init_choice.{csv,md}``.

    python benchmarks/init_choice.py --rounds 10 --eval-every 5     # ~10 min on one core, resnet20 most of it
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsign.config import RunConfig  # noqa: E402
from fedsign.engines import run_inprocess  # noqa: E402
from fedsign.models import DEFAULT_INIT, INITS  # noqa: E402
from fedsign.results import read_metrics  # noqa: E402

MODELS = ("mlp", "cnn_small", "cnn", "resnet20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "init_choice"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for init in INITS:
                config = RunConfig.from_overrides(
                    f"strategy='fedavg' dataset='mnist' data-dir='{args.data_dir}' model='{model}' init='{init}' "
                    f"num-clients=20 clients-per-round=10 num-rounds={args.rounds} local-epochs=1 batch-size=64 "
                    f"lr=0.01 momentum=0.0 weight-decay=0.0 dirichlet-alpha=0.5 seed=42 train-samples=6000 "
                    f"eval-every={args.eval_every} checkpoint-every=0 engine='inprocess' out-dir='{tmp}/{model}-{init}'"
                ).resolved()
                start = time.perf_counter()
                run_inprocess(config, progress=False)
                history = read_metrics(Path(config.out_dir))
                rows.append({"model": model, "init": init,
                             "accuracies": {r["round"]: r["accuracy"] for r in history if r.get("accuracy") is not None},
                             "seconds": time.perf_counter() - start})
                print(model, init, rows[-1]["accuracies"], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    marks = sorted(rows[0]["accuracies"])
    lines = ["| model | init | " + " | ".join(f"round {m}" for m in marks) + " | default (`auto`) |",
             "|---|---|" + "---|" * len(marks) + "---|"]
    with out.with_suffix(".csv").open("w") as f:
        f.write("model,init,round,accuracy\n")
        for r in rows:
            f.writelines(f"{r['model']},{r['init']},{rnd},{a}\n" for rnd, a in r["accuracies"].items())
            lines.append(f"| {r['model']} | {r['init']} | "
                         + " | ".join(f"{100 * r['accuracies'][m]:.2f}" for m in marks)
                         + f" | {'yes' if DEFAULT_INIT[r['model']] == r['init'] else ''} |")
    note = (f"\n\nTest accuracy (%) of FedAvg on MNIST (6,000-image subset, 20 clients, Dir. 0.5, 10 per round, E = 1, "
            f"B = 64, lr 0.01, no momentum, seed 42), {os.cpu_count()} CPUs, 1 torch thread. `python "
            f"benchmarks/init_choice.py --rounds {args.rounds} --eval-every {args.eval_every}`.\n")
    out.with_suffix(".md").write_text("\n".join(lines) + note)
    print("\n".join(lines) + note)


if __name__ == "__main__":
    main()

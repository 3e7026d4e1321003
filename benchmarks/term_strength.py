"""How strong is Eq. 1's sign term? term_grad_ratio per reduction x gamma x model.

term_grad_ratio = ||grad term|| / ||grad CE|| on a client's first local step (the metric every run
writes to metrics.csv, here measured outside a run). For each model at its Table-1 setting the
ratio is measured on client 0's first batch twice: at the initial model (round 1) and after
``--warm-epochs`` epochs of local SGD on the same client (a model that has left the initial
plateau). The term is linear in gamma, so every gamma is measured, not extrapolated.

    python benchmarks/term_strength.py            # mlp, cnn_small, cnn on Fashion-MNIST, VGG8 on CIFAR-10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.fedsign import sign_term  # noqa: E402
from fedsign.algorithms import SIGN_REDUCTIONS  # noqa: E402
from fedsign.config import RunConfig  # noqa: E402
from fedsign.data import DATASETS, make_batch_transform  # noqa: E402
from fedsign.task import build_run_model, client_data  # noqa: E402
from fedsign.training import TrainSettings, term_grad_ratio, train_local  # noqa: E402

GAMMAS = (0.001, 0.01, 0.1)
SETTINGS = {  # model: run config of its Table-1 preset
    "mlp": "dataset='fmnist' model='mlp' train-samples=6000 validation-fraction=0.1 grad-clip=100.0",
    "cnn_small": "dataset='fmnist' model='cnn_small' train-samples=6000 validation-fraction=0.1",
    "cnn": "dataset='fmnist' model='cnn'",
    "vgg8": "dataset='cifar10' model='vgg8'",
}
COMMON = ("num-clients=100 clients-per-round=10 local-epochs=5 batch-size=64 lr=0.03 momentum=0.9 "
          "weight-decay=1e-5 dirichlet-alpha=1.0 strategy='fedsign'")


def measure(model_name: str, warm_epochs: int) -> list[dict]:
    """Rows {model, weights, stage, reduction, gamma, ratio} for one model."""
    config = RunConfig.from_overrides(f"{COMMON} {SETTINGS[model_name]}").resolved()
    model = build_run_model(config)
    images, labels = client_data(config, 0, torch.device("cpu"))
    settings = TrainSettings(epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr,
                             momentum=config.momentum, weight_decay=config.weight_decay)
    transform = make_batch_transform(DATASETS[config.dataset], train=True)
    numel = sum(p.numel() for p in model.parameters())
    rows = []
    for stage in ("initial", f"after {warm_epochs} local epochs"):
        if stage != "initial":
            train_local(model, images, labels, settings.__class__(**{**settings.__dict__, "epochs": warm_epochs}),
                        seed=1, transform=transform)
        received = {k: v.detach().clone() for k, v in model.named_parameters()}
        for reduction in SIGN_REDUCTIONS:
            for gamma in GAMMAS:
                term = (lambda p, f, x, y, g=gamma, r=reduction: sign_term(p, received, g, r))
                ratio = term_grad_ratio(model, images, labels, settings, seed=0, transform=transform, term=term)
                rows.append({"model": model_name, "weights": numel, "stage": stage, "reduction": reduction,
                             "gamma": gamma, "ratio": ratio})
    return rows


def render(rows: list[dict]) -> str:
    header = "| model (weights) | stage | reduction | " + " | ".join(f"γ={g:g}" for g in GAMMAS) + " |"
    lines = [header, "|" + "---|" * (3 + len(GAMMAS))]
    keys = dict.fromkeys((r["model"], r["weights"], r["stage"], r["reduction"]) for r in rows)
    for model, weights, stage, reduction in keys:
        ratios = [r["ratio"] for r in rows if (r["model"], r["stage"], r["reduction"]) == (model, stage, reduction)]
        lines.append(f"| {model} ({weights / 1e6:.2f}M) | {stage} | {reduction} | "
                     + " | ".join(f"{x:.3g}" for x in ratios) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--warm-epochs", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "term_strength.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [r for m in args.models for r in measure(m, args.warm_epochs)]
    text = ("term_grad_ratio = ||∇term|| / ||∇CE|| on client 0's first local step (α = 1, Table-1 settings), "
            f"`python benchmarks/term_strength.py`:\n\n{render(rows)}")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

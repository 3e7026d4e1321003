"""Table 1: strategies x Dirichlet alpha x seeds (x dataset) -> mean +- std of final accuracy.

One run per cell through either engine; a cell whose ``model.safetensors`` exists is
skipped, so an interrupted sweep resumes where it stopped. FedSign's gamma is chosen
from a grid per (dataset, alpha) by mean final test accuracy, as the paper does (it
reports the best gamma; there is no separate validation split), and the winner is
reported. Outputs under ``--out`` (default ``benchmarks/results``):
``table1_<preset>.csv`` (one row per dataset x alpha x method), ``table1_<preset>.md``
(the paper's layout: rows dataset x alpha, columns the six methods, cells mean +- std)
and ``table1_<preset>_curves.png`` (mean test-accuracy curves).

    python benchmarks/table1.py --preset cpu                 # the reduced CPU preset
    python benchmarks/table1.py --preset paper --data-dir cifar10=/data/cifar10 --data-dir cinic10=/data/cinic10
    python benchmarks/table1.py --preset cpu --aggregate-only # tables from finished cells
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsign.config import RunConfig  # noqa: E402
from fedsign.results import read_metrics  # noqa: E402

METHODS = ("fedavg", "fedprox", "moon", "feddyn", "fedpan", "fedsign")
LABELS = {"fedavg": "FedAvg", "fedprox": "FedProx", "moon": "MOON", "feddyn": "FedDyn",
          "fedpan": "FedPAN", "fedsign": "FedSign"}


@dataclass(frozen=True)
class Preset:
    """A Table-1 grid: the shared run config plus what varies."""

    datasets: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    gammas: tuple[float, ...]
    common: str  # run-config overrides shared by every cell
    seeds_by_method: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def seeds_for(self, method: str) -> tuple[int, ...]:
        return self.seeds_by_method.get(method, self.seeds)


PRESETS = {
    # The paper's §6.2 / Appendix C settings (FedRepo's VGG8 without BN, unweighted averaging).
    "paper": Preset(
        datasets=("cifar10", "cinic10"), alphas=(10.0, 1.0, 0.5), seeds=(0,), gammas=(0.001, 0.01, 0.1),
        common="model='vgg8' num-clients=100 clients-per-round=10 num-rounds=200 local-epochs=5 "
               "batch-size=64 lr=0.03 momentum=0.9 weight-decay=1e-5 weighted=false eval-every=10",
        seeds_by_method={"fedavg": (0, 1, 2, 3, 4), "fedsign": (0, 1, 2, 3, 4)},
    ),
    # Reduced to finish on 2 CPU cores in about two hours, on real data (Fashion-MNIST).
    "cpu": Preset(
        datasets=("fmnist",), alphas=(10.0, 1.0, 0.5), seeds=(0, 1, 2), gammas=(0.001, 0.01, 0.1),
        common="model='cnn' num-clients=100 clients-per-round=5 num-rounds=10 local-epochs=1 "
               "batch-size=64 lr=0.03 momentum=0.9 weight-decay=1e-5 weighted=false eval-every=2",
    ),
}


@dataclass(frozen=True)
class Cell:
    dataset: str
    alpha: float
    method: str
    seed: int
    gamma: float | None = None

    @property
    def name(self) -> str:
        g = f"-g{self.gamma:g}" if self.gamma is not None else ""
        return f"{self.dataset}-a{self.alpha:g}-{self.method}{g}-s{self.seed}"

    def overrides(self, preset: Preset, data_dirs: dict[str, str], out_dir: Path, extra: str) -> str:
        parts = [preset.common, f"strategy='{self.method}' dataset='{self.dataset}' "
                 f"dirichlet-alpha={self.alpha} seed={self.seed} out-dir='{out_dir}'"]
        if self.gamma is not None:
            parts.append(f"fedsign-gamma={self.gamma}")
        if self.dataset in data_dirs:
            parts.append(f"data-dir='{data_dirs[self.dataset]}'")
        parts.append(extra)
        return " ".join(p for p in parts if p)


def cells(preset: Preset, methods: tuple[str, ...]) -> list[Cell]:
    """Every cell, seed-major, so a partial sweep already has whole rows for its first seeds."""
    grid = []
    for seed in sorted({s for m in methods for s in preset.seeds_for(m)}):
        for dataset in preset.datasets:
            for alpha in preset.alphas:
                for method in methods:
                    if seed not in preset.seeds_for(method):
                        continue
                    for gamma in preset.gammas if method == "fedsign" else (None,):
                        grid.append(Cell(dataset, alpha, method, seed, gamma))
    return grid


def run_cell(overrides: str, engine: str) -> None:
    if engine == "inprocess":
        from fedsign.engine import run_inprocess

        logging.getLogger("flwr").setLevel(logging.WARNING)
        run_inprocess(RunConfig.from_overrides(overrides).resolved(), progress=False)
    else:
        subprocess.run([sys.executable, "-m", "fedsign.cli", "simulate", "--run-config", overrides], check=True,
                       stdout=subprocess.DEVNULL)


def aggregate(preset_name: str, preset: Preset, runs: Path, out: Path, methods: tuple[str, ...]) -> str:
    """Write the CSV, markdown table and curves of the finished cells; return the markdown."""
    finished = {c: read_metrics(runs / c.name) for c in cells(preset, methods)
                if (runs / c.name / "model.safetensors").exists()}
    rows, table_rows, curves = [], [], {}
    for dataset in preset.datasets:
        for alpha in preset.alphas:
            cells_md = []
            for method in methods:
                options = preset.gammas if method == "fedsign" else (None,)
                best = None
                for gamma in options:
                    accs = [finished[c][-1]["accuracy"] for c in finished
                            if (c.dataset, c.alpha, c.method, c.gamma) == (dataset, alpha, method, gamma)]
                    if accs and (best is None or statistics.mean(accs) > statistics.mean(best[1])):
                        best = (gamma, accs)
                if best is None:
                    cells_md.append("–")
                    continue
                gamma, accs = best
                mean = statistics.mean(accs)
                std = statistics.stdev(accs) if len(accs) > 1 else None
                rows.append({"dataset": dataset, "alpha": alpha, "method": method, "gamma": gamma,
                             "seeds": len(accs), "mean": mean, "std": std, "accuracies": accs})
                won = f" (γ={gamma:g})" if gamma is not None else ""
                spread = f" ± {100 * std:.2f}" if std is not None else " (1 seed)"
                cells_md.append(f"{100 * mean:.2f}{spread}{won}")
                histories = [finished[c] for c in finished
                             if (c.dataset, c.alpha, c.method, c.gamma) == (dataset, alpha, method, gamma)]
                curves[(dataset, alpha, method)] = _mean_curve(histories)
            table_rows.append(f"| {dataset} | {alpha:g} | " + " | ".join(cells_md) + " |")
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"table1_{preset_name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dataset", "alpha", "method", "gamma", "seeds", "mean", "std",
                                               "accuracies"])
        writer.writeheader()
        writer.writerows(rows)
    header = "| dataset | Dir. α | " + " | ".join(LABELS[m] for m in methods) + " |"
    markdown = "\n".join([header, "|" + "---|" * (len(methods) + 2), *table_rows]) + "\n"
    total = len(cells(preset, methods))
    (out / f"table1_{preset_name}.md").write_text(
        f"Command: `python benchmarks/table1.py --preset {preset_name}` ({len(finished)} of {total} runs "
        f"finished).\nSettings: {preset.common}.\n\n"
        f"Final test accuracy (%), mean ± std over the finished seeds; FedSign's γ chosen per row from "
        f"{', '.join(f'{g:g}' for g in preset.gammas)} by mean accuracy.\n\n{markdown}")
    _plot_curves(curves, preset, methods, out / f"table1_{preset_name}_curves.png")
    return markdown


def _mean_curve(histories: list[list[dict]]) -> tuple[list[int], list[float]]:
    rounds = [r["round"] for r in histories[0] if r.get("accuracy") is not None]
    means = [statistics.mean(next(r["accuracy"] for r in h if r["round"] == rnd) for h in histories)
             for rnd in rounds]
    return rounds, means


def _plot_curves(curves: dict, preset: Preset, methods: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, a) for d in preset.datasets for a in preset.alphas]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (dataset, alpha) in zip(axes[0], panels):
        for method in methods:
            if (dataset, alpha, method) in curves:
                ax.plot(*curves[(dataset, alpha, method)], label=LABELS[method])
        ax.set_title(f"{dataset}, α={alpha:g}")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--engine", choices=("inprocess", "ray"), default="inprocess")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--data-dir", action="append", default=[], metavar="DATASET=PATH")
    parser.add_argument("--extra", default="", help="more run-config overrides for every cell, e.g. \"device='cuda'\"")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--runs", default="", help="cell folders (default <out>/table1_runs/<preset>)")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()

    preset = PRESETS[args.preset]
    methods = tuple(args.methods)
    data_dirs = dict(item.split("=", 1) for item in args.data_dir)
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "table1_runs" / args.preset
    if not args.aggregate_only:
        todo = [c for c in cells(preset, methods) if not (runs / c.name / "model.safetensors").exists()]
        for c in todo:  # validate every cell before the first run starts
            RunConfig.from_overrides(c.overrides(preset, data_dirs, runs / c.name, args.extra))
        for i, c in enumerate(todo, 1):
            start = time.perf_counter()
            cell_dir = runs / c.name
            if cell_dir.exists():  # an interrupted cell restarts from scratch
                shutil.rmtree(cell_dir)
            run_cell(c.overrides(preset, data_dirs, cell_dir, args.extra), args.engine)
            acc = read_metrics(cell_dir)[-1]["accuracy"]
            print(f"[{i}/{len(todo)}] {c.name}: accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(aggregate(args.preset, preset, runs, out, methods))


if __name__ == "__main__":
    main()

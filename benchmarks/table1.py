"""Table 1: strategies x Dirichlet alpha x seeds (x dataset) -> mean +- std of final accuracy.

One run per cell through either engine; a cell whose ``model.safetensors`` exists is
skipped, so an interrupted sweep resumes where it stopped. FedSign's gamma is chosen
from a grid per (dataset, alpha) by mean final test accuracy, as the paper does (it
reports the best gamma; there is no separate validation split), and the winner is
reported. Outputs under ``--out`` (default ``benchmarks/results``):
``table1_<preset>.csv`` (one row per dataset x alpha x method x gamma, the shown gamma
``selected``), ``table1_<preset>.md`` (the paper's layout: rows dataset x alpha, columns the
six methods, cells mean +- std; then FedSign per gamma and every method's difference to
FedAvg paired by seed) and ``table1_<preset>_curves.png`` (mean test-accuracy curves).

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
from dataclasses import dataclass, field, replace
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
# The cpu preset with Eq. 1's reward summed over elements (the literal reading) instead of the default
# per-tensor mean, whose gradient per weight is gamma * sigmoid' / (numel * tensors), below 1e-6 gamma for the
# cnn's large tensors. Only FedSign differs from cpu: run it with --methods fedavg fedsign.
PRESETS["cpu-sum"] = replace(PRESETS["cpu"], common=PRESETS["cpu"].common + " fedsign-reduction='sum'")


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


def final_accuracies(finished: dict[Cell, list[dict]], dataset: str, alpha: float, method: str,
                     gamma: float | None) -> dict[int, float]:
    """Final test accuracy per seed of the finished cells of one (dataset, alpha, method, gamma)."""
    return {c.seed: history[-1]["accuracy"] for c, history in finished.items()
            if (c.dataset, c.alpha, c.method, c.gamma) == (dataset, alpha, method, gamma)}


def summarize(finished: dict[Cell, list[dict]], preset: Preset, methods: tuple[str, ...]) -> list[dict]:
    """One row per (dataset, alpha, method, gamma) with finished cells: per-seed final accuracies, mean,
    std (None for one seed); ``selected`` marks the gamma with the best mean (the only gamma for
    methods without one), which is the one the table shows."""
    rows = []
    for dataset in preset.datasets:
        for alpha in preset.alphas:
            for method in methods:
                options = []
                for gamma in preset.gammas if method == "fedsign" else (None,):
                    accs = final_accuracies(finished, dataset, alpha, method, gamma)
                    if accs:
                        values = list(accs.values())
                        options.append({"dataset": dataset, "alpha": alpha, "method": method, "gamma": gamma,
                                        "seeds": len(values), "mean": statistics.mean(values),
                                        "std": statistics.stdev(values) if len(values) > 1 else None,
                                        "accuracies": accs, "selected": False})
                if options:
                    max(options, key=lambda r: r["mean"])["selected"] = True
                rows.extend(options)
    return rows


def paired_difference(row: dict, baseline: dict) -> dict | None:
    """``row`` minus ``baseline`` on their common seeds (same seed = same partition, sampling and
    initialization): mean and std of the per-seed differences, the paired t-test p-value, and whether
    the mean difference exceeds the seed spread (the larger of the two methods' stds)."""
    seeds = sorted(set(row["accuracies"]) & set(baseline["accuracies"]))
    if not seeds:
        return None
    deltas = [row["accuracies"][s] - baseline["accuracies"][s] for s in seeds]
    result = {"seeds": len(seeds), "mean": statistics.mean(deltas),
              "std": statistics.stdev(deltas) if len(deltas) > 1 else None, "p": None, "beyond_spread": None}
    if len(deltas) > 1:
        from scipy.stats import ttest_rel

        a, b = [row["accuracies"][s] for s in seeds], [baseline["accuracies"][s] for s in seeds]
        result["p"] = float(ttest_rel(a, b).pvalue) if result["std"] else (0.0 if result["mean"] else 1.0)
        spread = max(row["std"] or 0.0, baseline["std"] or 0.0)
        result["beyond_spread"] = abs(result["mean"]) > spread
    return result


def _percent(mean: float, std: float | None, signed: bool = False) -> str:
    text = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return text + (f" ± {100 * std:.2f}" if std is not None else " (1 seed)")


def render_markdown(rows: list[dict], preset_name: str, preset: Preset, methods: tuple[str, ...],
                    finished: int, total: int) -> str:
    """The paper's layout (rows dataset x alpha, columns methods), FedSign per gamma, and the paired
    differences to FedAvg."""
    selected = {(r["dataset"], r["alpha"], r["method"]): r for r in rows if r["selected"]}
    by_gamma = {(r["dataset"], r["alpha"], r["gamma"]): r for r in rows if r["method"] == "fedsign"}
    keys = [(d, a) for d in preset.datasets for a in preset.alphas]

    def table(header: list[str], body: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n"

    main_body = []
    for d, a in keys:
        cells = []
        for m in methods:
            r = selected.get((d, a, m))
            won = f" (γ={r['gamma']:g})" if r and r["gamma"] is not None else ""
            cells.append(_percent(r["mean"], r["std"]) + won if r else "–")
        main_body.append([d, f"{a:g}", *cells])
    parts = [
        f"Command: `python benchmarks/table1.py --preset {preset_name}` ({finished} of {total} runs finished).\n"
        f"Settings: {preset.common}.\n\n"
        f"Final test accuracy (%), mean ± std over seeds; FedSign's γ chosen per row from "
        f"{', '.join(f'{g:g}' for g in preset.gammas)} by mean test accuracy (as the paper, which has no "
        f"validation split; this favours FedSign by a best-of-{len(preset.gammas)} choice).\n",
        table(["dataset", "Dir. α", *(LABELS[m] for m in methods)], main_body),
    ]
    if "fedsign" in methods:
        gamma_body = [[d, f"{a:g}", *(_percent(by_gamma[(d, a, g)]["mean"], by_gamma[(d, a, g)]["std"])
                                      if (d, a, g) in by_gamma else "–" for g in preset.gammas)] for d, a in keys]
        parts += ["FedSign for every γ (%):\n", table(["dataset", "Dir. α", *(f"γ={g:g}" for g in preset.gammas)],
                                                     gamma_body)]
    if "fedavg" in methods and len(methods) > 1:
        others = [m for m in methods if m != "fedavg"]
        diff_body = []
        for d, a in keys:
            cells = []
            for m in others:
                base, row = selected.get((d, a, "fedavg")), selected.get((d, a, m))
                diff = paired_difference(row, base) if base and row else None
                if diff is None:
                    cells.append("–")
                    continue
                note = "" if diff["p"] is None else f" (p={diff['p']:.2f}{', beyond spread' if diff['beyond_spread'] else ''})"
                cells.append(_percent(diff["mean"], diff["std"], signed=True) + note)
            diff_body.append([d, f"{a:g}", *cells])
        parts += ["Difference to FedAvg in accuracy points, paired by seed (same seed = same partition, client "
                  "sampling and initialization): mean ± std of the per-seed differences, paired t-test p; "
                  "\"beyond spread\" when |mean| exceeds the larger of the two methods' seed stds.\n",
                  table(["dataset", "Dir. α", *(LABELS[m] for m in others)], diff_body)]
    return "\n".join(parts)


def aggregate(preset_name: str, preset: Preset, runs: Path, out: Path, methods: tuple[str, ...]) -> str:
    """Write the CSV, markdown tables and curves of the finished cells; return the markdown."""
    finished = {c: read_metrics(runs / c.name) for c in cells(preset, methods)
                if (runs / c.name / "model.safetensors").exists()}
    rows = summarize(finished, preset, methods)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"table1_{preset_name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dataset", "alpha", "method", "gamma", "selected", "seeds", "mean",
                                               "std", "accuracies"])
        writer.writeheader()
        writer.writerows({**r, "accuracies": " ".join(f"{s}:{acc}" for s, acc in sorted(r["accuracies"].items()))}
                         for r in rows)
    markdown = render_markdown(rows, preset_name, preset, methods, len(finished), len(cells(preset, methods)))
    (out / f"table1_{preset_name}.md").write_text(markdown)
    curves = {(r["dataset"], r["alpha"], r["method"]): _mean_curve(
        [finished[c] for c in finished if (c.dataset, c.alpha, c.method, c.gamma)
         == (r["dataset"], r["alpha"], r["method"], r["gamma"])]) for r in rows if r["selected"]}
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
    drawn = [ax for ax in axes[0] if ax.lines]
    if drawn:
        drawn[-1].legend(fontsize=7)
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
    bad = [item for item in args.data_dir if "=" not in item or item.split("=", 1)[0] not in preset.datasets]
    if bad:
        parser.error(f"--data-dir {bad[0]!r}: write DATASET=PATH with DATASET one of {', '.join(preset.datasets)}")
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

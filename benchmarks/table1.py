"""Table 1: methods x Dirichlet alpha x seeds (x dataset), each method tuned on a validation split.

Protocol (the same for every preset and method):

1. **Tuning** on the tuning seed (0): every method runs every value of its grid
   (``TUNING_GRIDS``; FedAvg has none). The value with the best *validation* accuracy is
   selected per (dataset, alpha, method); the validation split is held out from the
   training clients' data (run-config ``validation-fraction``), never the test set.
2. **Seeds**: the selected value runs on every seed of the preset (the tuning run is
   reused for seed 0). A seed changes partition, client sampling and initialization together.
3. **Report**: test accuracy mean +- std over seeds at the selected values, the paired
   difference to FedAvg (same seeds) with its paired t-test p-value, and, for comparison with
   the paper (which reports the best gamma on test), a "best on test" column from the tuning seed.

"Final accuracy" is the mean of a run's last ``FINAL_WINDOW`` evaluations (eval-every rounds
apart), which damps the round-to-round swing of non-IID training. FedDyn is reported, as its
official code does, by the plain average of the round's participants (``participant_mean_*``
columns); its server model is in metrics.csv too.

Cells run through the in-process engine (``--engine vectorized`` or ``ray`` also work). A cell
whose ``summary.json`` says "finished" is done, so an interrupted sweep resumes (an interrupted cell restarts
from round 1, so cells write no per-round checkpoints: ``checkpoint-every=0``); every cell is claimed
with a lock file, so several processes (``--workers N``, or the same command started again on
another GPU) share one sweep without running or deleting each other's cells.

    python benchmarks/table1.py --preset cpu-full --workers 2          # the CPU table (both cores)
    python benchmarks/table1.py --preset cpu-converged --workers 2     # the small-data CPU protocol
    python benchmarks/table1.py --preset paper --datasets cifar10 --data-dir cifar10=/data/cifar10
    python benchmarks/table1.py --preset cpu-converged --aggregate-only  # tables from finished cells
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsign.algorithms import ALGORITHMS  # noqa: E402
from fedsign.config import ConfigError, RunConfig, merge_overrides  # noqa: E402
from fedsign.results import read_metrics  # noqa: E402

METHODS = tuple(ALGORITHMS)


@dataclass(frozen=True)
class Variant:
    """A registered method run with other fixed settings (the reduction study): its own grid and label."""

    method: str  # the registered algorithm it runs
    label: str
    reduction: str  # its fedsign-reduction
    grid: tuple[str, tuple[float, ...]]

    @property
    def overrides(self) -> str:
        """Run-config overrides that make the variant."""
        return f"fedsign-reduction='{self.reduction}'"


# FedSign under the other reductions of Eq. 1 (clients/fedsign.py). Each grid is the paper's {0.001, 0.01, 0.1}
# plus the neighbouring decade on the side the reduction's strength points to: `sum` is N^(1/4) (21x for the
# MLP) stronger than `root4`, so it adds 1e-4; `mean` is ~1e4x weaker, so it adds 1.
VARIANTS = {
    "fedsign-sum": Variant("fedsign", "FedSign (sum)", "sum",
                           ("fedsign-gamma", (0.0001, 0.001, 0.01, 0.1))),
    "fedsign-mean": Variant("fedsign", "FedSign (mean)", "mean",
                            ("fedsign-gamma", (0.001, 0.01, 0.1, 1.0))),
}
LABELS = {**{name: a.label for name, a in ALGORITHMS.items()}, **{n: v.label for n, v in VARIANTS.items()}}
# (run-config key, values) each method is tuned over; None: nothing to tune (FedAvg).
TUNING_GRIDS: dict[str, tuple[str, tuple[float, ...]] | None] = {
    **{name: a.tuning for name, a in ALGORITHMS.items()}, **{n: v.grid for n, v in VARIANTS.items()}}
# The metrics.csv column prefix of the model each method reports ("" = the server's global model).
REPORTED_MODEL = {**{name: a.reported_model for name, a in ALGORITHMS.items()},
                  **{n: ALGORITHMS[v.method].reported_model for n, v in VARIANTS.items()}}
FINAL_WINDOW = 3
# Cells run method by method in this order (tuning, then the selected value's seeds), so a partial sweep
# already has the paper's comparison, FedSign against FedAvg, on every seed, then the reduction study.
RUN_ORDER = ("fedavg", "fedsign", *VARIANTS, *(m for m in METHODS if m not in ("fedavg", "fedsign")))


@dataclass(frozen=True)
class Preset:
    """A Table-1 grid: the run config shared by every cell plus what varies."""

    datasets: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]  # the first is the tuning seed
    common: str  # run-config overrides shared by every cell
    engine: str = "inprocess"
    convergence_check: bool = False  # also run FedAvg at twice the rounds on the tuning seed
    reduction_alphas: tuple[float, ...] = ()  # the FedSign reduction study (VARIANTS) at these alphas
    reduction_seeds: int = 3  # ... on the first seeds

    def config(self, extra: str = "") -> RunConfig:
        return RunConfig.from_overrides(merge_overrides(self.common, extra), validate=False)

    def groups(self, methods: tuple[str, ...], datasets: tuple[str, ...]) -> list[tuple[str, float, str]]:
        """Every (dataset, alpha, method) of the grid: the methods at every alpha, and the reduction
        variants (when FedSign is among the methods) at ``reduction_alphas``."""
        variants = [v for v, variant in VARIANTS.items() if variant.method in methods]
        return [(d, a, m) for d in datasets for a in self.alphas for m in methods] + \
               [(d, a, v) for d in datasets for a in self.reduction_alphas for v in variants]

    def seeds_of(self, method: str) -> tuple[int, ...]:
        return self.seeds[:self.reduction_seeds] if method in VARIANTS else self.seeds


PRESETS = {
    # The paper's §6.2 / Appendix C settings: FedRepo's VGG8 (no BN), per-client (FedRepo) Dirichlet
    # partition, unweighted averaging, 100 clients, 10 per round, E = 5, B = 64, 200 rounds, gradient
    # norm clipped at 100 (FedRepo's config.py max_grad_norm, every method).
    "paper": Preset(
        datasets=("cifar10", "cinic10"), alphas=(10.0, 1.0, 0.5), seeds=(0, 1, 2),
        common="model='vgg8' num-clients=100 clients-per-round=10 num-rounds=200 local-epochs=5 "
               "batch-size=64 lr=0.03 momentum=0.9 weight-decay=1e-5 grad-clip=100.0 weighted=false "
               "eval-every=10 partition-style='per-client' validation-fraction=0.1 checkpoint-every=0 init='fedrepo'",
        engine="vectorized",
    ),
    # The paper's structure (100 clients, 10 % per round, E = 5, B = 64, SGD lr 0.03 / momentum 0.9 /
    # wd 1e-5, gradient norm clipped at 100, unweighted mean, alpha in {10, 1, 0.5}) with the data and the
    # model shrunk to fit one CPU core: a fixed 6,000-image stratified subset of Fashion-MNIST (600 held out
    # for validation, ~54 images per client) and McMahan et al.'s 2NN MLP (~15x cheaper per step than
    # cnn_small). 400 rounds (FedAvg within 1 point of its accuracy at 800: README, convergence check); 5 seeds.
    "cpu-converged": Preset(
        datasets=("fmnist",), alphas=(10.0, 1.0, 0.5), seeds=(0, 1, 2, 3, 4),
        common="model='mlp' num-clients=100 clients-per-round=10 num-rounds=400 local-epochs=5 "
               "batch-size=64 lr=0.03 momentum=0.9 weight-decay=1e-5 grad-clip=100.0 weighted=false "
               "eval-every=10 train-samples=6000 validation-fraction=0.1 checkpoint-every=0 init='fedrepo'",
        convergence_check=True,
    ),
    # The paper's client-data scale on one CPU core: the paper preset's structure (100 clients, 10 per round,
    # E = 5, B = 64, SGD lr 0.03 / momentum 0.9 / wd 1e-5, clip 100, unweighted mean) with the per-class
    # Dirichlet partition (the paper's per-client style costs FedAvg only 1.5 points from alpha 10 to 0.5 here,
    # seed 0, 200 rounds: benchmarks/README.md) on the full Fashion-MNIST train split (10 % held out for validation: ~540 images
    # and ~45 local steps per client and round, as the paper's ~500 / ~40), McMahan et al.'s 2NN MLP with
    # FedRepo's init, alpha down to 0.1 (beyond the paper), 5 seeds, 200 rounds with the 400-round check;
    # and the FedSign reduction study (VARIANTS) at alpha 0.5 and 0.1 on 3 seeds.
    "cpu-full": Preset(
        datasets=("fmnist",), alphas=(10.0, 1.0, 0.5, 0.1), seeds=(0, 1, 2, 3, 4),
        common="model='mlp' init='fedrepo' num-clients=100 clients-per-round=10 num-rounds=200 local-epochs=5 "
               "batch-size=64 lr=0.03 momentum=0.9 weight-decay=1e-5 grad-clip=100.0 weighted=false "
               "eval-every=10 partition-style='per-class' validation-fraction=0.1 checkpoint-every=0",
        convergence_check=True, reduction_alphas=(0.5, 0.1), reduction_seeds=3,
    ),
    # The earlier CPU protocol, kept to reproduce its committed table (table1_cpu-cnn.*): cnn_small, 200
    # rounds, no clipping. A fixed-budget comparison: FedAvg still gains 1.2-2.3 points from 200 to 400.
    "cpu-cnn": Preset(
        datasets=("fmnist",), alphas=(10.0, 1.0, 0.5), seeds=(0, 1, 2),
        common="model='cnn_small' num-clients=100 clients-per-round=10 num-rounds=200 local-epochs=5 "
               "batch-size=64 lr=0.03 momentum=0.9 weight-decay=1e-5 weighted=false eval-every=10 "
               "train-samples=6000 validation-fraction=0.1 checkpoint-every=0 init='fedrepo'",
        convergence_check=True,
    ),
    # Smallest real run of the whole machinery (tests, GPU-kit dry runs): digits, 3 rounds.
    "smoke": Preset(
        datasets=("digits",), alphas=(0.5,), seeds=(0, 1), convergence_check=True,
        common="model='cnn' num-clients=10 clients-per-round=5 num-rounds=3 local-epochs=1 batch-size=32 "
               "lr=0.05 momentum=0.9 weighted=false eval-every=1 validation-fraction=0.2 init='fedrepo'",
    ),
}


@dataclass(frozen=True)
class Cell:
    """One run: a method at one hyperparameter value (None: untuned) on one dataset, alpha and seed."""

    dataset: str
    alpha: float
    method: str
    seed: int
    value: float | None = None
    rounds_factor: int = 1  # 2: the convergence check's double-length run

    @property
    def name(self) -> str:
        grid = TUNING_GRIDS[self.method]
        value = f"-{grid[0]}{self.value:g}" if grid and self.value is not None else ""
        longer = f"-x{self.rounds_factor}" if self.rounds_factor != 1 else ""
        return f"{self.dataset}-a{self.alpha:g}-{self.method}{value}-s{self.seed}{longer}"

    @property
    def group(self) -> tuple[str, float, str]:
        return self.dataset, self.alpha, self.method

    def overrides(self, preset: Preset, data_dirs: dict[str, str], out_dir: Path, extra: str) -> str:
        variant = VARIANTS.get(self.method)
        parts = [preset.common, f"strategy='{variant.method if variant else self.method}' dataset='{self.dataset}' "
                 f"dirichlet-alpha={self.alpha} seed={self.seed} out-dir='{out_dir}'",
                 variant.overrides if variant else ""]
        grid = TUNING_GRIDS[self.method]
        if grid and self.value is not None:
            parts.append(f"{grid[0]}={self.value}")
        if self.dataset in data_dirs:
            parts.append(f"data-dir='{data_dirs[self.dataset]}'")
        parts.append(extra)
        if self.rounds_factor != 1:
            parts.append(f"num-rounds={preset.config(extra).num_rounds * self.rounds_factor}")
        return merge_overrides(*parts)


def tuning_cells(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...]) -> list[Cell]:
    """Every grid value of every method (and reduction variant) on the tuning seed, plus the convergence check."""
    grid = []
    for d, a, m in preset.groups(methods, datasets):
        values = TUNING_GRIDS[m][1] if TUNING_GRIDS[m] else (None,)
        grid += [Cell(d, a, m, preset.seeds[0], v) for v in values]
    if preset.convergence_check and "fedavg" in methods:
        grid += [Cell(d, a, "fedavg", preset.seeds[0], None, rounds_factor=2) for d in datasets for a in preset.alphas]
    return grid


def seed_cells(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...],
               selected: dict[tuple[str, float, str], float | None]) -> list[Cell]:
    """The selected value of each (dataset, alpha, method) with a finished tuning on the other seeds."""
    return [Cell(d, a, m, seed, selected[(d, a, m)]) for d, a, m in preset.groups(methods, datasets)
            if (d, a, m) in selected for seed in preset.seeds_of(m)[1:]]


# ----------------------------------------------------------------------------- reading cells
def final_value(history: list[dict], column: str) -> float | None:
    """Mean of ``column`` over a run's last ``FINAL_WINDOW`` evaluations."""
    values = [r[column] for r in history if r.get(column) is not None]
    return statistics.mean(values[-FINAL_WINDOW:]) if values else None


def last_value(history: list[dict], column: str) -> float | None:
    """``column`` in the last round that has it."""
    return next((r[column] for r in reversed(history) if r.get(column) is not None), None)


def cell_summary(cell: Cell, history: list[dict]) -> dict:
    """Final test and validation accuracy of the reported model, term strength and sign consistency."""
    prefix = REPORTED_MODEL.get(cell.method, "")
    ratios = [r["term_grad_ratio"] for r in history if r.get("term_grad_ratio") is not None]
    return {"test": final_value(history, f"{prefix}accuracy"), "val": final_value(history, f"{prefix}val_accuracy"),
            "term_grad_ratio": statistics.median(ratios) if ratios else None,
            "ssr_clients": final_value(history, "ssr_clients"),
            "weight_norm": last_value(history, "weight_norm"), "weights_over_1": last_value(history, "weights_over_1"),
            "peak_weight_norm": max((r["weight_norm"] for r in history if r.get("weight_norm") is not None),
                                    default=None),
            "curve": [(r["round"], r[f"{prefix}accuracy"]) for r in history if r.get(f"{prefix}accuracy") is not None]}


def cell_done(folder: Path) -> bool:
    """Whether the cell's run finished (its summary.json says so; metrics.csv, config.json and summary.json
    are all a table needs, so a folder of those alone, e.g. a committed archive, counts as done)."""
    try:
        return json.loads((folder / "summary.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


def finished_cells(runs: Path, cells: list[Cell]) -> dict[Cell, dict]:
    return {c: cell_summary(c, read_metrics(runs / c.name)) for c in cells
            if cell_done(runs / c.name)}


def select_values(tuned: dict[Cell, dict], preset: Preset, methods: tuple[str, ...],
                  datasets: tuple[str, ...], key: str = "val") -> dict[tuple[str, float, str], float | None]:
    """Per (dataset, alpha, method) whose tuning finished: the grid value with the best ``key`` accuracy
    (``"val"``: the selection rule; ``"test"``: the paper's best-on-test)."""
    selected = {}
    for d, a, m in preset.groups(methods, datasets):
        values = TUNING_GRIDS[m][1] if TUNING_GRIDS[m] else (None,)
        runs = [(tuned.get(Cell(d, a, m, preset.seeds[0], v)), v) for v in values]
        if all(r is not None and r[key] is not None for r, _ in runs):
            selected[(d, a, m)] = max(runs, key=lambda rv: rv[0][key])[1]
    return selected


# ----------------------------------------------------------------------------- running cells
class CellLock:
    """``<cell>.lock`` created exclusively, holding the owner's PID; a lock whose PID is gone is stale."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._owner_alive():
                    return False
                self.path.unlink(missing_ok=True)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return True
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def _owner_alive(self) -> bool:
        try:
            pid = int(self.path.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            return False
        except PermissionError:
            return True
        return pid > 0


def run_cell(overrides: str, engine: str) -> None:
    if engine == "ray":
        subprocess.run([sys.executable, "-m", "fedsign.cli", "simulate", "--run-config", overrides], check=True,
                       stdout=subprocess.DEVNULL)
        return
    from fedsign.engines import run_inprocess

    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_inprocess(RunConfig.from_overrides(f"{overrides} engine='{engine}'").resolved(), progress=False)


def validate_cells(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], data_dirs: dict[str, str],
                   runs: Path, extra: str) -> None:
    """Validate one cell per dataset x method x grid value before anything runs (bad config or data: exit 2)."""
    for cell in tuning_cells(preset, methods, datasets):
        try:
            RunConfig.from_overrides(cell.overrides(preset, data_dirs, runs / cell.name, extra))
        except ConfigError as err:
            hint = f" (or leave it out: --datasets {' '.join(d for d in datasets if d != cell.dataset)})" \
                if len(datasets) > 1 else ""
            sys.exit(f"error: cell {cell.name}: {err}{hint}")


def next_cell(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], runs: Path
              ) -> tuple[Cell | None, CellLock | None, bool]:
    """(cell, its lock) to run next; (None, None, waiting) when none is free, ``waiting`` if some cells
    are still running elsewhere or wait for a tuning that runs elsewhere."""
    tuning = tuning_cells(preset, methods, datasets)
    tuned = finished_cells(runs, tuning)
    seeds = seed_cells(preset, methods, datasets, select_values(tuned, preset, methods, datasets))
    candidates = sorted(tuning + seeds, key=lambda c: (c.rounds_factor, RUN_ORDER.index(c.method)))  # checks last
    waiting = len(select_values(tuned, preset, methods, datasets)) < len(preset.groups(methods, datasets))
    for cell in candidates:
        if cell_done(runs / cell.name):
            continue
        lock = CellLock(runs / f"{cell.name}.lock")
        if lock.acquire():
            return cell, lock, waiting
        waiting = True
    return None, None, waiting


def work(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], data_dirs: dict[str, str],
         runs: Path, extra: str, engine: str, time_budget: float) -> int:
    """Run cells until none is left; with a ``time_budget`` (seconds), start no cell that would end past it
    at the mean duration of the cells this process ran so far. Return how many ran."""
    start, durations = time.perf_counter(), []
    while time_budget <= 0 or time.perf_counter() - start + (statistics.mean(durations) if durations else 0) \
            < time_budget:
        cell, lock, waiting = next_cell(preset, methods, datasets, runs)
        if cell is None:
            if not waiting:
                break
            time.sleep(10)  # another process holds the remaining cells or the tunings they wait for
            continue
        try:
            cell_dir = runs / cell.name
            if cell_dir.exists():  # an interrupted cell (its lock was stale) restarts from scratch
                shutil.rmtree(cell_dir)
            began = time.perf_counter()
            run_cell(cell.overrides(preset, data_dirs, cell_dir, extra), engine)
            summary = cell_summary(cell, read_metrics(cell_dir))
            durations.append(time.perf_counter() - began)
            print(f"[pid {os.getpid()}] {cell.name}: test {summary['test']:.4f} val {summary['val'] or 0:.4f} "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)
        finally:
            lock.release()
    return len(durations)


# ----------------------------------------------------------------------------- statistics and tables
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


def summarize(finished: dict[Cell, dict], preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...]
              ) -> list[dict]:
    """One row per (dataset, alpha, method) with a selected value: per-seed test accuracies at that value,
    mean and std, the validation accuracy it was chosen by, and the best-on-test value of the tuning seed."""
    tuned = {c: s for c, s in finished.items() if c.seed == preset.seeds[0] and c.rounds_factor == 1}
    selected = select_values(tuned, preset, methods, datasets)
    best_on_test = select_values(tuned, preset, methods, datasets, key="test")
    rows = []
    for (d, a, m), value in selected.items():
        accs = {c.seed: s["test"] for c, s in finished.items()
                if (c.dataset, c.alpha, c.method, c.value, c.rounds_factor) == (d, a, m, value, 1)}
        values = list(accs.values())
        best = best_on_test[(d, a, m)]
        rows.append({"dataset": d, "alpha": a, "method": m, "key": TUNING_GRIDS[m][0] if TUNING_GRIDS[m] else "",
                     "value": value, "seeds": len(values), "mean": statistics.mean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else None, "accuracies": accs,
                     "val": tuned[Cell(d, a, m, preset.seeds[0], value)]["val"], "best_test_value": best,
                     "best_test": tuned[Cell(d, a, m, preset.seeds[0], best)]["test"]})
    return rows


def _percent(mean: float, std: float | None, signed: bool = False) -> str:
    text = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return text + (f" ± {100 * std:.2f}" if std is not None else " (1 seed)")


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _difference(diff: dict | None) -> str:
    """A paired difference as the tables print it (mean ± std, p, within/beyond the seed spread)."""
    if diff is None:
        return "–"
    verdict = "" if diff["p"] is None else (
        f" (p={diff['p']:.2f}, {'beyond' if diff['beyond_spread'] else 'within'} seed spread)")
    return _percent(diff["mean"], diff["std"], signed=True) + verdict


def _difference_plain(high: dict | None, low: dict | None) -> str:
    """``high`` minus ``low`` paired by seed (the cost of heterogeneity), or – when either is missing."""
    if high is None or low is None:
        return "–"
    seeds = sorted(set(high["accuracies"]) & set(low["accuracies"]))
    deltas = [high["accuracies"][s] - low["accuracies"][s] for s in seeds]
    return _percent(statistics.mean(deltas), statistics.stdev(deltas) if len(deltas) > 1 else None, signed=True) \
        if deltas else "–"


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n"


def _value(row: dict | None, value: float | None) -> str:
    return "" if row is None or value is None else f" ({row['key']}={value:g})"


def render_markdown(rows: list[dict], finished: dict[Cell, dict], preset_name: str, preset: Preset,
                    methods: tuple[str, ...], datasets: tuple[str, ...], total: int) -> str:
    """Tables: selected values (paper layout), best-on-test, paired differences to FedAvg, FedSign per gamma,
    and the convergence check."""
    by_key = {(r["dataset"], r["alpha"], r["method"]): r for r in rows}
    keys = [(d, a) for d in datasets for a in preset.alphas]
    style = preset.config().partition_style
    parts = [
        f"Command: `python benchmarks/table1.py --preset {preset_name}` ({len(finished)} of {total} runs finished).\n"
        f"Settings: {preset.common}. Dirichlet partition style: **{style}**"
        f"{' (FedRepo: each client draws its class mix)' if style == 'per-client' else ' (NIID-Bench: each class drawn over clients)'}.\n\n"
        f"Test accuracy (%) at the value selected on the validation split (tuning seed {preset.seeds[0]}), mean ± std "
        f"over seeds {', '.join(map(str, preset.seeds))}; accuracy = mean of each run's last {FINAL_WINDOW} "
        f"evaluations. FedDyn: participants' average (as its official code reports).\n",
        _table(["dataset", "Dir. α", *(LABELS[m] for m in methods)],
               [[d, f"{a:g}", *(_percent(by_key[(d, a, m)]["mean"], by_key[(d, a, m)]["std"])
                                + _value(by_key[(d, a, m)], by_key[(d, a, m)]["value"])
                                if (d, a, m) in by_key else "–" for m in methods)] for d, a in keys]),
        f"Best on test (seed {preset.seeds[0]} only, the paper's choice of γ): test accuracy (%) of the grid value "
        f"with the best test accuracy; it favours every tuned method by a best-of-3 choice on the test set.\n",
        _table(["dataset", "Dir. α", *(LABELS[m] for m in methods)],
               [[d, f"{a:g}", *(f"{100 * by_key[(d, a, m)]['best_test']:.2f}"
                                + _value(by_key[(d, a, m)], by_key[(d, a, m)]["best_test_value"])
                                if (d, a, m) in by_key else "–" for m in methods)] for d, a in keys]),
    ]
    if "fedavg" in methods and len(methods) > 1:
        others = [m for m in methods if m != "fedavg"]
        body = []
        for d, a in keys:
            cells = []
            for m in others:
                base, row = by_key.get((d, a, "fedavg")), by_key.get((d, a, m))
                cells.append(_difference(paired_difference(row, base) if base and row else None))
            body.append([d, f"{a:g}", *cells])
        parts += ["Difference to FedAvg in accuracy points, paired by seed: mean ± std of the per-seed differences, "
                  "paired t-test p; \"within seed spread\" when |mean| does not exceed the larger of the two methods' "
                  "seed stds (then the difference is noise at this number of seeds).\n",
                  _table(["dataset", "Dir. α", *(LABELS[m] for m in others)], body)]
    if "fedsign" in methods:
        variants = [("fedsign", "root4", preset.alphas)] + [
            (v, VARIANTS[v].reduction, preset.reduction_alphas) for v in VARIANTS if preset.reduction_alphas]
        body = []
        for method, reduction, alphas in variants:
            for d in datasets:
                for a in alphas:
                    base = finished.get(Cell(d, a, "fedavg", preset.seeds[0]))
                    for gamma in TUNING_GRIDS[method][1]:
                        s = finished.get(Cell(d, a, method, preset.seeds[0], gamma))
                        if s is None:
                            continue
                        body.append([d, f"{a:g}", reduction, f"{gamma:g}", f"{100 * s['test']:.2f}",
                                     f"{100 * s['val']:.2f}", _number(s["term_grad_ratio"], ".3g"),
                                     _number(s["ssr_clients"], ".4f"), _number(base and base["ssr_clients"], ".4f"),
                                     _number(s.get("weight_norm"), ".1f"), _number(s.get("peak_weight_norm"), ".1f"),
                                     _number(s.get("weights_over_1"), ".2%"),
                                     _number(base and base.get("weight_norm"), ".1f")])
        parts += [f"FedSign per reduction and γ on seed {preset.seeds[0]}: test and validation accuracy (%), the "
                  "median over rounds of term_grad_ratio (‖∇term‖/‖∇CE‖ on the first local step, median over the "
                  "round's clients), the clients' sign-consistency ratio with the global model they received (mean "
                  f"of the last {FINAL_WINDOW} evaluated rounds) beside FedAvg's, and the global model's weight norm "
                  "(final, peak over rounds), its share of weights with |θ| > 1 (final) and FedAvg's final norm.\n",
                  _table(["dataset", "Dir. α", "reduction", "γ", "test", "val", "term_grad_ratio", "client SSR",
                          "FedAvg SSR", "‖θ‖", "peak ‖θ‖", "|θ|>1", "FedAvg ‖θ‖"], body)]
    if preset.reduction_alphas and "fedsign" in methods:
        body = []
        seeds = set(preset.seeds[:preset.reduction_seeds])
        for d in datasets:
            for a in preset.reduction_alphas:
                base = by_key.get((d, a, "fedavg"))
                for method in ("fedsign", *VARIANTS):
                    row = by_key.get((d, a, method))
                    if row is None:
                        continue
                    row = {**row, "accuracies": {k: v for k, v in row["accuracies"].items() if k in seeds}}
                    values = list(row["accuracies"].values())
                    row.update(mean=statistics.mean(values), std=statistics.stdev(values) if len(values) > 1 else None)
                    base3 = base and {**base, "accuracies": {k: v for k, v in base["accuracies"].items() if k in seeds}}
                    if base3:
                        b = list(base3["accuracies"].values())
                        base3.update(std=statistics.stdev(b) if len(b) > 1 else None)
                    diff = paired_difference(row, base3) if base3 else None
                    tuned = finished.get(Cell(d, a, method, preset.seeds[0], row["value"]), {})
                    body.append([d, f"{a:g}", "root4" if method == "fedsign" else VARIANTS[method].reduction,
                                 f"{row['value']:g}", f"{_percent(row['mean'], row['std'])} ({len(values)} seeds)",
                                 _difference(diff), _number(tuned.get("term_grad_ratio"), ".3g"),
                                 _number(tuned.get("ssr_clients"), ".4f")])
        parts += [f"FedSign by reduction of Eq. 1 (each tuned on validation over its γ grid, seed {preset.seeds[0]}; "
                  f"seeds {', '.join(map(str, sorted(seeds)))}): test accuracy (%) at the selected γ, the paired "
                  "difference to FedAvg on the same seeds, term_grad_ratio and client SSR at the selected γ "
                  "(tuning seed). Grids: root4 {0.001, 0.01, 0.1}; "
                  + "; ".join(f"{v.reduction} {{{', '.join(f'{g:g}' for g in v.grid[1])}}}"
                              for v in VARIANTS.values()) + ".\n",
                  _table(["dataset", "Dir. α", "reduction", "γ", "test", "− FedAvg", "term_grad_ratio", "client SSR"],
                         body)]
    if "fedavg" in methods and len(preset.alphas) > 1:
        top = max(preset.alphas)
        body = [[d, *(_difference_plain(by_key.get((d, top, "fedavg")), by_key.get((d, a, "fedavg")))
                      for a in preset.alphas if a != top)] for d in datasets]
        parts += [f"FedAvg cost of heterogeneity: accuracy points at Dir. α = {top:g} minus at each α (mean over "
                  "seeds; paired by seed, ± std of the per-seed differences).\n",
                  _table(["dataset", *(f"α {top:g} − α {a:g}" for a in preset.alphas if a != top)], body)]
    checks = []
    for d, a in keys:
        short = finished.get(Cell(d, a, "fedavg", preset.seeds[0]))
        long = finished.get(Cell(d, a, "fedavg", preset.seeds[0], None, rounds_factor=2))
        if short and long:
            gap = 100 * (long["test"] - short["test"])
            checks.append([d, f"{a:g}", f"{100 * short['test']:.2f}", f"{100 * long['test']:.2f}", f"{gap:+.2f}",
                           "yes" if abs(gap) <= 1 else "no"])
    if checks:
        rounds = preset.config().num_rounds
        parts += [f"Convergence check (FedAvg, seed {preset.seeds[0]}): test accuracy (%) after {rounds} and "
                  f"{2 * rounds} rounds; converged when within 1 point.\n",
                  _table(["dataset", "Dir. α", f"{rounds} rounds", f"{2 * rounds} rounds", "gain", "converged"], checks)]
    return "\n".join(parts)


def aggregate(preset_name: str, preset: Preset, runs: Path, out: Path, methods: tuple[str, ...],
              datasets: tuple[str, ...]) -> str:
    """Write ``table1_<preset>.{csv,md}`` and ``table1_<preset>_curves.png`` from the finished cells."""
    tuning = tuning_cells(preset, methods, datasets)
    finished = finished_cells(runs, tuning)
    seeds = seed_cells(preset, methods, datasets, select_values(finished, preset, methods, datasets))
    finished.update(finished_cells(runs, seeds))
    rows = summarize(finished, preset, methods, datasets)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"table1_{preset_name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dataset", "alpha", "method", "key", "value", "seeds", "mean", "std",
                                               "accuracies", "val", "best_test_value", "best_test"])
        writer.writeheader()
        writer.writerows({**r, "accuracies": " ".join(f"{s}:{acc}" for s, acc in sorted(r["accuracies"].items()))}
                         for r in rows)
    (out / f"table1_{preset_name}_cells.json").write_text(json.dumps(
        {c.name: {k: v for k, v in s.items() if k != "curve"} for c, s in sorted(finished.items(),
                                                                                    key=lambda cs: cs[0].name)},
        indent=1) + "\n")
    total = len(tuning) + sum(len(preset.seeds_of(m)) - 1 for _, _, m in preset.groups(methods, datasets))
    markdown = render_markdown(rows, finished, preset_name, preset, methods, datasets, total)
    (out / f"table1_{preset_name}.md").write_text(markdown)
    curves = {}
    for r in rows:
        histories = [s["curve"] for c, s in finished.items()
                     if (c.dataset, c.alpha, c.method, c.value, c.rounds_factor) == (r["dataset"], r["alpha"],
                                                                                      r["method"], r["value"], 1)]
        rounds = [rnd for rnd, _ in histories[0]]
        curves[(r["dataset"], r["alpha"], r["method"])] = (
            rounds, [statistics.mean(dict(h)[rnd] for h in histories) for rnd in rounds])
    _plot_curves(curves, preset, methods, datasets, out / f"table1_{preset_name}_curves.png")
    return markdown


def _plot_curves(curves: dict, preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...],
                 path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, a) for d in datasets for a in preset.alphas]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (dataset, alpha) in zip(axes[0], panels):
        for method in methods:
            if (dataset, alpha, method) in curves:
                ax.plot(*curves[(dataset, alpha, method)], label=LABELS[method])
        ax.set_title(f"{dataset}, α={alpha:g} (mean over seeds)")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    drawn = [ax for ax in axes[0] if ax.lines]
    if drawn:
        drawn[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
        if args.workers > 1:  # more processes of this same command; each claims cells by lock
            command = [sys.executable, __file__, *[a for a in (argv if argv is not None else sys.argv[1:])]]
            workers = [subprocess.Popen([*command, "--workers", "1"]) for _ in range(args.workers - 1)]
            work(preset, methods, datasets, data_dirs, runs, args.extra, engine, args.time_budget)
            if any(w.wait() for w in workers):
                sys.exit("error: a worker process failed; rerun the same command to resume")
        else:
            work(preset, methods, datasets, data_dirs, runs, args.extra, engine, args.time_budget)
    print(aggregate(args.preset, preset, runs, out, methods, datasets))
    if args.archive:
        archive_cells(runs, Path(args.archive))


ARCHIVED_FILES = ("metrics.csv", "config.json", "summary.json")


def archive_cells(runs: Path, archive: Path) -> int:
    """Copy the ``ARCHIVED_FILES`` of every finished cell folder under ``runs`` into ``archive``; return how many."""
    done = [folder for folder in sorted(runs.iterdir()) if folder.is_dir() and cell_done(folder)]
    for folder in done:
        (archive / folder.name).mkdir(parents=True, exist_ok=True)
        for name in ARCHIVED_FILES:
            shutil.copyfile(folder / name, archive / folder.name / name)
    print(f"archived {len(done)} finished cells in {archive}")
    return len(done)


if __name__ == "__main__":
    main()

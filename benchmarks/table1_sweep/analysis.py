"""Reading finished cells, selecting each method's value on validation, and the paired statistics."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from fedsign.results import read_metrics
from table1_sweep.grid import FINAL_WINDOW, REPORTED_MODEL, TUNING_GRIDS, Cell, Preset

SIGNIFICANCE = 0.05  # a paired difference with a paired t-test p below this is a verdict, not noise


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


def verdict(diff: dict) -> str:
    """A method against a baseline in plain words from their paired difference: "beats" or "loses to" when the
    paired t-test p is below ``SIGNIFICANCE`` and the mean difference exceeds the seed spread, else "within
    noise of" (so always on one common seed)."""
    if diff["p"] is None or diff["p"] >= SIGNIFICANCE or not diff["beyond_spread"]:
        return "within noise of"
    return "beats" if diff["mean"] > 0 else "loses to"


def missing_runs(finished: dict[Cell, dict], preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...]
                 ) -> list[dict]:
    """Per (dataset, alpha, method) with runs still to finish: its grid values not yet tuned on the tuning seed,
    its other seeds not yet run at the selected value (``value``; ``selected`` False while tuning is unfinished,
    then every other seed is missing), and the counts; then the unfinished convergence checks (``check``)."""
    selected = select_values(finished, preset, methods, datasets)
    missing = []
    for d, a, m in preset.groups(methods, datasets):
        values = TUNING_GRIDS[m][1] if TUNING_GRIDS[m] else (None,)
        untuned = [v for v in values if Cell(d, a, m, preset.seeds[0], v) not in finished]
        others = preset.seeds_of(m)[1:]
        value = selected.get((d, a, m))
        seeds = [s for s in others if (d, a, m) not in selected or Cell(d, a, m, s, value) not in finished]
        if untuned or seeds:
            total = len(values) + len(others)
            missing.append({"dataset": d, "alpha": a, "method": m, "check": False, "untuned": untuned,
                            "seeds": seeds, "selected": (d, a, m) in selected, "value": value,
                            "finished": total - len(untuned) - len(seeds), "total": total})
    if preset.convergence_check and "fedavg" in methods:
        missing += [{"dataset": d, "alpha": a, "method": "fedavg", "check": True, "untuned": [],
                     "seeds": [preset.seeds[0]], "selected": True, "value": None, "finished": 0, "total": 1}
                    for d in datasets for a in preset.alphas
                    if Cell(d, a, "fedavg", preset.seeds[0], None, rounds_factor=2) not in finished]
    return missing


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

"""Writing a sweep's results: ``table1_<preset>.{md,csv}``, ``_cells.json`` and ``_curves.png``."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from table1_sweep.analysis import (SIGNIFICANCE, finished_cells, missing_runs, paired_difference, select_values,
                                   summarize, verdict)
from table1_sweep.grid import FINAL_WINDOW, LABELS, TUNING_GRIDS, VARIANTS, Cell, Preset, seed_cells, tuning_cells


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
    """Tables: selected values (paper layout), best-on-test, paired differences to FedAvg, the verdict of FedSign
    against each baseline, FedSign per gamma and by reduction, FedAvg's cost of heterogeneity, the convergence
    check, and the runs a partial sweep still lacks."""
    by_key = {(r["dataset"], r["alpha"], r["method"]): r for r in rows}
    keys = [(d, a) for d in datasets for a in preset.alphas]
    style = preset.config().partition_style
    parts = [
        f"Command: `python benchmarks/table1.py --preset {preset_name}` ({len(finished)} of {total} runs finished"
        f"{f'; the {total - len(finished)} missing are listed in the last table' if len(finished) < total else ''}).\n"
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
    if "fedsign" in methods and len(methods) > 1:
        parts.append(_verdicts(by_key, keys, methods))
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
                                 f"{row['value']:g}", _percent(row['mean'], row['std']) + (f" ({len(values)} seeds)" if len(values) > 1 else ""),
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
    missing = missing_runs(finished, preset, methods, datasets)
    if missing:
        parts.append(_missing_table(missing, preset))
    return "\n".join(parts)


def _verdicts(by_key: dict, keys: list[tuple[str, float]], methods: tuple[str, ...]) -> str:
    """One line per (dataset, alpha) and baseline: FedSign beats / loses to / is within noise of it."""
    lines = []
    for d, a in keys:
        for m in (m for m in methods if m != "fedsign"):
            row, base = by_key.get((d, a, "fedsign")), by_key.get((d, a, m))
            diff = paired_difference(row, base) if row and base else None
            if diff is None:
                text = f"FedSign against {LABELS[m]}: not finished yet"
            else:
                seeds = f", {diff['seeds']} seeds" if diff["seeds"] > 1 else ""
                text = f"FedSign {verdict(diff)} {LABELS[m]}: {_difference(diff)}{seeds}"
            lines.append(f"- {d}, α = {a:g}: {text}.")
    return (f"Verdict: FedSign (γ selected on validation) against each baseline, paired by seed: \"beats\" or "
            f"\"loses to\" when the paired t-test gives p < {SIGNIFICANCE:g} and the mean difference is beyond the "
            "seed spread, otherwise \"within noise of\" (always so on one common seed); the difference in accuracy points "
            "as in the table above.\n\n" + "\n".join(lines) + "\n")


def _missing_table(missing: list[dict], preset: Preset) -> str:
    """The runs a partial sweep still lacks, per (dataset, alpha, method)."""
    body = []
    for g in missing:
        grid = TUNING_GRIDS[g["method"]]
        if g["check"]:
            what = f"seed {preset.seeds[0]} at {2 * preset.config().num_rounds} rounds"
        else:
            parts = []
            if g["untuned"]:  # FedAvg (no grid): its tuning run is its seed-0 run
                parts.append(f"tuning at {grid[0]} = {', '.join(f'{v:g}' for v in g['untuned'])} "
                             f"(seed {preset.seeds[0]})" if grid else f"seed {preset.seeds[0]}")
            if g["seeds"]:
                at = "" if not grid else (f" at {grid[0]} = {g['value']:g}" if g["selected"] else
                                          " at the value selected on validation once tuning is done")
                parts.append(f"seed{'s' if len(g['seeds']) > 1 else ''} {', '.join(map(str, g['seeds']))}{at}")
            what = "; ".join(parts)
        label = f"{LABELS[g['method']]} (convergence check)" if g["check"] else LABELS[g["method"]]
        body.append([g["dataset"], f"{g['alpha']:g}", label, f"{g['finished']} of {g['total']}", what])
    return ("Missing runs: what this partial table lacks, per dataset, α and method (rerun the sweep command to "
            "run them; finished runs are kept).\n\n"
            + _table(["dataset", "Dir. α", "method", "runs finished", "missing"], body))


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

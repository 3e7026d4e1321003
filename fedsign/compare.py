"""``fedsign compare``: run folders side by side.

Runs whose configs are equal but for the seed (and keys that do not change results: out-dir, resume,
checkpoint-every, tracking, mlflow-uri) form one group; the table has a row per group with the config keys
that differ between groups, and final / best accuracy, rounds to a target accuracy, seconds per round and
failures as mean ± std over its seeds. The overlay plot draws any metrics.csv column against round, a
group's mean with its ± std band.
"""

from __future__ import annotations

import glob
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsign.results import atomic_write, read_metrics

# Keys that say where and how a run was written, not what it computed.
NON_RESULT_KEYS = ("out-dir", "resume", "checkpoint-every", "tracking", "mlflow-uri")
# Numeric result columns: (column, label, digits in the text and markdown tables).
RESULT_COLUMNS = (("final_accuracy", "final acc", 4), ("best_accuracy", "best acc", 4),
                  ("rounds_to_target", "rounds to target", 1), ("seconds_per_round", "s/round", 3),
                  ("failures", "failures", 1))


class CompareError(ValueError):
    """A path is not a comparable run folder, or the comparison cannot be made (one line)."""


@dataclass
class Run:
    """One run folder: its config (run-config keys) and metrics.csv rows."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def evaluated(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if _finite(r.get("accuracy"))]

    def results(self, target: float | None) -> dict[str, float | None]:
        """Final and best accuracy, first round reaching ``target``, mean s/round and failed replies."""
        accuracies = [float(r["accuracy"]) for r in self.evaluated]
        reached = next((int(r["round"]) for r in self.evaluated if target is not None and r["accuracy"] >= target),
                       None)
        seconds = [float(r["seconds"]) for r in self.rows if _finite(r.get("seconds"))]
        return {"final_accuracy": accuracies[-1], "best_accuracy": max(accuracies), "rounds_to_target": reached,
                "seconds_per_round": sum(seconds) / len(seconds) if seconds else None,
                "failures": float(sum(int(r.get("num_failures") or 0) for r in self.rows))}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def expand_paths(patterns: list[str]) -> list[Path]:
    """The run folders ``patterns`` name (globs expanded here too, for quoted patterns), in order, once each."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise CompareError(f"{pattern} matches nothing; pass run folders (e.g. runs/fedavg-*)")
        paths.extend(Path(m) for m in matches if Path(m) not in paths)
    return paths


def load_run(path: Path) -> Run:
    """The run in ``path``; CompareError when it is not a run folder or has no evaluated round yet."""
    if not path.is_dir():
        raise CompareError(f"{path} is not a folder; pass run folders (each holds config.json and metrics.csv)")
    missing = [name for name in ("config.json", "metrics.csv") if not (path / name).is_file()]
    if missing:
        raise CompareError(f"{path} is not a FedSign run folder (no {' or '.join(missing)}); pass the folders "
                           "`fedsign run` writes (out-dir)")
    try:
        config = json.loads((path / "config.json").read_text())
        rows = read_metrics(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise CompareError(f"{path}: unreadable config.json or metrics.csv ({err})") from None
    if not isinstance(config, dict):
        raise CompareError(f"{path}/config.json is not a run config (a JSON object)")
    run = Run(path, config, rows)
    if not run.evaluated:
        raise CompareError(f"{path} has no evaluated round yet (metrics.csv has no accuracy); wait for its "
                           "first evaluation (eval-every) or leave it out")
    return run


def mixed_datasets(runs: list[Run]) -> str | None:
    """A one-line warning when the runs use different datasets (accuracies not comparable), else None."""
    datasets = sorted({str(r.config.get("dataset")) for r in runs})
    if len(datasets) > 1:
        return f"warning: the runs use different datasets ({', '.join(datasets)}); their accuracies are not comparable"
    return None


def group_runs(runs: list[Run]) -> tuple[list[str], list[list[Run]]]:
    """The config keys that differ between groups, and the groups (runs equal but for seed), in first-seen order."""
    def identity(run: Run) -> str:
        return json.dumps({k: v for k, v in run.config.items() if k not in (*NON_RESULT_KEYS, "seed")},
                          sort_keys=True)

    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(identity(run), []).append(run)
    firsts = [g[0].config for g in groups.values()]
    keys = sorted({k for c in firsts for k in c} - {*NON_RESULT_KEYS, "seed"})
    differing = [k for k in keys if len({json.dumps(c.get(k)) for c in firsts}) > 1]
    return differing, list(groups.values())


def compare_table(runs: list[Run], target: float | None = None) -> pd.DataFrame:
    """One row per group: the differing config keys, seeds, runs, and each result's mean and std over
    the group's runs (``<result>``, ``<result>_std``; with a ``target``, rounds to it over the runs that
    reached it, ``reached`` counting them)."""
    differing, groups = group_runs(runs)
    records = []
    for group in groups:
        record: dict[str, Any] = {key: group[0].config.get(key) for key in differing}
        record["seeds"] = ",".join(str(r.config.get("seed")) for r in group)
        record["runs"] = len(group)
        results = [r.results(target) for r in group]
        for column, _, _ in RESULT_COLUMNS:
            if column == "rounds_to_target" and target is None:
                continue
            values = pd.Series([res[column] for res in results if res[column] is not None], dtype=float)
            record[column] = values.mean() if len(values) else None
            record[f"{column}_std"] = values.std(ddof=1) if len(values) > 1 else None
        if target is not None:
            record["reached"] = sum(res["rounds_to_target"] is not None for res in results)
        records.append(record)
    return pd.DataFrame.from_records(records)


def formatted(table: pd.DataFrame, target: float | None) -> pd.DataFrame:
    """``table`` for reading: each result as ``mean ± std`` (std over seeds when a group has several runs)."""
    out = table[[c for c in table.columns
                 if c not in {col for col, _, _ in RESULT_COLUMNS} | {f"{col}_std" for col, _, _ in RESULT_COLUMNS}
                 | {"reached"}]].copy()
    for column, label, digits in RESULT_COLUMNS:
        if column not in table.columns:
            continue
        if column == "rounds_to_target":
            label = f"rounds to {target:g}"
        cells = []
        for _, row in table.iterrows():
            mean, std = row[column], row[f"{column}_std"]
            text = "–" if mean is None or pd.isna(mean) else f"{mean:.{digits}f}"
            if std is not None and not pd.isna(std):
                text += f" ± {std:.{digits}f}"
            if column == "rounds_to_target" and row["reached"] < row["runs"]:
                text += f" ({row['reached']}/{row['runs']} reached)"
            cells.append(text)
        out[label] = cells
    return out


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``table`` (strings as they are)."""
    header = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def overlay_plot(runs: list[Run], metric: str, path: Path) -> list[str]:
    """Write ``metric`` against round for every group (its mean, ± std band over seeds) to the PNG ``path``;
    return one warning line per group without the column. CompareError when no run has it."""
    available = sorted({k for r in runs for row in r.rows for k in row if k != "round"})
    if not any(_finite(row.get(metric)) for r in runs for row in r.rows):
        raise CompareError(f"no run has values in the metrics.csv column '{metric}'; --metric one of "
                           f"{', '.join(available)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    differing, groups = group_runs(runs)
    warnings = []
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for group in groups:
        label = ", ".join(f"{k}={group[0].config.get(k)}" for k in differing) or group[0].path.name
        series = pd.DataFrame({i: {row["round"]: row.get(metric) for row in r.rows if _finite(row.get(metric))}
                               for i, r in enumerate(group)}).sort_index()
        if series.empty:
            warnings.append(f"warning: {label}: no '{metric}' values; left out of the plot")
            continue
        mean = series.mean(axis=1)
        line, = ax.plot(mean.index, mean.values, marker="o", ms=2.5, label=f"{label} (n={len(group)})")
        if len(group) > 1:
            std = series.std(axis=1, ddof=1).fillna(0.0)
            ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return warnings

"""Summary of a device-kit run (benchmarks/gpu/run.sh): the environment, the VGG8 round timings and,
per Table-1 cell, rounds done, final accuracy and seconds per round and per cell (from its metrics.csv).
Prints markdown and writes it to ``<out>/summary.md``.

    python benchmarks/gpu/summary.py OUT [RUNS]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedsign.results import read_metrics  # noqa: E402


def cell_rows(runs: Path) -> list[list[str]]:
    rows = []
    for metrics in sorted(runs.glob("*/metrics.csv")):
        history = read_metrics(metrics.parent)
        seconds = [r["seconds"] for r in history if r.get("seconds") is not None]
        accuracy = [r["accuracy"] for r in history if r.get("accuracy") is not None]
        done = "yes" if (metrics.parent / "model.safetensors").exists() else "no"
        rows.append([metrics.parent.name, done, str(len(history)), f"{accuracy[-1]:.4f}" if accuracy else "–",
                     f"{statistics.mean(seconds):.2f}" if seconds else "–", f"{sum(seconds):.0f}"])
    return rows


def summary(out: Path, runs: Path) -> str:
    lines = ["# Device kit summary", ""]
    check = out / "check.json"
    if check.exists():
        lines += [f"Environment: `{json.dumps(json.loads(check.read_text()))}`", ""]
    rounds = sorted(out.glob("round_*.json"))
    if rounds:
        lines += ["| round | setup | sequential s | vectorized s | speed-up | host syncs (vectorized) |", "|---|---|---|---|---|---|"]
        for path in rounds:
            r = json.loads(path.read_text())
            s = r["s_per_round"]
            lines.append(f"| {path.stem} | {r['setup']} on {r['device']} | {s['sequential']:.3f} | "
                         f"{s['vectorized']:.3f} | {s['sequential'] / s['vectorized']:.2f}x | "
                         f"{r.get('vectorized_host_syncs') or 'n/a'} |")
        lines.append("")
    cells = cell_rows(runs) if runs.exists() else []
    lines += ["| cell | finished | rounds | final accuracy | s/round | s/cell |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells] or ["| (no cells) | | | | | |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("error: usage: summary.py OUT [RUNS]")
    out = Path(sys.argv[1])
    runs = Path(sys.argv[2]) if len(sys.argv) == 3 else out / "table1_runs"
    text = summary(out, runs)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""The term-strength figures quoted in README.md, benchmarks/README.md and clients/fedsign.py are the
committed measurements: ``benchmarks/results/term_strength.md`` (one batch) and the per-γ table of
``benchmarks/results/table1_cpu-converged.md`` (inside the runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GAMMAS = ("0.001", "0.01", "0.1")


def one_batch_rows() -> list[dict]:
    """term_strength.md rows: model, stage, reduction and the ratio text per γ."""
    rows = []
    for line in (RESULTS / "term_strength.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0][:1].isalpha() and cells[0] != "model (weights)":
            rows.append({"model": cells[0].split()[0], "stage": cells[1], "reduction": cells[2],
                         **dict(zip(GAMMAS, cells[3:]))})
    assert rows, "term_strength.md has no table"
    return rows


def span(texts: list[str]) -> str:
    """'lo–hi' of the measured values, each written as the results file writes it."""
    ordered = sorted(set(texts), key=float)
    return ordered[0] if len(ordered) == 1 else f"{ordered[0]}–{ordered[-1]}"


def one_batch(gamma: str, reduction: str, models: tuple[str, ...], stage: str | None = None) -> list[str]:
    return [r[gamma] for r in one_batch_rows() if r["reduction"] == reduction and r["model"] in models
            and (stage is None or r["stage"] == stage)]


def in_run() -> dict[str, list[str]]:
    """FedSign's logged term_grad_ratio per γ (seed 0, every α) from the cpu-converged table."""
    ratios: dict[str, list[str]] = {g: [] for g in GAMMAS}
    for line in (RESULTS / "table1_cpu-converged.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[2] in ratios and re.fullmatch(r"[\d.e-]+", cells[5]):
            ratios[cells[2]].append(cells[5])
    assert all(len(v) == 3 for v in ratios.values()), ratios
    return ratios


def test_readme_reduction_table_is_the_measurement():
    readme = (ROOT / "README.md").read_text()
    for reduction in ("sum", "root4", "sqrt", "mean"):
        figures = (f"{span(one_batch('0.01', reduction, ('cnn',)))} / "
                   f"{span(one_batch('0.01', reduction, ('vgg8',)))}")
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{reduction}`"))
        assert figures in row, (reduction, figures, row)


def test_readme_root4_grid_initial_and_in_run():
    readme = " ".join((ROOT / "README.md").read_text().split())
    initial = " / ".join(one_batch(g, "root4", ("mlp",), "initial")[0] for g in GAMMAS)
    logged = in_run()
    assert f"ratio {initial} on the CPU table's MLP at its initial model" in readme
    assert " / ".join(span(logged[g]) for g in GAMMAS) in readme
    factors = [float(one_batch(g, "root4", ("mlp",), "initial")[0]) / float(x) for g in GAMMAS for x in logged[g]]
    assert f"it is {int(min(factors))}–{int(max(factors))}× weaker" in readme
    cnn = one_batch("0.01", "root4", ("cnn",))
    assert f"falls from {cnn[0]} to {cnn[1]} after 2 local epochs" in readme


def test_benchmarks_readme_holds_the_measurement_and_its_spans():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    table = (RESULTS / "term_strength.md").read_text().split("\n\n", 1)[1].strip()
    assert table in text, "benchmarks/README.md's table differs from benchmarks/results/term_strength.md"
    flat = " ".join(text.split())
    everything = ("mlp", "cnn_small", "cnn", "vgg8")
    assert f"ratio {span(one_batch('0.01', 'sum', everything))} (VGG8" in flat
    assert f"inert: ratio ≤ {span(one_batch('0.01', 'mean', everything)).split('–')[-1]} at" in flat
    assert f"weak: {span(one_batch('0.1', 'sqrt', everything))} at γ = 0.1" in flat
    assert (f"ratio {span(one_batch('0.001', 'root4', everything))} → {span(one_batch('0.1', 'root4', everything))}"
            in flat)
    logged = in_run()
    assert " / ".join(span(logged[g]) for g in GAMMAS) in flat


@pytest.mark.parametrize("reduction,gammas,models", [("root4", ("0.001", "0.1"), ("cnn",)),
                                                     ("root4", ("0.001", "0.1"), ("vgg8",)),
                                                     ("sqrt", ("0.1",), ("mlp", "cnn_small", "cnn", "vgg8")),
                                                     ("mean", ("0.01",), ("mlp", "cnn_small", "cnn", "vgg8"))])
def test_fedsign_docstring_figures_are_the_measurement(reduction, gammas, models):
    import clients.fedsign

    doc = " ".join(clients.fedsign.__doc__.split())
    for gamma in gammas:
        values = one_batch(gamma, reduction, models)
        figure = "<= " + max(values, key=float) if reduction == "mean" else span(values).replace("–", "-")
        assert figure in doc, (reduction, gamma, figure)

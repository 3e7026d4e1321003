"""benchmarks/table1.py: the grid, gamma selection, statistics and the written tables (no training)."""

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from fedsign.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


table1 = load_benchmark("table1")
PRESET = table1.Preset(datasets=("digits",), alphas=(1.0, 0.5), seeds=(0, 1, 2), gammas=(0.01, 0.1),
                       common="num-clients=10 num-rounds=2")


def history(final: float) -> list[dict]:
    return [{"round": 1, "accuracy": final / 2}, {"round": 2, "accuracy": final}]


@pytest.mark.requires_dataset("fmnist")  # the cpu preset's cells are validated, data source included
def test_grid_sizes_and_every_cell_validates(tmp_path):
    assert len(table1.cells(table1.PRESETS["cpu"], table1.METHODS)) == 3 * 3 * (5 + 3)
    paper = table1.cells(table1.PRESETS["paper"], table1.METHODS)
    assert len(paper) == 2 * 3 * (5 + 4 + 5 * 3)  # 5 seeds of FedAvg and FedSign (x3 gammas), 1 of the others
    for preset in table1.PRESETS.values():
        grid = table1.cells(preset, table1.METHODS)
        assert len({c.name for c in grid}) == len(grid)
    cpu_grid = table1.cells(table1.PRESETS["cpu"], table1.METHODS)
    for cell in cpu_grid:  # Fashion-MNIST: .ci/run installs it
        RunConfig.from_overrides(cell.overrides(table1.PRESETS["cpu"], {}, tmp_path / cell.name, ""))
    paper = dict(item.split("=") for item in table1.PRESETS["paper"].common.split())
    assert paper == {"model": "'vgg8'", "num-clients": "100", "clients-per-round": "10", "num-rounds": "200",
                     "local-epochs": "5", "batch-size": "64", "lr": "0.03", "momentum": "0.9",
                     "weight-decay": "1e-5", "weighted": "false", "eval-every": "10"}  # the paper's Appendix C
    assert {c.seed for c in cpu_grid[:24]} == {0}  # seed-major: a partial sweep has whole rows of seed 0


def test_summarize_picks_best_gamma_by_mean():
    finished = {}
    for seed, (avg, g1, g2) in enumerate([(0.50, 0.52, 0.40), (0.60, 0.63, 0.70), (0.70, 0.71, 0.65)]):
        finished[table1.Cell("digits", 1.0, "fedavg", seed)] = history(avg)
        finished[table1.Cell("digits", 1.0, "fedsign", seed, 0.01)] = history(g1)
        finished[table1.Cell("digits", 1.0, "fedsign", seed, 0.1)] = history(g2)
    rows = table1.summarize(finished, PRESET, ("fedavg", "fedsign"))
    assert len(rows) == 3
    fedavg = next(r for r in rows if r["method"] == "fedavg")
    assert fedavg["selected"] and fedavg["mean"] == pytest.approx(0.6) and fedavg["std"] == pytest.approx(0.1)
    chosen = [r for r in rows if r["method"] == "fedsign" and r["selected"]]
    assert [r["gamma"] for r in chosen] == [0.01]  # mean 0.62 beats 0.5833
    diff = table1.paired_difference(chosen[0], fedavg)
    assert diff["mean"] == pytest.approx(0.02) and diff["std"] == pytest.approx(0.01)
    t = 0.02 / (0.01 / math.sqrt(3))
    assert diff["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)  # two-sided t, 2 dof, closed form
    assert diff["beyond_spread"] is False  # 0.02 < FedAvg's seed std 0.1


def test_paired_difference_uses_common_seeds_only():
    row = {"accuracies": {0: 0.9, 1: 0.8}, "std": 0.07}
    base = {"accuracies": {1: 0.5, 2: 0.4}, "std": 0.07}
    diff = table1.paired_difference(row, base)
    assert diff["seeds"] == 1 and diff["mean"] == pytest.approx(0.3) and diff["p"] is None
    assert table1.paired_difference({"accuracies": {0: 0.9}, "std": None}, {"accuracies": {1: 0.5}}) is None


def test_aggregate_writes_tables_from_finished_cells_only(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    finals = {("fedavg", None): [0.5, 0.6], ("fedsign", 0.01): [0.55, 0.7], ("fedsign", 0.1): [0.1, 0.1]}
    for (method, gamma), accs in finals.items():
        for seed, acc in enumerate(accs):
            cell = runs / table1.Cell("digits", 1.0, method, seed, gamma).name
            cell.mkdir(parents=True)
            (cell / "metrics.csv").write_text(f"round,accuracy\n1,{acc / 2}\n2,{acc}\n")
            (cell / "model.safetensors").write_bytes(b"")
    unfinished = runs / table1.Cell("digits", 0.5, "fedavg", 0).name  # no model: interrupted, not counted
    unfinished.mkdir()
    (unfinished / "metrics.csv").write_text("round,accuracy\n1,0.9\n")

    markdown = table1.aggregate("t", PRESET, runs, out, ("fedavg", "fedsign"))
    assert "| digits | 1 | 55.00 ± 7.07 | 62.50 ± 10.61 (γ=0.01) |" in markdown
    assert "| digits | 0.5 | – | – |" in markdown
    assert "+7.50 ± 3.54" in markdown  # paired differences 0.05 and 0.10
    assert "(6 of 18 runs finished)" in (out / "table1_t.md").read_text()
    with (out / "table1_t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["gamma"], r["selected"]) for r in rows] == [
        ("fedavg", "", "True"), ("fedsign", "0.01", "True"), ("fedsign", "0.1", "False")]
    assert rows[0]["accuracies"] == "0:0.5 1:0.6"
    assert (out / "table1_t_curves.png").stat().st_size > 0

"""benchmarks/table1.py and benchmarks/table1_sweep/: the grid, selection on validation, statistics, locks and
the written tables."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedsign.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from table1_sweep import analysis, grid, report, sweep  # noqa: E402

PRESET = grid.Preset(datasets=("digits",), alphas=(1.0, 0.5), seeds=(0, 1, 2),
                     common="num-clients=10 num-rounds=2 validation-fraction=0.2")
METHODS = ("fedavg", "fedsign")


def write_cell(runs: Path, cell, test: list[float], val: list[float], weight_norm: list[float] | None = None
               ) -> None:
    """A finished cell folder with the given per-evaluation test and validation accuracies (and weight norms)."""
    folder = runs / cell.name
    folder.mkdir(parents=True)
    norms = weight_norm or [""] * len(test)
    rows = [f"{i + 1},{t},{v},{n}" for i, (t, v, n) in enumerate(zip(test, val, norms))]
    (folder / "metrics.csv").write_text("round,accuracy,val_accuracy,weight_norm\n" + "\n".join(rows) + "\n")
    (folder / "summary.json").write_text('{"status": "finished"}')


def test_grid_sizes_and_the_paper_settings(tmp_path):
    cpu = grid.PRESETS["cpu-converged"]
    tuning = grid.tuning_cells(cpu, grid.METHODS, cpu.datasets)
    assert len(tuning) == 3 * (1 + 5 * 3 + 1)  # FedAvg, five grids of 3, the convergence check
    assert len({c.name for c in tuning}) == len(tuning)
    selected = {(d, a, m): None for d in cpu.datasets for a in cpu.alphas for m in grid.METHODS}
    assert len(grid.seed_cells(cpu, grid.METHODS, cpu.datasets, selected)) == 3 * 6 * 4  # seeds 1-4
    paper = dict(item.split("=") for item in grid.PRESETS["paper"].common.split())
    assert paper == {"model": "'vgg8'", "num-clients": "100", "clients-per-round": "10", "num-rounds": "200",
                     "local-epochs": "5", "batch-size": "64", "lr": "0.03", "momentum": "0.9",
                     "weight-decay": "1e-5", "grad-clip": "100.0", "weighted": "false", "eval-every": "10",
                     "partition-style": "'per-client'", "validation-fraction": "0.1",
                     "checkpoint-every": "0", "init": "'fedrepo'"}  # the paper's Appendix C, FedRepo's init
    converged = dict(item.split("=") for item in cpu.common.split())
    for key in ("num-clients", "clients-per-round", "local-epochs", "batch-size", "lr", "momentum", "weight-decay",
                "grad-clip", "weighted"):
        assert converged[key] == paper[key], key  # the paper's structure; only data and model shrink
    check = next(c for c in tuning if c.rounds_factor == 2)
    assert RunConfig.from_overrides(check.overrides(cpu, {}, tmp_path / "x", ""), validate=False).num_rounds == 800
    smoke = grid.PRESETS["smoke"]
    for cell in grid.tuning_cells(smoke, grid.METHODS, smoke.datasets):  # digits: always there
        RunConfig.from_overrides(cell.overrides(smoke, {}, tmp_path / cell.name, ""))


def test_selection_uses_validation_never_test_and_seeds_follow_the_selection(tmp_path):
    runs = tmp_path / "runs"
    write_cell(runs, grid.Cell("digits", 1.0, "fedavg", 0), [0.5] * 3, [0.5] * 3)
    write_cell(runs, grid.Cell("digits", 1.0, "fedsign", 0, 0.001), [0.9] * 3, [0.4] * 3)  # best on test
    write_cell(runs, grid.Cell("digits", 1.0, "fedsign", 0, 0.01), [0.6] * 3, [0.7] * 3)  # best on validation
    write_cell(runs, grid.Cell("digits", 1.0, "fedsign", 0, 0.1), [0.3] * 3, [0.3] * 3)
    tuned = analysis.finished_cells(runs, grid.tuning_cells(PRESET, METHODS, ("digits",)))
    selected = analysis.select_values(tuned, PRESET, METHODS, ("digits",))
    assert selected == {("digits", 1.0, "fedavg"): None, ("digits", 1.0, "fedsign"): 0.01}  # alpha 0.5 unfinished
    assert analysis.select_values(tuned, PRESET, METHODS, ("digits",), key="test")[("digits", 1.0, "fedsign")] == 0.001
    seeds = grid.seed_cells(PRESET, METHODS, ("digits",), selected)
    assert sorted(c.name for c in seeds) == sorted([
        "digits-a1-fedavg-s1", "digits-a1-fedavg-s2",
        "digits-a1-fedsign-fedsign-gamma0.01-s1", "digits-a1-fedsign-fedsign-gamma0.01-s2"])


def test_final_accuracy_is_the_mean_of_the_last_evaluations():
    history = [{"round": r, "accuracy": a} for r, a in enumerate([0.1, 0.2, 0.5, 0.6, 0.7], 1)]
    history.insert(2, {"round": 2.5, "accuracy": None})  # a round without evaluation
    assert analysis.final_value(history, "accuracy") == pytest.approx(0.6)
    feddyn = analysis.cell_summary(grid.Cell("digits", 1.0, "feddyn", 0, 0.01),
                                   [{"round": 1, "accuracy": 0.1, "participant_mean_accuracy": 0.8}])
    assert feddyn["test"] == 0.8  # FedDyn reports its participants' average, as the official code


def test_paired_difference_closed_form_and_common_seeds():
    row = {"accuracies": {0: 0.52, 1: 0.63, 2: 0.71}, "std": 0.095}
    base = {"accuracies": {0: 0.50, 1: 0.60, 2: 0.70}, "std": 0.1}
    diff = analysis.paired_difference(row, base)
    assert diff["mean"] == pytest.approx(0.02) and diff["std"] == pytest.approx(0.01)
    t = 0.02 / (0.01 / math.sqrt(3))
    assert diff["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)  # two-sided t, 2 dof, closed form
    assert diff["beyond_spread"] is False  # 0.02 < FedAvg's seed std 0.1
    one = analysis.paired_difference({"accuracies": {0: 0.9, 1: 0.8}, "std": 0.07},
                                     {"accuracies": {1: 0.5, 2: 0.4}, "std": 0.07})
    assert one["seeds"] == 1 and one["mean"] == pytest.approx(0.3) and one["p"] is None
    assert analysis.verdict(one) == "within noise of"  # +30 points, but one seed: no test


def test_cell_lock_refuses_a_live_owner_and_takes_over_a_dead_ones(tmp_path):
    lock = sweep.CellLock(tmp_path / "c.lock")
    assert lock.acquire()
    assert not sweep.CellLock(tmp_path / "c.lock").acquire()  # held by this (live) process
    lock.release()
    (tmp_path / "c.lock").write_text("999999999")  # a PID that does not exist: stale
    assert sweep.CellLock(tmp_path / "c.lock").acquire()
    assert (tmp_path / "c.lock").read_text() == str(os.getpid())


def test_aggregate_writes_tables_from_finished_cells_only(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    tuning = {("fedavg", None): ([0.5] * 3, [0.5] * 3), ("fedsign", 0.001): ([0.5] * 3, [0.4] * 3),
              ("fedsign", 0.01): ([0.55] * 3, [0.6] * 3), ("fedsign", 0.1): ([0.1] * 3, [0.1] * 3)}
    for (method, value), (test, val) in tuning.items():
        write_cell(runs, grid.Cell("digits", 1.0, method, 0, value), test, val)
    for seed, (avg, sign) in {1: (0.6, 0.7), 2: (0.7, 0.75)}.items():
        write_cell(runs, grid.Cell("digits", 1.0, "fedavg", seed), [avg] * 3, [avg] * 3)
        write_cell(runs, grid.Cell("digits", 1.0, "fedsign", seed, 0.01), [sign] * 3, [sign] * 3)
    unfinished = runs / grid.Cell("digits", 0.5, "fedavg", 0).name  # interrupted: not counted
    unfinished.mkdir()
    (unfinished / "metrics.csv").write_text("round,accuracy\n1,0.9\n")
    (unfinished / "summary.json").write_text('{"status": "interrupted"}')

    markdown = report.aggregate("t", PRESET, runs, out, METHODS, ("digits",))
    assert "| digits | 1 | 60.00 ± 10.00 | 66.67 ± 10.41 (fedsign-gamma=0.01) |" in markdown
    assert "| digits | 0.5 | – | – |" in markdown
    assert "+6.67 ± 2.89" in markdown  # paired differences 0.05, 0.10, 0.05
    assert "(8 of 8 runs finished)" not in markdown and "runs finished" in markdown
    with (out / "table1_t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["value"], r["best_test_value"]) for r in rows] == [
        ("fedavg", "", ""), ("fedsign", "0.01", "0.01")]
    assert rows[1]["accuracies"] == "0:0.55 1:0.7 2:0.75"
    assert (out / "table1_t_curves.png").stat().st_size > 0


def test_cpu_full_is_the_paper_structure_on_the_full_split_with_the_reduction_study(tmp_path):
    full = grid.PRESETS["cpu-full"]
    settings = dict(item.split("=") for item in full.common.split())
    paper = dict(item.split("=") for item in grid.PRESETS["paper"].common.split())
    for key in ("num-clients", "clients-per-round", "local-epochs", "batch-size", "lr", "momentum", "weight-decay",
                "grad-clip", "weighted", "validation-fraction", "eval-every", "init"):
        assert settings[key] == paper[key], key
    assert settings['partition-style'] == "'per-class'"  # per-client costs FedAvg < 2 points at alpha 0.5
    assert settings["model"] == "'mlp'" and "train-samples" not in settings  # the whole train split
    assert full.alphas == (10.0, 1.0, 0.5, 0.1) and full.seeds == (0, 1, 2, 3, 4) and full.convergence_check
    assert full.reduction_alphas == (0.5, 0.1) and full.reduction_seeds == 3
    for name, variant in grid.VARIANTS.items():
        assert set(grid.TUNING_GRIDS["fedsign"][1]) < set(variant.grid[1])  # the paper's grid and one decade
        assert variant.method == "fedsign" and grid.TUNING_GRIDS[name] == variant.grid
    tuning = grid.tuning_cells(full, grid.METHODS, full.datasets)
    # per alpha: FedAvg + five grids of 3 + the check; at alpha 0.5 and 0.1 two reduction grids of 4
    assert len(tuning) == 4 * (1 + 5 * 3 + 1) + 2 * (4 + 5) and len({c.name for c in tuning}) == len(tuning)
    selected = {g: None for g in full.groups(grid.METHODS, full.datasets)}
    assert len(grid.seed_cells(full, grid.METHODS, full.datasets, selected)) == 4 * 6 * 4 + 2 * 2 * 2
    cell = next(c for c in tuning if c.method == "fedsign-mean")
    config = RunConfig.from_overrides(cell.overrides(full, {}, tmp_path / "x", ""), validate=False)
    assert (config.strategy, config.fedsign_reduction, config.dirichlet_alpha) == ("fedsign", "mean", 0.5)


def test_reduction_table_heterogeneity_row_and_weight_columns(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    preset = grid.Preset(datasets=("digits",), alphas=(10.0, 0.5), seeds=(0, 1, 2), reduction_alphas=(0.5,),
                         reduction_seeds=2, common="num-clients=10 num-rounds=2 validation-fraction=0.2")
    for alpha, accs in {10.0: (0.8, 0.9, 0.85), 0.5: (0.6, 0.7, 0.65)}.items():
        for seed, acc in enumerate(accs):
            write_cell(runs, grid.Cell("digits", alpha, "fedavg", seed), [acc] * 3, [acc] * 3)
        for gamma in grid.TUNING_GRIDS["fedsign"][1]:
            write_cell(runs, grid.Cell("digits", alpha, "fedsign", 0, gamma), [0.5] * 3, [0.5 + gamma] * 3)
        for seed in (1, 2):
            write_cell(runs, grid.Cell("digits", alpha, "fedsign", seed, 0.1), [0.5] * 3, [0.5] * 3)
    for gamma in grid.TUNING_GRIDS["fedsign-sum"][1]:
        write_cell(runs, grid.Cell("digits", 0.5, "fedsign-sum", 0, gamma), [0.6] * 3, [0.6 - gamma] * 3,
                   weight_norm=[1.0, 30.0, 20.0])
    write_cell(runs, grid.Cell("digits", 0.5, "fedsign-sum", 1, 0.0001), [0.75] * 3, [0.75] * 3,
               weight_norm=[1.0, 2.0, 3.0])
    markdown = report.aggregate("r", preset, runs, out, METHODS, ("digits",))
    assert "| digits | +20.00 ± 0.00 |" in markdown  # FedAvg: alpha 10 minus alpha 0.5, paired by seed
    assert "| digits | 0.5 | sum | 0.0001 | 67.50 ± 10.61 (2 seeds) | +2.50 ± 3.54 (p=0.50" in markdown
    assert "| digits | 0.5 | sum | 0.001 | 60.00 | 59.90 | – | – | – | 20.0 | 30.0 | – | – |" in markdown  # final, peak norm
    assert "| digits | 0.5 | mean |" not in markdown  # not run: no row, but listed as missing
    assert "| digits | 0.5 | FedSign (mean) | 0 of 6 | tuning at fedsign-gamma = 0.001, 0.01, 0.1, 1, 10 (seed 0)" \
        in markdown


def test_an_archive_of_finished_cells_gives_the_same_table(tmp_path):
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    for seed, acc in enumerate((0.5, 0.6, 0.7)):
        write_cell(runs, grid.Cell("digits", 1.0, "fedavg", seed), [acc] * 3, [acc] * 3)
        (runs / grid.Cell("digits", 1.0, "fedavg", seed).name / "config.json").write_text("{}")
    (runs / "digits-a0.5-fedavg-s0").mkdir()  # unfinished: no summary
    assert sweep.archive_cells(runs, archive) == 3
    assert sorted(p.name for p in archive.iterdir()) == [f"digits-a1-fedavg-s{s}" for s in range(3)]
    one = report.aggregate("a", PRESET, runs, tmp_path / "o1", ("fedavg",), ("digits",))
    two = report.aggregate("a", PRESET, archive, tmp_path / "o2", ("fedavg",), ("digits",))
    assert one == two and "60.00 ± 10.00" in one


def test_verdict_of_fedsign_against_each_baseline_and_the_missing_runs(tmp_path):
    runs = tmp_path / "runs"
    preset = grid.Preset(datasets=("digits",), alphas=(1.0, 0.5), seeds=(0, 1, 2), convergence_check=True,
                         common="num-clients=10 num-rounds=2 validation-fraction=0.2")
    methods = ("fedavg", "fedprox", "fedsign")
    for alpha in (1.0, 0.5):
        for seed, acc in enumerate((0.6, 0.7, 0.8)):
            write_cell(runs, grid.Cell("digits", alpha, "fedavg", seed), [acc] * 3, [acc] * 3)
    for method, best, accs in (("fedprox", 0.01, (0.71, 0.8, 0.9)), ("fedsign", 0.01, (0.75, 0.86, 0.95))):
        for value in grid.TUNING_GRIDS[method][1]:  # tuning at alpha 1: ``best`` wins on validation
            write_cell(runs, grid.Cell("digits", 1.0, method, 0, value), [accs[0]] * 3,
                       [0.9 if value == best else 0.5] * 3)
        for seed in (1, 2):
            write_cell(runs, grid.Cell("digits", 1.0, method, seed, best), [accs[seed]] * 3, [0.5] * 3)
    for value in grid.TUNING_GRIDS["fedsign"][1]:  # alpha 0.5: FedSign 0.1 selected, seed 2 not run; no FedProx
        write_cell(runs, grid.Cell("digits", 0.5, "fedsign", 0, value), [0.41] * 3, [0.9 if value == 0.1 else 0.5] * 3)
    write_cell(runs, grid.Cell("digits", 0.5, "fedsign", 1, 0.1), [0.5] * 3, [0.5] * 3)

    markdown = report.aggregate("v", preset, runs, tmp_path / "out", methods, ("digits",))
    # +0.15 to +0.16 on every seed: beyond both seed stds (0.10)
    assert "- digits, α = 1: FedSign beats FedAvg: +15.33 ± 0.58 (p=0.00, beyond seed spread), 3 seeds." in markdown
    # +0.04 to +0.06 (p = 0.013) but within the seed std: noise at this number of seeds
    assert "- digits, α = 1: FedSign within noise of FedProx: +5.00 ± 1.00 (p=0.01, within seed spread), 3 seeds." \
        in markdown
    assert "- digits, α = 0.5: FedSign loses to FedAvg: -19.50 ± 0.71 (p=0.02, beyond seed spread), 2 seeds." \
        in markdown
    assert "- digits, α = 0.5: FedSign against FedProx: not finished yet." in markdown
    assert "(20 of 28 runs finished; the 8 missing are listed in the last table)" in markdown
    assert markdown.endswith(
        "| digits | 0.5 | FedProx | 0 of 5 | tuning at proximal-mu = 0.001, 0.01, 0.1 (seed 0); seeds 1, 2 at the "
        "value selected on validation once tuning is done |\n"
        "| digits | 0.5 | FedSign | 4 of 5 | seed 2 at fedsign-gamma = 0.1 |\n"
        "| digits | 1 | FedAvg (convergence check) | 0 of 1 | seed 0 at 4 rounds |\n"
        "| digits | 0.5 | FedAvg (convergence check) | 0 of 1 | seed 0 at 4 rounds |\n")


def test_the_command_aggregates_a_partial_sweep_and_names_what_is_missing(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for seed in (0, 1):
        write_cell(runs, grid.Cell("digits", 0.5, "fedavg", seed), [0.5] * 3, [0.5] * 3)
    command = [sys.executable, str(ROOT / "benchmarks" / "table1.py"), "--preset", "smoke", "--aggregate-only",
               "--methods", "fedavg", "fedsign", "--runs", str(runs), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    markdown = (out / "table1_smoke.md").read_text()
    assert "(2 of 7 runs finished; the 5 missing are listed in the last table)" in markdown
    assert "| digits | 0.5 | FedSign | 0 of 4 | tuning at fedsign-gamma = 0.001, 0.01, 0.1 (seed 0); seed 1 at the " \
           "value selected on validation once tuning is done |" in markdown
    assert "- digits, α = 0.5: FedSign against FedAvg: not finished yet." in markdown


def test_speed_plain_loop_is_the_platforms_unweighted_fedavg_bit_for_bit(tmp_path):
    """benchmarks/speed.py's overhead floor runs the platform's arithmetic: same clients, seeds, steps and mean."""
    import speed
    import torch
    from fedsign.engines import run_inprocess
    from fedsign.results import load_model_state

    config = RunConfig.from_overrides(
        "strategy='fedavg' dataset='digits' num-clients=8 clients-per-round=3 num-rounds=3 local-epochs=1 "
        f"weighted=false seed=4 out-dir='{tmp_path / 'run'}'").resolved()
    run_inprocess(config, progress=False)
    platform = load_model_state(tmp_path / "run" / "model.safetensors")
    row, plain = speed.plain_fedavg(config)
    assert sorted(plain) == sorted(platform) and all(torch.equal(plain[k], platform[k]) for k in platform)
    assert row["engine"] == "fedavg, plain loop" and 0 < row["overhead_s"] < row["round_s"]


def test_openmp_teams_dry_run_measures_every_arrangement(tmp_path):
    """benchmarks/openmp_teams.py runs each thread arrangement in its own process and writes the table."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "openmp_teams.py"), "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report_path = Path(out.stdout.strip().splitlines()[-1].removeprefix("wrote "))
    rows = [line.split(" | ") for line in report_path.read_text().splitlines()[2:5]]
    assert [r[0].lstrip("| ") for r in rows] == ["main", "client thread", "client thread, teams given back"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)

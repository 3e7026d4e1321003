"""``fedsign compare`` on run folders written here: seeds grouped as mean ± std, the differing config keys,
rounds to a target, the overlay plot, csv / markdown output, and one-line errors for what is not a run."""

import io
import math

import pandas as pd
import pytest

from fedsign.cli import main
from fedsign.compare import compare_table, load_run
from fedsign.config import RunConfig
from fedsign.results import RunResults


def write_run(folder, accuracies, *, seconds=1.0, failures=0, **config):
    """A run folder as a run writes it (RunResults): config.json and metrics.csv, one row per accuracy
    (None: a round without evaluation)."""
    results = RunResults(folder)
    results.out_dir.mkdir(parents=True)
    results.write_config(RunConfig().replace(out_dir=str(folder), **config).to_dict())
    results.set_rows([{"round": i + 1, "accuracy": a, "loss": None if a is None else 1 - a, "num_replies": 4,
                       "num_failures": failures, "seconds": seconds} for i, a in enumerate(accuracies)])
    return folder


def compare(capsys, *args):
    status = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_seeds_are_grouped_and_only_differing_result_keys_are_shown(tmp_path):
    runs = [write_run(tmp_path / "avg0", [0.3, 0.5], seed=0),
            write_run(tmp_path / "avg1", [0.4, 0.6], seed=1, tracking="tensorboard", checkpoint_every=0),
            write_run(tmp_path / "avg2", [0.5, 0.7], seed=2),
            write_run(tmp_path / "sign0", [0.6, 0.8], seed=0, strategy="fedsign", seconds=2.0, failures=1),
            write_run(tmp_path / "sign1", [0.9, 0.7], seed=1, strategy="fedsign", seconds=4.0),
            write_run(tmp_path / "avg-lr", [0.2, 0.4], seed=0, lr=0.1)]
    table = compare_table([load_run(p) for p in runs])
    assert [c for c in table.columns if not c.startswith(("final", "best", "seconds", "failures"))] == \
        ["lr", "strategy", "seeds", "runs"]  # not seed, out-dir, tracking, checkpoint-every
    assert table["seeds"].tolist() == ["0,1,2", "0,1", "0"]
    assert table["runs"].tolist() == [3, 2, 1]
    assert table["final_accuracy"].tolist() == pytest.approx([0.6, 0.75, 0.4])
    assert table["final_accuracy_std"][0] == pytest.approx(0.1)
    assert table["final_accuracy_std"][1] == pytest.approx(math.sqrt(0.005))
    assert pd.isna(table["final_accuracy_std"][2])  # one run: no spread
    assert table["best_accuracy"].tolist() == pytest.approx([0.6, 0.85, 0.4])
    assert table["seconds_per_round"].tolist() == pytest.approx([1.0, 3.0, 1.0])
    assert table["failures"].tolist() == pytest.approx([0.0, 1.0, 0.0])  # sum over rounds, mean over seeds


def test_rounds_to_target_counts_evaluated_rounds_and_the_runs_that_reached_it(tmp_path, capsys):
    write_run(tmp_path / "a0", [0.3, 0.6, 0.9], seed=0)
    write_run(tmp_path / "a1", [None, 0.4, None, 0.7], seed=1)  # eval-every 2
    write_run(tmp_path / "b0", [0.1, 0.2, 0.3], seed=0, strategy="fedprox")
    table = compare_table([load_run(tmp_path / n) for n in ("a0", "a1", "b0")], target=0.5)
    assert table["rounds_to_target"][0] == pytest.approx(3.0)  # rounds 2 and 4
    assert table["reached"].tolist() == [2, 0]
    assert pd.isna(table["rounds_to_target"][1])
    status, out, _ = compare(capsys, tmp_path / "a0", tmp_path / "a1", tmp_path / "b0", "--target", 0.5,
                             "--plot", tmp_path / "p.png")
    assert status == 0
    assert "rounds to 0.5" in out and "3.0 ± 1.4" in out and "– (0/1 reached)" in out


def test_csv_markdown_overlay_plot_and_quoted_globs(tmp_path, capsys, monkeypatch):
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"avg-s{seed}", [0.3 + seed / 10, 0.5], seed=seed)
    write_run(tmp_path / "runs" / "sign-s0", [0.6, 0.8], strategy="fedsign")
    monkeypatch.chdir(tmp_path)
    status, out, err = compare(capsys, "runs/*", "--csv", "--metric", "loss")
    assert status == 0
    table = pd.read_csv(io.StringIO(out))
    assert table["strategy"].tolist() == ["fedavg", "fedsign"] and table["runs"].tolist() == [2, 1]
    assert table["final_accuracy"].tolist() == pytest.approx([0.5, 0.8])
    assert (tmp_path / "compare-loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "compare-loss.png" in err
    status, out, _ = compare(capsys, "runs/avg-s0", "runs/avg-s1", "runs/sign-s0", "--markdown",
                             "--plot", "figs/acc.png")
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith("| strategy | seeds | runs | final acc")
    assert lines[2] == "| fedavg | 0,1 | 2 | 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | 1.000 ± 0.000 | 0.0 ± 0.0 |"
    assert (tmp_path / "figs" / "acc.png").is_file()


def test_not_a_run_folder_no_evaluated_round_and_unknown_metric_are_one_line_errors(tmp_path, capsys):
    good = write_run(tmp_path / "good", [0.5])
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    write_run(tmp_path / "fresh", [None, None])
    cases = {tmp_path / "empty": "is not a FedSign run folder (no config.json or metrics.csv)",
             tmp_path / "file.txt": "is not a folder",
             tmp_path / "fresh": "has no evaluated round yet",
             tmp_path / "nothing-*": "matches nothing"}
    for path, message in cases.items():
        status, out, err = compare(capsys, good, path, "--plot", tmp_path / "p.png")
        assert status == 2 and out == ""
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    status, _, err = compare(capsys, good, "--metric", "acuracy", "--plot", tmp_path / "p.png")
    assert status == 2 and "--metric one of accuracy, loss" in err
    assert not (tmp_path / "p.png").exists()


def test_mixed_datasets_warn_and_still_compare(tmp_path, capsys):
    write_run(tmp_path / "d", [0.5], dataset="digits")
    write_run(tmp_path / "m", [0.9], dataset="mnist", model="cnn_small")
    status, out, err = compare(capsys, tmp_path / "d", tmp_path / "m", "--plot", tmp_path / "p.png")
    assert status == 0
    assert "warning: the runs use different datasets (digits, mnist)" in err
    assert "dataset" in out.splitlines()[0] and "model" in out.splitlines()[0]

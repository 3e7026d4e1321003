"""Tracking (run-config ``tracking``): the TensorBoard events, read back with tensorboard's EventAccumulator,
and the MLflow run, read back through MlflowClient, hold every metric of every round; tracking changes no
result; a tracker that raises warns once and the run finishes; a missing package is refused at validation.
The tests that run trackers skip, naming the extra, when it is not installed (``make`` installs it)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedsign import tracking
from fedsign.cli import main
from fedsign.config import ConfigError, RunConfig
from fedsign.engines import run_inprocess
from fedsign.results import read_marker, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SMALL = "num-rounds=3 local-epochs=1 num-clients=4 clients-per-round=4 eval-every=2"


def needs(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs the tracking extra ({', '.join(missing)} missing): "
                                                    f"{tracking.INSTALL_LINE}")


def run(out_dir: Path, extra: str = ""):
    return run_inprocess(RunConfig.from_overrides(f"{SMALL} out-dir='{out_dir}' {extra}").resolved(), progress=False)


def metric_values(rows):
    """{column: {round: value}} of every number in metrics.csv rows (what a tracker must hold)."""
    values = {}
    for row in rows:
        for key, value in row.items():
            if key != "round" and isinstance(value, (int, float)):
                values.setdefault(key, {})[row["round"]] = float(value)
    return values


def tensorboard_scalars(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()
    return events, {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


@needs("tensorboard", "mlflow")
def test_tensorboard_and_mlflow_hold_every_metric_of_every_round_and_change_no_result(tmp_path):
    tracked = run(tmp_path / "runs" / "tracked", "tracking='tensorboard,mlflow'").out_dir
    plain = run(tmp_path / "runs" / "plain").out_dir
    assert (tracked / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    rows = read_metrics(tracked)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(plain)]
    expected = metric_values(rows)
    assert {"accuracy", "loss", "train_loss", "ssr_global", "num_failures", "seconds"} <= set(expected)
    assert sorted(expected["accuracy"]) == [2, 3]  # eval-every=2 and the last round

    events, scalars = tensorboard_scalars(tracked / "tensorboard")
    assert set(scalars) == set(expected)
    for key, by_round in expected.items():
        assert scalars[key] == pytest.approx(by_round, rel=1e-6, abs=1e-7), key  # float32 in events
    assert events.Tags()["images"] == ["partition"]
    assert {"config/text_summary", "summary/text_summary"} <= set(events.Tags()["tensors"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")  # the default store
    [mlflow_run] = client.search_runs([client.get_experiment_by_name("fedsign").experiment_id])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "tracked"
    config = json.loads((tracked / "config.json").read_text())
    assert mlflow_run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    assert set(mlflow_run.data.metrics) == set(expected)
    for key, by_round in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, key)}
        assert history == pytest.approx(by_round), key
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"accuracy.png", "partition.png", "summary.json", "metrics.csv", "config.json"} <= artifacts
    assert not (plain / "tensorboard").exists()


@needs("tensorboard", "mlflow")
def test_a_tracker_that_raises_warns_once_and_the_run_finishes(tmp_path, monkeypatch, capfd):
    def disk_full(self, rows):
        raise OSError(28, "No space left on device")

    def store_locked(self, out_dir, config):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(tracking.TensorBoardTracker, "log_rows", disk_full)
    monkeypatch.setattr(tracking.MLflowTracker, "__init__", store_locked)
    results = run(tmp_path / "run", "tracking='tensorboard,mlflow'")
    assert read_marker(results.out_dir)["status"] == "finished" and len(results.rows) == 3
    assert (results.out_dir / "model.safetensors").is_file()
    err = capfd.readouterr().err
    assert err.count("warning: tensorboard tracking failed (OSError: [Errno 28] No space left on device)") == 1
    assert err.count("warning: mlflow tracking failed (RuntimeError: database is locked)") == 1


def test_the_guard_drops_a_failing_tracker_and_keeps_the_others(capfd):
    calls = []

    class Failing:
        name = "failing"

        def log_rows(self, rows):
            raise ValueError("boom")

        def abort(self):
            calls.append("abort")

    class Working:
        name = "working"

        def log_rows(self, rows):
            calls.extend(r["round"] for r in rows)

        def finish(self, status):
            calls.append(status)

    trackers = tracking.Tracking([Failing(), Working()])
    trackers.log_rows([{"round": 1}])
    trackers.log_rows([{"round": 2}])
    trackers.finish("finished")
    assert calls == ["abort", 1, 2, "finished"]
    assert capfd.readouterr().err.count("warning: failing tracking failed (ValueError: boom)") == 1


def test_tracking_values_are_checked_at_validation_with_the_install_line(monkeypatch, capsys):
    refusals = {"tracking='wandb'": "use '' or a comma-separated list of tensorboard, mlflow",
                "tracking='mlflow,mlflow'": "names a tracker twice",
                "mlflow-uri='sqlite:///x.db'": "mlflow-uri is set but tracking does not include mlflow"}
    for overrides, message in refusals.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            RunConfig.from_overrides(overrides)
    neither = SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None))
    monkeypatch.setattr(tracking, "importlib", neither)  # as if neither package were installed
    for name in ("tensorboard", "mlflow"):
        with pytest.raises(ConfigError, match=rf"needs the {name} package.*pip install -e '\.\[tracking\]'"):
            RunConfig.from_overrides(f"tracking='{name}'")
    assert main(["validate", "-c", "tracking='mlflow'"]) == 2
    assert capsys.readouterr().err.startswith("error: tracking='mlflow' needs the mlflow package")


@needs("mlflow")
def test_mlflow_uri_schemes_and_relative_sqlite_paths(tmp_path):
    with pytest.raises(ConfigError, match="MLflow refuses plain folders"):
        RunConfig.from_overrides("tracking='mlflow' mlflow-uri='runs/mlruns'")
    config = RunConfig.from_overrides("tracking='mlflow' mlflow-uri='sqlite:///store/m.db'").resolved(tmp_path)
    assert config.mlflow_uri == f"sqlite:///{tmp_path / 'store' / 'm.db'}"
    assert tracking.mlflow_store("", tmp_path / "runs" / "x") == \
        (f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", str(tmp_path / "runs" / "mlartifacts"))


@needs("tensorboard")
def test_table1_passes_tracking_through_its_extra_overrides(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from table1_sweep.grid import Cell, Preset
    from table1_sweep.sweep import run_cell

    preset = Preset(datasets=("digits",), alphas=(0.5,), seeds=(0,), common=SMALL)
    cell = Cell("digits", 0.5, "fedavg", 0)
    run_cell(cell.overrides(preset, {}, tmp_path / cell.name, "tracking='tensorboard'"), "inprocess")
    _, scalars = tensorboard_scalars(tmp_path / cell.name / "tensorboard")
    assert scalars.keys() == metric_values(read_metrics(tmp_path / cell.name)).keys()
    assert sorted(scalars["accuracy"]) == [2, 3]


@needs("tensorboard", "mlflow")
def test_resume_logs_the_restored_rounds_again_and_tensorboard_keeps_one_value_per_round(tmp_path):
    out_dir = tmp_path / "runs" / "r"
    run(out_dir)  # untracked; tracking may be switched on when resuming
    expected = metric_values(read_metrics(out_dir))
    for _ in range(2):
        run(out_dir, "resume=true tracking='tensorboard,mlflow'")
        events, scalars = tensorboard_scalars(out_dir / "tensorboard")
        assert all(len(e) == len(set(e)) for e in
                   ([s.step for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]))
        assert scalars.keys() == expected.keys() and sorted(scalars["accuracy"]) == [2, 3]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    mlflow_runs = client.search_runs([client.get_experiment_by_name("fedsign").experiment_id])
    assert len(mlflow_runs) == 2 and {r.data.tags["fedsign.resumed"] for r in mlflow_runs} == {"true"}
    for mlflow_run in mlflow_runs:
        history = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, "accuracy")}
        assert history == pytest.approx(expected["accuracy"])


@needs("mlflow")
def test_runs_starting_together_share_a_new_sqlite_store(tmp_path):
    """A sweep's workers open the default store at once: its creation is serialised (unlocked, the
    processes failed in MLflow's schema migration, each running it on the same new database)."""
    script = ("import sys; from pathlib import Path; from fedsign.tracking import MLflowTracker; "
              "Path(sys.argv[1]).mkdir(parents=True); "
              "t = MLflowTracker(Path(sys.argv[1]), {'tracking': 'mlflow'}); "
              "t.log_rows([{'round': r, 'accuracy': r / 10} for r in (1, 2, 3)]); t.finish('finished')")
    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "runs" / f"w{i}")], cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for i in range(3)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    mlflow_runs = client.search_runs([client.get_experiment_by_name("fedsign").experiment_id])
    assert sorted(r.info.run_name for r in mlflow_runs) == ["w0", "w1", "w2"]
    assert all(len(client.get_metric_history(r.info.run_id, "accuracy")) == 3 for r in mlflow_runs)

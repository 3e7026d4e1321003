"""End-to-end runs: the in-process engine, the Ray simulation, and their equality."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsign.config import RunConfig
from fedsign.engines import run_inprocess
from fedsign.results import load_model_state, read_metrics

ROOT = Path(__file__).resolve().parents[1]
CIFAR10_TAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SMALL = "strategy='fedavg' dataset='digits' num-clients=6 clients-per-round=3 num-rounds=3 local-epochs=1 seed=3"


def run(overrides: str, out_dir: Path):
    config = RunConfig.from_overrides(f"{overrides} out-dir='{out_dir}'").resolved()
    return run_inprocess(config, progress=False)


def test_inprocess_run_writes_all_results(tmp_path):
    results = run(SMALL, tmp_path / "a")
    out = results.out_dir
    for name in ("config.json", "environment.json", "metrics.csv", "model.safetensors", "accuracy.png",
                 "partition_counts.csv", "partition.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "environment.json").read_text())["torch_threads"] == torch.get_num_threads()
    rows = read_metrics(out)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["num_replies"] == 3 and r["num_failures"] == 0 for r in rows)
    for column in ("accuracy", "loss", "train_loss", "seconds", "ssr_global", "ssr_clients"):
        assert all(r[column] is not None for r in rows), column
    assert 0.0 <= rows[-1]["accuracy"] <= 1.0


def test_same_config_and_seed_give_the_same_model(tmp_path):
    a = load_model_state(run(SMALL, tmp_path / "a").out_dir / "model.safetensors")
    b = load_model_state(run(SMALL, tmp_path / "b").out_dir / "model.safetensors")
    c = load_model_state(run(SMALL.replace("seed=3", "seed=4"), tmp_path / "c").out_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_existing_out_dir_is_refused_without_resume(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metrics.csv").write_text("keep me\n")
    proc = subprocess.run([sys.executable, "-m", "fedsign.cli", "run", "-c", f"{SMALL} out-dir='{out}'"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "resume=true" in proc.stderr
    assert (out / "metrics.csv").read_text() == "keep me\n"


def test_fedsign_run_reaches_085_on_digits_in_5_rounds(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedsign.cli", "run", "--quiet", "--run-config",
         "strategy='fedavg' dataset='digits' num-clients=10 clients-per-round=10 num-rounds=5 "
         f"dirichlet-alpha=0.5 seed=1 out-dir='{tmp_path / 'x'}'"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metrics(tmp_path / "x")[-1]["accuracy"] >= 0.85


@pytest.mark.requires_dataset("cifar10")
def test_short_run_on_real_cifar10_jpeg(tmp_path):
    results = run(f"dataset='cifar10' data-dir='{CIFAR10_TAR}' model='cnn' num-clients=100 clients-per-round=2 "
                  "num-rounds=1 local-epochs=1 batch-size=64 lr=0.02 seed=0", tmp_path / "c")
    row = read_metrics(results.out_dir)[0]
    assert row["num_replies"] == 2 and 0.0 <= row["accuracy"] <= 1.0 and row["loss"] > 0


@pytest.mark.flower
@pytest.mark.parametrize("strategy", ["moon", "fedsign"])
def test_ray_simulation_equals_inprocess(tmp_path, strategy):
    """One `flwr run` on Ray per strategy: same config and seed give the in-process model within 1e-6 (bit for
    bit when every process starts with OMP_NUM_THREADS=1; MOON also carries each client's previous model
    across rounds in the nodes' context). The FedSign run also tracks to TensorBoard from the ServerApp
    (when the tracking extra is installed, as `make` does): every metric of every round, no result changed."""
    overrides = SMALL.replace("num-rounds=3", "num-rounds=2").replace("strategy='fedavg'", f"strategy='{strategy}'")
    tracked = strategy == "fedsign" and importlib.util.find_spec("tensorboard") is not None
    ray_out = tmp_path / "ray"
    env = dict(os.environ, FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsign.cli", "simulate", "--flwr-home", str(tmp_path / "flwr"), "--run-config",
         f"{overrides} out-dir='{ray_out}'" + (" tracking='tensorboard'" if tracked else "")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ray_model = load_model_state(ray_out / "model.safetensors")
    local_model = load_model_state(run(overrides, tmp_path / "local").out_dir / "model.safetensors")
    assert ray_model.keys() == local_model.keys()
    for key in ray_model:  # bit-equal when both sides start with OMP_NUM_THREADS=1; last-bit otherwise
        assert torch.allclose(ray_model[key], local_model[key], atol=1e-6, rtol=0), key
    assert read_metrics(ray_out)[-1]["accuracy"] == pytest.approx(read_metrics(tmp_path / "local")[-1]["accuracy"])
    if tracked:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(ray_out / "tensorboard"), size_guidance={"scalars": 0}).Reload()
        rows = read_metrics(ray_out)
        assert {e.step: e.value for e in events.Scalars("accuracy")} == \
            pytest.approx({r["round"]: r["accuracy"] for r in rows})
        assert {"loss", "num_replies"} <= set(events.Tags()["scalars"])
    leftover = subprocess.run(["pgrep", "-f", f"flower-superlink.*{tmp_path / 'flwr'}"], capture_output=True)
    assert leftover.returncode == 1, "the local SuperLink was left running"

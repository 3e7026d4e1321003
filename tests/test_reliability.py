"""Reliability: bad replies, failing / crashing / hanging clients, min-replies, checkpoint and resume.

The Ray engine's failure test is in test_deployment.py (one run on a two-node Ray cluster).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from fedsign.algorithms import ALGORITHMS
from fedsign.checkpoint import CHECKPOINT_NAME, load_checkpoint
from fedsign.config import ConfigError, RunConfig
from fedsign.engines import InProcessGrid, run_inprocess
from fedsign.faults import parse_fail_partitions
from fedsign.results import load_model_state, read_metrics
from fedsign.server import make_strategy
from fedsign.models import float_state
from fedsign.task import build_run_model
from fedsign.tensors import to_array_record

SMALL = "dataset='digits' num-clients=4 clients-per-round=4 num-rounds=2 local-epochs=1 seed=5 device='cpu'"


def config_for(overrides: str, out_dir=None) -> RunConfig:
    out = f" out-dir='{out_dir}'" if out_dir is not None else ""
    return RunConfig.from_overrides(overrides + out).resolved()


# ------------------------------------------------------------- reply screening
def _replies(sent: list[Message], arrays: ArrayRecord, kinds: list[str]) -> list[Message]:
    """One reply per sent message: 'good' (arrays + noise) or a bad kind."""
    rng = np.random.default_rng(0)
    replies = []
    for msg, kind in zip(sent, kinds, strict=True):
        if kind == "error":
            replies.append(Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom"), reply_to=msg))
            continue
        values = {k: a.numpy() + rng.normal(0, 0.01, a.shape).astype(np.float32) for k, a in arrays.items()}
        first = next(iter(values))
        if kind == "nan":
            values[first] = np.full_like(values[first], np.nan)
        elif kind == "inf":
            values[first] = np.full_like(values[first], np.inf)
        elif kind == "shape":
            values[first] = values[first].reshape(-1)
        elif kind == "keys":
            values[first + ".renamed"] = values.pop(first)
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in values.items()}),
                              "metrics": MetricRecord({"num-examples": 10 + len(replies), "train_loss": 1.0})})
        replies.append(Message(content, reply_to=msg))
    return replies


@pytest.mark.parametrize("strategy", sorted(ALGORITHMS))
def test_every_strategy_drops_bad_replies_and_keeps_the_model_finite(strategy):
    kinds = ["good", "nan", "inf", "shape", "keys", "error", "good", "good"]
    config = config_for(f"strategy='{strategy}' num-clients={len(kinds)} clients-per-round={len(kinds)}")
    arrays = to_array_record(float_state(build_run_model(config)))
    grid = InProcessGrid(None, len(kinds), config.to_dict())

    screened = make_strategy(config)
    sent = list(screened.configure_train(1, arrays, ConfigRecord(), grid))
    replies = _replies(sent, arrays, kinds)
    outcome = screened.aggregate_round(1, replies)
    result = outcome.arrays
    assert len(outcome.dropped) == 5 and len(outcome.usable) == 3
    assert all(np.isfinite(a.numpy()).all() for a in result.values())
    assert list(result.keys()) == list(arrays.keys())

    clean = make_strategy(config)  # the same strategy given only the good replies
    sent_clean = list(clean.configure_train(1, arrays, ConfigRecord(), grid))
    good = [r for r, kind in zip(_replies(sent_clean, arrays, kinds), kinds, strict=True) if kind == "good"]
    expected, _ = clean.aggregate_train(1, good)
    for key in arrays:
        np.testing.assert_array_equal(result[key].numpy(), expected[key].numpy())


def test_fewer_than_min_replies_aggregate_nothing_and_leave_strategy_state_alone():
    config = config_for("strategy='feddyn' num-clients=4 clients-per-round=4 min-replies=3")
    arrays = to_array_record(float_state(build_run_model(config)))
    grid = InProcessGrid(None, 4, config.to_dict())
    strategy = make_strategy(config)
    sent = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    before = strategy.state_dict()
    result, metrics = strategy.aggregate_train(1, _replies(sent, arrays, ["good", "nan", "error", "good"]))
    assert result is None and metrics is None
    assert strategy.h == {} and strategy.state_dict()["rng"] == before["rng"]


# ------------------------------------------------------ failures in a real run
def test_inprocess_rounds_survive_raising_hanging_nan_and_wrong_shape_clients(tmp_path):
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # warm-up: the timeout is for training
    faults = "0:raise 1:nan@2 2:shape@2 3:hang@2"
    results = run_inprocess(config_for(f"{SMALL} round-timeout=5 fail-partitions='{faults}'", tmp_path / "f"),
                            progress=False)
    rows = read_metrics(results.out_dir)
    assert [(r["num_replies"], r["num_failures"]) for r in rows] == [(3, 1), (0, 4)]
    assert rows[1]["skipped"] == 1 and rows[1]["accuracy"] == rows[0]["accuracy"]  # model kept
    model = load_model_state(results.out_dir / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in model.values())


def test_round_below_min_replies_is_skipped_and_counted(tmp_path):
    results = run_inprocess(config_for(f"{SMALL} min-replies=3 fail-partitions='0:raise@2 1:raise@2'",
                                       tmp_path / "m"), progress=False)
    rows = read_metrics(results.out_dir)
    assert rows[0]["skipped"] is None and rows[0]["num_failures"] == 0
    assert (rows[1]["num_replies"], rows[1]["num_failures"], rows[1]["skipped"]) == (2, 2, 1)
    assert rows[1]["accuracy"] == rows[0]["accuracy"]


def test_crash_injection_is_refused_where_the_client_shares_the_process(tmp_path):
    with pytest.raises(ConfigError, match="crash"):
        run_inprocess(config_for(f"{SMALL} fail-partitions='1:crash'", tmp_path / "c"), progress=False)
    assert not (tmp_path / "c").exists()
    assert parse_fail_partitions("1:crash@3, 2:nan", 4) == {1: [("crash", 3)], 2: [("nan", None)]}


# ------------------------------------------------------- checkpoint and resume
RESUMABLE = ("strategy='feddyn' dataset='digits' num-clients=4 clients-per-round=2 num-rounds=4 local-epochs=1 "
             "checkpoint-every=2 seed=7 device='cpu'")


def test_checkpoint_holds_model_strategy_state_rows_and_client_state(tmp_path):
    results = run_inprocess(config_for(RESUMABLE.replace("num-rounds=4", "num-rounds=2"), tmp_path / "k"),
                            progress=False)
    checkpoint = load_checkpoint(results.out_dir)
    assert checkpoint.round == 2 and len(checkpoint.rows) == 2
    assert set(checkpoint.strategy) == {"rng", "h"} and checkpoint.strategy["h"]
    assert sorted(checkpoint.client_states) == [0, 1, 2, 3]
    trained = [s for s in checkpoint.client_states.values() if "client-state.feddyn-grad" in s.array_records]
    assert len(trained) >= 2  # two clients per round: the participants keep g_k
    final = load_model_state(results.out_dir / "model.safetensors")
    for key, value in checkpoint.arrays.items():
        np.testing.assert_array_equal(value, final[key].numpy())
    assert not [p for p in results.out_dir.iterdir() if p.name.startswith(".")]  # no temp files left


def test_run_killed_mid_way_resumes_to_the_uninterrupted_result(tmp_path):
    reference = run_inprocess(config_for(RESUMABLE, tmp_path / "ref"), progress=False).out_dir
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fedsign.cli", "run", "--quiet", "-c", f"{RESUMABLE} out-dir='{out}'"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "metrics.csv").exists() and len(read_metrics(out)) >= 3):  # round 3 done, not saved
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert load_checkpoint(out).round == 2 and not (out / "model.safetensors").exists()

    run_inprocess(config_for(RESUMABLE + " resume=true", out), progress=False)
    # Equal up to float reduction order: a loaded CPU can change how oneDNN splits work between
    # threads across processes, which moves the last bits (seen once under heavy load).
    a, b = load_model_state(reference / "model.safetensors"), load_model_state(out / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)

    def without_time(rows):
        return [{k: pytest.approx(v, rel=1e-5) if isinstance(v, float) else v for k, v in r.items()
                 if k != "seconds"} for r in rows]

    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(out)] == \
        without_time(read_metrics(reference))
    assert load_checkpoint(out).round == 4 and (out / CHECKPOINT_NAME).is_file()

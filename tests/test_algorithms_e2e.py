"""Each algorithm end to end in the in-process engine on digits (about a minute each on 2 CPU cores)."""

import pytest

from fedsign.config import RunConfig
from fedsign.engines import run_inprocess
from fedsign.results import read_metrics

SETTING = "dataset='digits' num-clients=10 clients-per-round=5 num-rounds=8 dirichlet-alpha=0.5 seed=0 device='cpu'"


@pytest.mark.parametrize("strategy", ["fedprox", "moon", "feddyn", "fedpan", "fedsign"])
def test_algorithm_reaches_085_on_digits(strategy, tmp_path):
    config = RunConfig.from_overrides(f"strategy='{strategy}' {SETTING} out-dir='run'").resolved(tmp_path)
    rows = read_metrics(run_inprocess(config, progress=False).out_dir)
    assert [r["round"] for r in rows] == list(range(1, 9))
    assert all(r["num_replies"] == 5 and r["ssr_clients"] is not None for r in rows)
    assert rows[-1]["accuracy"] >= 0.85, [round(r["accuracy"], 3) for r in rows]
    if strategy == "feddyn":
        assert rows[-1]["participant_mean_accuracy"] is not None

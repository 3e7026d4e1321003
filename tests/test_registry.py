"""The algorithm registry is the one source of names and hyperparameters."""

import re
import typing
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients import ClientAlgorithm
from fedsign.algorithms import (ALGORITHMS, HYPERPARAMETERS, Algorithm, AlgorithmOptions, client_hyperparameters,
                                hyperparameter_table)
from fedsign.client_app import received_config
from fedsign.config import ConfigError, RunConfig
from fedsign.engines import InProcessGrid, run_inprocess
from fedsign.results import load_model_state
from fedsign.server import make_strategy
from strategies import FedAvg

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_entry_names_its_strategy_and_client(name):
    entry = ALGORITHMS[name]
    assert issubclass(entry.strategy_class(), FedAvg)
    assert issubclass(entry.client_class(), ClientAlgorithm) and entry.client_class().name == name
    for h in entry.hyperparameters:  # RunConfig has the field, with the registry's default and type
        assert getattr(RunConfig(), h.field) == h.default and type(getattr(RunConfig(), h.field)) is type(h.default)
    if entry.tuning is not None:
        assert entry.tuning[0] in {h.key for h in entry.hyperparameters}


def test_run_config_declares_every_registered_option_as_a_typed_field():
    """RunConfig's hyperparameter fields are written out (mypy and IDEs see ``config.proximal_mu: float``)."""
    for entry in ALGORITHMS.values():
        assert entry.options is None or issubclass(AlgorithmOptions, entry.options), entry.name
    hints = typing.get_type_hints(RunConfig)
    assert {h.field: type(h.default) for h in HYPERPARAMETERS.values()} == {
        name: hints[name] for name in typing.get_type_hints(AlgorithmOptions)}
    assert hash(RunConfig()) == hash(RunConfig()) and RunConfig(proximal_mu=0.5) != RunConfig()


class ShrinkClient(ClientAlgorithm):
    """A toy algorithm for the test below: cross-entropy plus 0.05 * ||theta||^2, no state."""

    name = "shrink"
    has_term = True

    def loss_term(self, *, model, params, features, x, y, inputs, global_params, config):
        return 0.05 * sum((p ** 2).sum() for p in params.values())


def test_a_new_algorithm_is_its_client_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "shrink", Algorithm("shrink", "Shrink", f"{__name__}:ShrinkClient"))
    base = ("dataset='digits' num-clients=3 clients-per-round=3 num-rounds=2 local-epochs=1 train-samples=300 "
            "engine='inprocess' device='cpu' seed=3")
    models = {}
    for strategy in ("fedavg", "shrink"):
        config = RunConfig.from_overrides(f"{base} strategy='{strategy}' out-dir='{tmp_path / strategy}'").resolved()
        assert type(make_strategy(config)) is FedAvg
        results = run_inprocess(config, progress=False)
        assert len(results.rows) == 2 and all(r["num_replies"] == 3 for r in results.rows)
        models[strategy] = load_model_state(results.out_dir / "model.safetensors")
    norm = {s: float(sum((t.float() ** 2).sum() for t in m.values())) for s, m in models.items()}
    assert norm["shrink"] < 0.95 * norm["fedavg"], norm  # the term reached the clients' training


@pytest.mark.parametrize("key", [k for k, h in HYPERPARAMETERS.items() if h.choices or h.minimum is not None])
def test_validate_refuses_out_of_range_hyperparameters_naming_the_key(key):
    h = HYPERPARAMETERS[key]
    bad = "no-such-choice" if h.choices else h.minimum - (0 if h.open_minimum else 1)
    with pytest.raises(ConfigError, match=f"^{re.escape(key)} must be") as err:
        RunConfig().replace(**{h.field: bad}).validate()
    assert "\n" not in str(err.value)


def test_readme_table_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- algorithm-hyperparameters -->\n(.*?)<!-- /algorithm-hyperparameters -->", readme, re.S)
    assert block is not None and block.group(1) == hyperparameter_table(), \
        "README's algorithm table differs from the registry: paste the output of `fedsign algorithms`"


@pytest.mark.parametrize("strategy,sign_gamma", [("fedprox", 0.0), ("moon", 0.0), ("feddyn", 0.0),
                                                 ("fedpan", 0.0), ("fedsign", 0.0), ("fedavg", 0.02)])
def test_strategy_sends_its_hyperparameters_and_clients_train_with_them(strategy, sign_gamma):
    config = RunConfig(strategy=strategy, sign_gamma=sign_gamma, num_clients=4, clients_per_round=2,
                       proximal_mu=0.3, moon_mu=1.5, feddyn_alpha=0.2, pan_amplitude=0.05, fedsign_gamma=0.1)
    grid = InProcessGrid(client_app=None, num_nodes=4, run_config=config.to_dict())
    messages = list(make_strategy(config).configure_train(1, ArrayRecord(), ConfigRecord(), grid))
    expected = {h.key: getattr(config, h.field) for h in client_hyperparameters(strategy, sign_gamma)}
    assert expected and all({k: m.content["config"][k] for k in expected} == expected for m in messages)
    # a node whose run config says otherwise trains with what the strategy sent
    stale = RunConfig(strategy=strategy, sign_gamma=sign_gamma, num_clients=4, clients_per_round=2)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                      run_config=stale.to_dict())
    received = received_config(messages[0], context)
    assert {h.key: getattr(received, h.field) for h in client_hyperparameters(strategy, sign_gamma)} == expected
    missing = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")
    with pytest.raises(ValueError, match="lacks hyperparameter"):
        received_config(missing, context)

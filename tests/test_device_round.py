"""The round that stays on the device: models by reference within the process, one reused client
model, client state as tensors, and the same results as a fresh model per client."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsign.client_app import app as client_app
from fedsign.config import RunConfig
from fedsign.engines import InProcessGrid, VectorizedInProcessGrid
from fedsign.results import load_model_state, read_metrics
from fedsign.server import make_strategy, run_server
from fedsign.models import float_state, hand_over_float_state
from fedsign.task import CLIENT_MODELS, ClientModels, build_run_model
from fedsign.tensors import DeviceRecordDict, finite_flags, pack, to_array_record, unpack
from clients import make_client_algorithm
from fedsign.models import build_model
from fedsign.training import TrainSettings, term_grad_ratio

SMALL = ("dataset='digits' num-clients=6 clients-per-round=3 local-epochs=1 seed=3 "
         "checkpoint-every=0 moon-out-dim=16")


def config_for(overrides: str, out_dir, rounds: int = 3) -> RunConfig:
    return RunConfig.from_overrides(f"{SMALL} num-rounds={rounds} {overrides} out-dir='{out_dir}'").resolved()


def test_pack_and_unpack_give_the_same_tensors_by_reference_and_as_an_array_record():
    tensors = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    local = pack({"metrics": MetricRecord({"n": 1})}, "arrays", tensors, by_reference=True)
    remote = pack({"metrics": MetricRecord({"n": 1})}, "arrays", tensors, by_reference=False)
    assert isinstance(local, DeviceRecordDict) and not local.array_records
    assert unpack(local, "arrays", "cpu")["w"] is tensors["w"]  # no copy within the process
    assert isinstance(remote["arrays"], ArrayRecord)
    for content in (local, remote):
        got = unpack(content, "arrays", "cpu")
        assert list(got) == ["w", "b"] and all(torch.equal(got[k], tensors[k]) for k in tensors)
        assert unpack(content, "other", "cpu") is None
    assert finite_flags([tensors, {"w": torch.tensor([1.0, float("inf")])}, {}]) == [True, False, True]


def test_a_pooled_model_hands_its_trained_tensors_over_and_gets_fresh_ones():
    model = build_model("resnet20", num_classes=3, in_channels=1, image_size=8)
    model.classifier.weight_alias = model.classifier.weight  # a tensor under two names is handed over once
    expected = float_state(model)
    owned = {k: v.data_ptr() for k, v in model.state_dict().items() if v.is_floating_point()}
    handed = hand_over_float_state(model)
    assert list(handed) == list(expected) and all(torch.equal(handed[k], expected[k]) for k in expected)
    assert all(handed[k].data_ptr() == owned[k] for k in owned)  # no copy
    assert handed["classifier.weight"] is handed["classifier.weight_alias"]
    current = dict(model.state_dict())
    assert all(current[k].data_ptr() != owned[k] for k in owned)  # the model holds new tensors
    assert model.classifier.weight_alias is model.classifier.weight and isinstance(model.classifier.weight,
                                                                                  torch.nn.Parameter)
    with torch.no_grad():  # the next client loads and trains it: the handed-over values stay
        for p in model.parameters():
            p.fill_(7.0)
    assert all(torch.equal(handed[k], expected[k]) for k in expected)


def test_client_models_are_reused_with_reset_buffers_and_built_again_only_when_all_are_busy():
    config = RunConfig.from_overrides("dataset='digits' model='resnet20'").resolved()
    models = ClientModels()
    algorithm = make_client_algorithm(config)
    first = models.acquire(config, algorithm, torch.device("cpu"))
    tracked = [b for n, b in first.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked
    tracked[0].add_(5)
    first.classifier.weight.grad = torch.ones_like(first.classifier.weight)
    second = models.acquire(config, algorithm, torch.device("cpu"))  # the first is busy: a second one
    assert second is not first and models.built == 2
    models.release(first)
    again = models.acquire(config, algorithm, torch.device("cpu"))
    assert again is first and models.built == 2
    assert int(tracked[0]) == 0 and first.classifier.weight.grad is None  # as freshly built
    other = models.acquire(config.replace(seed=config.seed + 1), algorithm, torch.device("cpu"))
    assert other is not first and models.built == 3  # another config: its own model


@pytest.mark.parametrize("strategy", ["moon", "feddyn"])
def test_inprocess_run_keeps_models_on_the_device_and_builds_one_client_model(tmp_path, monkeypatch, strategy):
    """No ArrayRecord is made in a whole in-process run (checkpoints off); clients share one model;
    MOON's and FedDyn's client state stays in tensors."""
    made = []
    real_init = ArrayRecord.__init__

    def counting_init(self, *args, **kwargs):
        made.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ArrayRecord, "__init__", counting_init)
    config = config_for(f"strategy='{strategy}'", tmp_path / "run")
    built = CLIENT_MODELS.built
    grid = InProcessGrid(client_app, config.num_clients, config.to_dict())
    run_server(grid, config, progress=False)
    assert made == []
    assert CLIENT_MODELS.built - built == 1
    states = [c.state for c in grid.contexts.values() if c.state.tensors]
    assert states and all(isinstance(s, DeviceRecordDict) and not s.array_records for s in states)
    assert all(isinstance(t, torch.Tensor) for s in states for named in s.tensors.values() for t in named.values())
    # a checkpoint turns the client state into ArrayRecords and back
    records = grid.client_states()
    restored = InProcessGrid(client_app, config.num_clients, config.to_dict())
    restored.load_client_states(records)
    for pid, context in grid.contexts.items():
        for name, tensors in context.state.tensors.items():
            again = restored.contexts[pid].state.tensors[name]
            assert all(torch.equal(tensors[k], again[k]) for k in tensors)


@pytest.mark.parametrize("strategy,model", [("moon", "cnn"), ("fedsign", "resnet20")])
def test_a_reused_client_model_gives_what_a_fresh_model_per_client_gives(tmp_path, monkeypatch, strategy, model):
    """The reference is the earlier design (and a Ray worker's first client): a model built per client.
    resnet20 has BN counters, state a reused model must not carry over."""
    overrides = f"strategy='{strategy}' model='{model}'"
    config = config_for(overrides, tmp_path / "a", rounds=2)
    reused = read_metrics(run_server(InProcessGrid(client_app, 6, config.to_dict()), config, progress=False).out_dir)

    def fresh(self, config, algorithm, device):
        self.built += 1
        model = build_run_model(config, algorithm).to(device)
        model._client_models_entry = ("fresh", {})
        return model

    monkeypatch.setattr(ClientModels, "acquire", fresh)
    monkeypatch.setattr(ClientModels, "release", lambda self, model: None)
    config = config_for(overrides, tmp_path / "b", rounds=2)
    fresh_rows = read_metrics(run_server(InProcessGrid(client_app, 6, config.to_dict()), config,
                                         progress=False).out_dir)
    a, b = (load_model_state(tmp_path / d / "model.safetensors") for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("accuracy", "train_loss", "term_grad_ratio", "ssr_clients"):
        assert [r.get(key) for r in reused] == [r.get(key) for r in fresh_rows], key


def test_vectorized_round_trains_every_client_on_one_shared_model(tmp_path):
    config = config_for("strategy='fedsign' engine='vectorized'", tmp_path / "v")
    built = CLIENT_MODELS.built
    grid = VectorizedInProcessGrid(client_app, config.num_clients, config.to_dict())
    run_server(grid, config, progress=False)
    assert grid.fallback_reason is None and CLIENT_MODELS.built - built == 1


class SerializingGrid(InProcessGrid):
    """Messages and client state as between processes (a Ray simulation's): ArrayRecords only."""

    shares_process = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for context in self.contexts.values():
            context.state = RecordDict()


@pytest.mark.parametrize("strategy", ["moon", "feddyn"])
def test_models_by_reference_equal_models_as_array_records(tmp_path, strategy):
    models = []
    for name, grid_class in (("ref", InProcessGrid), ("records", SerializingGrid)):
        config = config_for(f"strategy='{strategy}'", tmp_path / name)
        run_server(grid_class(client_app, config.num_clients, config.to_dict()), config, progress=False)
        models.append(load_model_state(tmp_path / name / "model.safetensors"))
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_strategy_sends_by_reference_only_to_a_grid_in_this_process(tmp_path):
    config = config_for("strategy='fedavg'", tmp_path / "s")
    tensors = float_state(build_run_model(config))
    local = InProcessGrid(client_app, config.num_clients, config.to_dict())
    sent = list(make_strategy(config).configure_train(1, tensors, ConfigRecord(), local))
    assert all(isinstance(m.content, DeviceRecordDict) for m in sent)

    remote = SerializingGrid(client_app, config.num_clients, config.to_dict())
    sent = list(make_strategy(config).configure_train(1, to_array_record(tensors), ConfigRecord(), remote))
    assert all(type(m.content) is RecordDict and "arrays" in m.content.array_records for m in sent)


def test_term_grad_ratio_draws_its_dropout_from_its_seed_and_leaves_the_global_rng_alone():
    model = build_model("vgg8", num_classes=10, in_channels=3, image_size=32)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (16,))
    settings = TrainSettings(epochs=1, batch_size=8, lr=0.1)

    def term(params, features, x, y):
        return 0.01 * sum(p.sum() for p in params.values())

    ratios = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        ratios.append(term_grad_ratio(model, images, labels, settings, seed=5, transform=lambda x, g: x.float() / 255,
                                      term=term))
        assert torch.equal(torch.get_rng_state(), state)
    assert ratios[0] == ratios[1]

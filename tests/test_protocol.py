"""Table-1 protocol pieces in the platform: term_grad_ratio, the train subset and the validation split."""

import numpy as np
import pytest
import torch
from torch import nn

from clients.fedsign import sign_term
from fedsign.config import RunConfig
from fedsign.data import DATASETS, loaded_dataset, make_batch_transform
from fedsign.engines import run_inprocess
from fedsign.results import read_metrics
from fedsign.task import run_partitions, run_train_split, train_split
from fedsign.training import TrainSettings, batch_order, term_grad_ratio, train_local


class Linear(nn.Module):
    """A linear classifier with the platform's model interface (``return_features``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x, return_features=False):
        features = x.flatten(1)
        logits = self.fc(features)
        return (logits, features) if return_features else logits


def test_term_grad_ratio_is_the_first_steps_gradient_norm_ratio():
    torch.manual_seed(0)
    model = Linear()
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (40,))
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.1)
    transform = make_batch_transform(DATASETS["digits"], train=True)
    received = {k: v.detach().clone() for k, v in model.named_parameters()}
    term = lambda p, f, x, y: sign_term(p, received, 0.3, "sum")  # noqa: E731
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ratio = term_grad_ratio(model, images, labels, settings, seed=7, transform=transform, term=term)
    # by hand: the first batch train_local draws with seed 7, CE gradient, closed-form sign-term gradient
    generator = torch.Generator().manual_seed(7)
    idx = batch_order(40, 16, 2, generator)[0]
    x, y = transform(images[idx], generator), labels[idx]
    ce = nn.functional.cross_entropy(model(x), y)
    ce_norm = torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(ce, list(model.parameters()))))
    s = {k: torch.sigmoid(v) * (1 - torch.sigmoid(v)) for k, v in received.items()}
    term_norm = torch.sqrt(sum((0.3 * v * (received[k] != 0)).pow(2).sum() for k, v in s.items()))
    assert ratio == pytest.approx(float(term_norm / ce_norm), rel=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing moved


def test_train_local_measures_the_ratio_on_its_own_first_step_without_changing_the_training():
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (40,), generator=torch.Generator().manual_seed(2))
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.1, momentum=0.9)
    transform = make_batch_transform(DATASETS["digits"], train=True)
    models = []
    for _ in range(3):
        torch.manual_seed(0)
        models.append(Linear())
    received = {k: v.detach().clone() for k, v in models[0].named_parameters()}
    term = lambda p, f, x, y: sign_term(p, received, 0.3, "sum")  # noqa: E731
    expected = term_grad_ratio(models[0], images, labels, settings, seed=7, transform=transform, term=term)
    measured = train_local(models[0], images, labels, settings, seed=7, transform=transform, term=term,
                           measure_term=True)
    plain = train_local(models[1], images, labels, settings, seed=7, transform=transform, term=term)
    assert measured.term_grad_ratio == pytest.approx(expected, rel=1e-6) and plain.term_grad_ratio is None
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))  # same steps
    assert not all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[2].parameters()))  # it trained


def test_runs_write_term_grad_ratio_only_with_a_term(tmp_path):
    base = ("dataset='digits' num-clients=4 clients-per-round=2 num-rounds=2 local-epochs=1 "
            "min-partition-size=5 validation-fraction=0.2")
    rows = {}
    for name, extra in {"fedavg": "strategy='fedavg'", "fedsign": "strategy='fedsign' fedsign-gamma=0.01",
                        "strong": "strategy='fedsign' fedsign-gamma=0.1"}.items():
        config = RunConfig.from_overrides(f"{base} {extra} out-dir='{tmp_path / name}'").resolved()
        run_inprocess(config, progress=False)
        rows[name] = read_metrics(tmp_path / name)
    assert all(r.get("term_grad_ratio") is None for r in rows["fedavg"])
    assert all(r["term_grad_ratio"] >= 0.01 for r in rows["fedsign"])  # the default reduction acts at 0.01
    # round 1 starts both runs from the same θ⁰ and batches: the ratio is linear in gamma
    assert rows["strong"][0]["term_grad_ratio"] == pytest.approx(10 * rows["fedsign"][0]["term_grad_ratio"], rel=1e-4)
    assert all(0 <= r["val_accuracy"] <= 1 for r in rows["fedavg"])


def test_validation_split_is_disjoint_from_every_clients_data_and_fixed_across_seeds():
    config = RunConfig(dataset="digits", num_clients=8, validation_fraction=0.2, train_samples=1000,
                       min_partition_size=5).resolved()
    pool, validation = run_train_split(config)
    assert len(pool) + len(validation) == 1000 and len(validation) == 200
    clients = np.concatenate(run_partitions(config))
    assert np.array_equal(np.sort(clients), pool)  # the clients share exactly the pool ...
    assert not set(clients) & set(validation)  # ... and never see a validation image
    other_seed = config.replace(seed=5)
    assert np.array_equal(run_train_split(other_seed)[1], validation)  # the split is part of the data
    assert not all(np.array_equal(a, b) for a, b in zip(run_partitions(other_seed), run_partitions(config)))
    labels = np.asarray(loaded_dataset("digits", "").train_y)
    assert np.bincount(labels[validation], minlength=10).min() >= 15  # stratified: every class held out
    with pytest.raises(ValueError, match="train-samples=99999 exceeds"):
        train_split("digits", "", 99999, 0.0)

"""fedsign.training's learning-rate schedule: the cosine schedule follows its closed form, the constant one is
the plain SGD loop it always was (CPU, seconds)."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fedsign.data import DATASETS, load_dataset, make_batch_transform
from fedsign.models import build_model
from fedsign.training import TrainSettings, batch_order, cosine_lr, train_local

DIGITS = DATASETS["digits"]
SETTINGS = TrainSettings(epochs=2, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data.train_x[:300], data.train_y[:300].long()


def mlp(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", DIGITS.num_classes, in_channels=DIGITS.channels, image_size=DIGITS.image_size)


def recorded_lrs(monkeypatch, model, x, y, settings):
    """The learning rate of every optimizer step train_local takes."""
    lrs = []
    step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    stats = train_local(model, x, y, settings, seed=3, transform=make_batch_transform(DIGITS, train=True))
    return lrs, stats.steps


def test_cosine_schedule_follows_its_closed_form(monkeypatch, digits):
    settings = replace(SETTINGS, lr_schedule="cosine")
    lrs, steps = recorded_lrs(monkeypatch, mlp(), *digits, settings)
    assert steps == len(lrs) == 2 * math.ceil(300 / 64)
    expected = [0.1 * (1 + math.cos(math.pi * k / steps)) / 2 for k in range(steps)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == 0.1 and lrs[-1] < 0.1 * 0.03 and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert [cosine_lr(0.1, k, steps) for k in range(steps)] == lrs
    constant, _ = recorded_lrs(monkeypatch, mlp(), *digits, SETTINGS)
    assert set(constant) == {0.1}


def test_constant_schedule_is_the_plain_sgd_loop(digits):
    """Constant lr: bit-identical to torch.optim.SGD over the same batches (what train_local always did);
    the cosine schedule moves the weights elsewhere."""
    x, y = digits
    transform = make_batch_transform(DIGITS, train=True)
    trained = mlp()
    train_local(trained, x, y, SETTINGS, seed=3, transform=transform)
    reference = mlp()
    optimizer = torch.optim.SGD(reference.parameters(), lr=SETTINGS.lr, momentum=SETTINGS.momentum,
                                weight_decay=SETTINGS.weight_decay)
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    reference.train()
    for idx in batch_order(len(x), SETTINGS.batch_size, SETTINGS.epochs, generator):
        loss = F.cross_entropy(reference(transform(x[idx], generator)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for (name, p), q in zip(trained.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
    cosine = mlp()
    train_local(cosine, x, y, replace(SETTINGS, lr_schedule="cosine"), seed=3,
                transform=transform)
    assert not torch.equal(cosine.classifier.weight, trained.classifier.weight)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'; use one of constant, cosine"):
        TrainSettings(epochs=1, batch_size=8, lr=0.1, lr_schedule="step")

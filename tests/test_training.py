"""fedsign.training's learning-rate schedule: the cosine schedule follows its closed form, the constant one is
the plain SGD loop it always was; a training resumed from an epoch's progress ends where the uninterrupted one
does (CPU, seconds)."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fedsign.data import DATASETS, load_dataset, make_batch_transform
from fedsign.models import build_model
from fedsign.training import TrainProgress, TrainSettings, batch_order, cosine_lr, train_local

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


def test_a_training_resumed_from_an_epochs_progress_ends_bitwise_where_the_uninterrupted_one_ends(digits):
    x, y = digits[0][:128], digits[1][:128]
    settings = replace(SETTINGS, epochs=3, batch_size=48, lr_schedule="cosine")  # 3 steps an epoch, the last short
    transform = make_batch_transform(DIGITS, train=True)

    def resnet():  # BN buffers, momentum and augmentation all carry over
        torch.manual_seed(0)
        return build_model("resnet20", DIGITS.num_classes, in_channels=DIGITS.channels, image_size=DIGITS.image_size)

    whole, progress = resnet(), []
    stats = train_local(whole, x, y, settings, seed=5, transform=transform, on_epoch=progress.append)
    assert [(p.epochs_done, p.steps) for p in progress] == [(1, 3), (2, 6)]  # none after the last epoch
    for kept in progress:
        resumed = resnet()  # as a new process builds it: the progress brings the weights
        torch.manual_seed(123)  # whatever ran before
        again = train_local(resumed, x, y, settings, seed=5, transform=transform,
                            resume=TrainProgress.from_tensors(*kept.to_tensors()))
        assert again == stats
        assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
    with pytest.raises(ValueError, match="cannot resume after epoch 2 .* of a call of 2 epochs"):
        train_local(resnet(), x, y, replace(settings, epochs=2), seed=5, transform=transform, resume=progress[1])
    with pytest.raises(ValueError, match="momentum buffers do not fit this model"):
        train_local(mlp(), x, y, settings, seed=5, transform=transform, resume=progress[0])

"""engine='vectorized': the same final models as the sequential in-process engine."""

import pytest
import torch

from fedsign.config import RunConfig
from fedsign.data import DATASETS, make_batch_transform
from fedsign.engine import run_inprocess
from fedsign.models import build_model
from fedsign.results import load_model_state
from fedsign.training import TrainSettings, train_local
from fedsign.vectorized import ClientJob, train_clients

BASE = ("dataset='digits' num-clients=6 clients-per-round=3 num-rounds=2 local-epochs=1 "
        "dirichlet-alpha=0.5 seed=5 min-partition-size=5")


def final_model(tmp_path, overrides: str, engine: str) -> dict[str, torch.Tensor]:
    out = tmp_path / engine
    config = RunConfig.from_overrides(f"{BASE} {overrides} engine='{engine}' out-dir='{out}'").resolved()
    return load_model_state(run_inprocess(config, progress=False).out_dir / "model.safetensors")


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "moon", "feddyn", "fedpan", "fedsign"])
def test_vectorized_equals_sequential(tmp_path, strategy):
    extra = f"strategy='{strategy}'"
    if strategy == "fedprox":
        extra += " proximal-mu=0.5"  # strong enough that a wrong term would show
    if strategy == "fedsign":
        extra += " fedsign-reduction='sum' fedsign-gamma=0.001"
    sequential = final_model(tmp_path, extra, "inprocess")
    vectorized = final_model(tmp_path, extra, "vectorized")
    assert sequential.keys() == vectorized.keys()
    for key in sequential:
        assert torch.allclose(sequential[key], vectorized[key], atol=1e-4, rtol=0), key


def test_sign_term_composes_under_vmap(tmp_path):
    extra = "strategy='feddyn' sign-gamma=0.001 fedsign-reduction='sum'"
    a, b = final_model(tmp_path, extra, "inprocess"), final_model(tmp_path, extra, "vectorized")
    assert all(torch.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a)


def _jobs(n_samples, in_channels=1, size=8):
    g = torch.Generator().manual_seed(0)
    return [ClientJob(torch.randint(0, 256, (n, in_channels, size, size), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (n,), generator=g), seed=10 + i) for i, n in enumerate(n_samples)]


@pytest.mark.parametrize("name,lr,tol", [("cnn", 0.05, 1e-5), ("resnet20", 0.005, 1e-4)])
def test_train_clients_matches_train_local(name, lr, tol):
    """Unequal client sizes (short last batches, fewer steps), momentum, weight decay,
    clipping and BN buffers: each client ends where its own train_local would."""
    jobs = _jobs([70, 45, 32])
    settings = TrainSettings(epochs=2, batch_size=16, lr=lr, momentum=0.9, weight_decay=1e-3, grad_clip=1.0)
    transform = make_batch_transform(DATASETS["digits"], train=True)
    torch.manual_seed(0)
    model = build_model(name, 10, 1, 8)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params, buffers, stats = train_clients(model, dict(model.named_parameters()), dict(model.named_buffers()),
                                           jobs, settings, DATASETS["digits"])
    for c, job in enumerate(jobs):
        model.load_state_dict(start)
        expected = train_local(model, job.images, job.labels, settings, seed=job.seed, transform=transform)
        assert stats[c].steps == expected.steps and stats[c].num_examples == expected.num_examples
        assert stats[c].ce_loss == pytest.approx(expected.ce_loss, rel=1e-4)
        for key, value in model.named_parameters():
            assert torch.allclose(value.detach(), params[key][c], atol=tol, rtol=0), key
        for key, value in model.named_buffers():
            if value.is_floating_point():
                assert torch.allclose(value, buffers[key][c], atol=tol * 10, rtol=1e-3), key


def test_hang_faults_fall_back_to_sequential(tmp_path, capsys):
    base = BASE.replace("num-rounds=2", "num-rounds=1")
    config = RunConfig.from_overrides(f"{base} engine='vectorized' fail-partitions='0:hang@9' "
                                      f"out-dir='{tmp_path / 'h'}'").resolved()
    run_inprocess(config, progress=False)
    assert "running clients sequentially" in capsys.readouterr().out


def test_unbatchable_op_falls_back_to_the_same_sequential_result(tmp_path, monkeypatch, capsys):
    """torch.func raises NotImplementedError for an op without a batching rule: the round runs sequentially."""
    import fedsign.vectorized

    def no_batching_rule(*args, **kwargs):
        raise NotImplementedError("Batching rule not implemented for aten::some_op\nmore detail")

    sequential = final_model(tmp_path, "strategy='fedavg'", "inprocess")
    monkeypatch.setattr(fedsign.vectorized, "train_clients", no_batching_rule)
    fallback = final_model(tmp_path, "strategy='fedavg'", "vectorized")
    out = capsys.readouterr().out
    assert "falling back to sequential clients: NotImplementedError: Batching rule not implemented" in out
    for key in sequential:
        assert torch.equal(sequential[key], fallback[key]), key

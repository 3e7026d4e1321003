"""engine='vectorized': the same final models as the sequential in-process engine; fixed shapes
(padding, masks, masked BatchNorm), no host sync per step, one SGD step, the fallback."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fedsign.algorithms import ALGORITHMS
from fedsign.config import RunConfig
from fedsign.data import DATASETS, make_batch_transform
from fedsign.engines import run_inprocess
from fedsign.models import build_model
from fedsign.results import load_model_state, read_metrics
from fedsign.training import TrainSettings, sgd_step, train_local
from fedsign.engines.vectorized import ClientJob, BatchMask, masked_batch_norm, train_clients

# FedRepo's init, the setting of the README's "within 1e-4" (under PyTorch's init, FedPAN with the sign term
# differs by 2.2e-4 after 2 rounds: larger weights, larger float drift between vmap and the loop).
BASE = ("dataset='digits' num-clients=6 clients-per-round=3 num-rounds=2 local-epochs=1 "
        "dirichlet-alpha=0.5 seed=5 min-partition-size=5 init='fedrepo'")


def final_model(tmp_path, overrides: str, engine: str) -> dict[str, torch.Tensor]:
    out = tmp_path / engine
    config = RunConfig.from_overrides(f"{BASE} {overrides} engine='{engine}' out-dir='{out}'").resolved()
    return load_model_state(run_inprocess(config, progress=False).out_dir / "model.safetensors")


@pytest.mark.parametrize("strategy", list(ALGORITHMS))
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


def test_moon_without_a_first_round_term_equals_sequential(tmp_path):
    """moon-first-previous='none' (term weight 0 in a client's first round): the per-client weights
    are stacked with the other term inputs (a round can mix first-time and returning clients)."""
    extra = "strategy='moon' moon-first-previous='none' moon-mu=5.0"
    sequential = final_model(tmp_path, extra, "inprocess")
    vectorized = final_model(tmp_path, extra, "vectorized")
    for key in sequential:
        assert torch.allclose(sequential[key], vectorized[key], atol=1e-4, rtol=0), key
    assert any(not torch.equal(sequential[k], v) for k, v in final_model(tmp_path / "init", "strategy='moon' "
               "moon-first-previous='init' moon-mu=5.0", "inprocess").items())  # the mode changes the run


@pytest.mark.parametrize("strategy", list(ALGORITHMS))
def test_sign_term_with_every_strategy_equals_sequential(tmp_path, strategy):
    """The FedSign term (default reduction) added to each strategy: vectorized == in-process, and both
    report the same term_grad_ratio (FedSign itself carries its own gamma)."""
    extra = f"strategy='{strategy}' " + ("fedsign-gamma=0.1" if strategy == "fedsign" else "sign-gamma=0.1")
    a, b = final_model(tmp_path, extra, "inprocess"), final_model(tmp_path, extra, "vectorized")
    assert all(torch.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a)
    ratios = [[r["term_grad_ratio"] for r in read_metrics(tmp_path / engine)] for engine in ("inprocess", "vectorized")]
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-4) and min(ratios[0]) > 0.05


def _jobs(n_samples, in_channels=1, size=8, seeds=None):
    g = torch.Generator().manual_seed(0)
    seeds = seeds or [10 + i for i in range(len(n_samples))]
    return [ClientJob(torch.randint(0, 256, (n, in_channels, size, size), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (n,), generator=g), seed=seed) for n, seed in zip(n_samples, seeds)]


@pytest.mark.parametrize("name,dataset,lr,tol", [("cnn", "digits", 0.05, 1e-5), ("resnet20", "digits", 0.005, 1e-4),
                                                 ("resnet20", "cifar10", 0.005, 1e-4)])
def test_train_clients_matches_train_local(name, dataset, lr, tol):
    """Unequal client sizes (short last batches padded and masked; a client with fewer steps
    must not move while the others train, despite momentum and weight decay), clipping, BN
    buffers, and (cifar10) crop/flip augmentation: each client ends where its own train_local would."""
    spec = DATASETS[dataset]
    jobs = _jobs([70, 45, 32] if dataset == "digits" else [40, 23, 9], spec.channels, spec.image_size)
    settings = TrainSettings(epochs=2, batch_size=16, lr=lr, momentum=0.9, weight_decay=1e-3, grad_clip=1.0)
    transform = make_batch_transform(spec, train=True)
    torch.manual_seed(0)
    model = build_model(name, 10, spec.channels, spec.image_size)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params, buffers, stats = train_clients(model, dict(model.named_parameters()), dict(model.named_buffers()),
                                           jobs, settings, spec)
    assert [s.steps for s in stats] == [10, 6, 4] if dataset == "digits" else [6, 4, 2]
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
            else:
                assert torch.equal(value, buffers[key][c]), key  # num_batches_tracked counts real steps


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_equals_torch_on_the_real_samples(momentum):
    """Output, gradients and running statistics over 5 real samples padded with 3 others."""
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5), reference.bias.uniform_(-1, 1)
    padded = nn.BatchNorm2d(4, momentum=momentum)
    padded.load_state_dict(reference.state_dict())
    x = torch.randn(8, 4, 3, 3) * 3 + 1
    mask = torch.tensor([1, 1, 0, 1, 1, 0, 1, 0], dtype=torch.bool)
    x_real = x[mask].clone().requires_grad_()
    x_padded = x.clone().requires_grad_()
    for _ in range(2):  # the second call checks the running-average update again
        expected = reference(x_real)
        source = BatchMask()
        with masked_batch_norm(padded, source):
            source.value = mask.float()
            out = padded(x_padded)
    assert torch.allclose(out[mask], expected, atol=1e-5)
    upstream = torch.randn_like(expected)
    expected.backward(upstream)
    full = torch.zeros_like(out)
    full[mask] = upstream
    out.backward(full)
    assert torch.allclose(x_padded.grad[mask], x_real.grad, atol=1e-5)
    assert torch.allclose(padded.weight.grad, reference.weight.grad, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(padded, name).float(), getattr(reference, name).float(), atol=1e-6), name
    assert "forward" not in padded.__dict__  # restored after the block


class _HostSyncCounter(TorchDispatchMode):
    """Counts the aten calls that block on a GPU: scalar reads (``item``, ``bool``, ``float``) and
    data-dependent shapes (``nonzero``, boolean indexing, ``masked_select``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("_local_scalar_dense", "nonzero", "masked_select") or (
                name.startswith("index") and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                                 for i in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else []))):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _count_host_syncs(fn) -> int:
    with _HostSyncCounter() as counter:
        fn()
    return counter.count


def test_host_sync_counter_sees_syncs():
    x = torch.randn(6)
    assert _count_host_syncs(lambda: x.sum().item()) == 1
    assert _count_host_syncs(lambda: bool(x.sum() > 0)) == 1
    assert _count_host_syncs(lambda: x[x > 0]) >= 1


def test_no_host_sync_inside_the_steps():
    """1 and 4 epochs (3 and 12 steps, with short last batches, augmentation, BN, momentum and
    clipping) make no syncing call: the one sync of a round is the stats' ``tolist`` at the end."""
    spec = DATASETS["cifar10"]  # its augmentation, on 8x8 images for speed
    jobs = _jobs([40, 23], spec.channels, 8)
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 8)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())

    def run(epochs):
        settings = TrainSettings(epochs=epochs, batch_size=16, lr=0.01, momentum=0.9, weight_decay=1e-3, grad_clip=1.0)
        return lambda: train_clients(model, params, buffers, jobs, settings, spec)

    assert _count_host_syncs(run(1)) == _count_host_syncs(run(4)) == 0


def _dropout_model():
    torch.manual_seed(0)
    return build_model("vgg8", 10, 3, 32)


def test_dropout_masks_come_from_the_round_not_the_global_rng():
    """Dropout masks are seeded from the clients' (per-round) seeds: independent of the global RNG
    (which the call leaves as it was) and different when the round's seeds differ."""
    spec, settings = DATASETS["cifar10"], TrainSettings(epochs=1, batch_size=8, lr=0.05)
    model = _dropout_model()
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())

    def client0(seeds):
        return train_clients(model, params, buffers, _jobs([8, 8], 3, 32, seeds), settings, spec)[0]

    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = client0([1, 2])
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    again = client0([1, 2])
    other_round = client0([1, 3])  # client 0's batches and crops are the same; only the masks differ
    assert all(torch.equal(first[k][0], again[k][0]) for k in first)
    assert not torch.equal(first["fc.0.weight"][0], other_round["fc.0.weight"][0])


def test_sgd_step_equals_torch_sgd_with_clipping():
    """Several steps of sgd_step on the flat parameters of two models (rows) against
    clip_grad_norm_ + torch.optim.SGD on each model."""
    settings = TrainSettings(epochs=1, batch_size=1, lr=0.1, momentum=0.9, weight_decay=0.01, grad_clip=0.5)
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)) for _ in range(2)]
    flat = torch.stack([torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models])
    momentum = torch.zeros_like(flat)
    optimizers = [torch.optim.SGD(m.parameters(), lr=settings.lr, momentum=settings.momentum,
                                  weight_decay=settings.weight_decay) for m in models]
    for step in range(5):
        grads = []
        for m, optimizer in zip(models, optimizers):
            x = torch.randn(6, 3) * (10 if step % 2 else 0.1)  # clipping active on odd steps only
            optimizer.zero_grad()
            m(x).square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
            nn.utils.clip_grad_norm_(m.parameters(), settings.grad_clip)
            optimizer.step()
        flat, momentum = sgd_step(flat, torch.stack(grads), momentum, settings)
        expected = torch.stack([torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models])
        assert torch.allclose(flat, expected, atol=1e-6, rtol=1e-6), step


def test_hang_faults_run_sequentially_with_per_client_timeouts(tmp_path, capsys):
    """Every client hangs in round 2: the vectorized engine runs clients sequentially, each call is
    bounded by round-timeout, round 2 gets no reply and is skipped, and the run ends as the
    in-process engine's does."""
    hang = " ".join(f"{p}:hang@2" for p in range(6))
    extra = f"strategy='fedavg' round-timeout=6 fail-partitions='{hang}'"  # round 1 well within it under load
    reference = final_model(tmp_path, extra, "inprocess")
    vectorized = final_model(tmp_path, extra, "vectorized")
    assert "running clients sequentially" in capsys.readouterr().out
    rows = read_metrics(tmp_path / "vectorized")
    assert [(r["num_replies"], r["num_failures"], r["skipped"]) for r in rows] == [(3, 0, None), (0, 3, 1)]
    assert rows == [{**r, "seconds": v["seconds"]} for r, v in zip(read_metrics(tmp_path / "inprocess"), rows)]
    assert all(torch.equal(reference[k], vectorized[k]) for k in reference)


def test_any_exception_falls_back_to_the_same_sequential_result(tmp_path, monkeypatch, capsys):
    """A TypeError while stacking the clients' term inputs (not a RuntimeError): one line, no
    traceback, and the round runs sequentially with the sequential result."""
    from clients.fedprox import FedProxClient

    monkeypatch.setattr(FedProxClient, "term_inputs", lambda self, ctx: {"unused": None})
    extra = "strategy='fedprox' proximal-mu=0.5"
    sequential = final_model(tmp_path, extra, "inprocess")
    fallback = final_model(tmp_path, extra, "vectorized")
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "vectorized engine" in line]
    assert len(lines) == 1 and "falling back to sequential clients: TypeError" in lines[0]
    assert "Traceback" not in captured.out + captured.err
    for key in sequential:
        assert torch.equal(sequential[key], fallback[key]), key


def test_unbatchable_op_falls_back_to_the_same_sequential_result(tmp_path, monkeypatch, capsys):
    """torch.func raises NotImplementedError for an op without a batching rule: the round runs sequentially."""
    import fedsign.engines.vectorized

    def no_batching_rule(*args, **kwargs):
        raise NotImplementedError("Batching rule not implemented for aten::some_op\nmore detail")

    sequential = final_model(tmp_path, "strategy='fedavg'", "inprocess")
    monkeypatch.setattr(fedsign.engines.vectorized, "train_clients", no_batching_rule)
    fallback = final_model(tmp_path, "strategy='fedavg'", "vectorized")
    out = capsys.readouterr().out
    assert "falling back to sequential clients: NotImplementedError: Batching rule not implemented" in out
    for key in sequential:
        assert torch.equal(sequential[key], fallback[key]), key


def test_mixed_precision_trains_close_to_float32():
    """bf16 autocast + channels-last images: float32 parameters, losses within 1 % of float32's."""
    spec = DATASETS["cifar10"]
    jobs = _jobs([20, 11], 3, 8)
    settings = TrainSettings(epochs=1, batch_size=8, lr=0.01, momentum=0.9)
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 8)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    exact = train_clients(model, params, buffers, jobs, settings, spec)
    fast = train_clients(model, params, buffers, jobs, settings, spec, mixed_precision=True)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in fast[0].values())
    assert [s.ce_loss for s in fast[2]] == pytest.approx([s.ce_loss for s in exact[2]], rel=1e-2)

"""The five algorithms against their closed forms (CPU, seconds)."""

import copy
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from torch import nn

from clients import ClientRound, FedDynClient, MOONClient, WithSignTerm, make_client_algorithm
from clients.feddyn import STATE_KEY as FEDDYN_STATE, client_alpha, dyn_term
from clients.fedpan import add_position_encoding, apply_pan, pan_encoding
from clients.fedprox import proximal_term
from clients.fedsign import sign_term
from clients.moon import STATE_KEY as MOON_STATE, moon_contrastive_loss
from fedsign.algorithms import ALGORITHMS
from fedsign.config import ConfigError, RunConfig
from fedsign.engines import InProcessGrid
from fedsign.models import build_model, float_state
from fedsign.server import make_strategy
from fedsign.task import build_run_model
from fedsign.tensors import unpack
from strategies import FedAvg, FedDyn


# ---- tiny model and helpers -------------------------------------------------------------
def tiny_params(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}


def global_of(local: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """A different model with some exact zeros (sgp(0) = 0 must give no sign gradient)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in local.items():
        g = torch.randn(v.shape, generator=gen)
        g.view(-1)[0] = 0.0
        out[k] = g
    return out


def grads(value: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d value / d params (zeros for parameters the value does not use)."""
    out = torch.autograd.grad(value, list(params.values()), allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), out)}


def sigmoid_prime(t: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(t) * (1 - torch.sigmoid(t))


def client_round(model: nn.Module, received: dict, state: dict, config: RunConfig, *, num_examples: int = 10,
                 mean_num_examples: float = 10.0, fresh_model=None, partition_id: int = 0) -> ClientRound:
    """The ClientRound the client app would build for this model and state."""
    return ClientRound(config=config, model=model, global_params=received, global_state=float_state(model),
                       state=state, partition_id=partition_id,
                       server_round=1, num_examples=num_examples, mean_num_examples=mean_num_examples,
                       fresh_model=fresh_model or (lambda seed: None))


# ---- client terms: gradients against closed forms ---------------------------------------
def test_proximal_term_value_and_gradient():
    local = tiny_params()
    glob = global_of(local)
    mu = 0.3
    plain = {k: v.detach() for k, v in local.items()}
    value = proximal_term(local, glob, mu)
    expected = mu / 2 * sum(float(((plain[k] - glob[k]) ** 2).sum()) for k in local)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-6)
    for k, g in grads(value, local).items():
        torch.testing.assert_close(g, mu * (local[k] - glob[k]).detach())


@pytest.mark.parametrize("reduction", ["sum", "root4", "sqrt", "mean"])
def test_sign_term_gradient(reduction):
    """Per weight: -gamma * sigmoid'(theta_k) * sign(theta_t) * c (clients.fedsign's docstring)."""
    local = tiny_params()
    glob = global_of(local)
    gamma = 0.07
    numel = sum(v.numel() for v in local.values())
    value = sign_term(local, glob, gamma, reduction)
    for k, g in grads(value, local).items():
        c = {"sum": 1.0, "root4": numel ** -0.25, "sqrt": numel ** -0.5,
             "mean": 1 / (local[k].numel() * len(local))}[reduction]
        closed = -gamma * sigmoid_prime(local[k].detach()) * torch.sign(glob[k]) * c
        torch.testing.assert_close(g, closed)
        assert g.view(-1)[0] == 0  # theta_t = 0 there


def test_sign_term_value_from_eq1():
    local = {k: v.detach() for k, v in tiny_params().items()}
    glob = global_of(local)
    u = {k: (glob[k] > 0) * torch.sigmoid(local[k]) + (-glob[k] > 0) * torch.sigmoid(-local[k]) for k in local}
    total = sum(float(v.sum()) for v in u.values())
    mean = sum(float(v.mean()) for v in u.values()) / len(u)
    assert float(sign_term(local, glob, 0.5, "sum")) == pytest.approx(-0.5 * total, rel=1e-6)
    assert float(sign_term(local, glob, 0.5, "mean")) == pytest.approx(-0.5 * mean, rel=1e-6)
    numel = sum(v.numel() for v in u.values())
    assert float(sign_term(local, glob, 0.5, "root4")) == pytest.approx(-0.5 * total / numel ** 0.25, rel=1e-6)
    assert float(sign_term(local, glob, 0.5, "sqrt")) == pytest.approx(-0.5 * total / numel ** 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        sign_term(local, glob, 0.5, "max")


@pytest.mark.parametrize("reduction", ["sum", "root4", "mean"])
def test_sign_term_is_bit_identical_to_the_two_branch_form(reduction):
    """The one-branch u (sigmoid(sign * theta) * |sign|) gives the same bits, value and gradient, as
    positive * sigmoid(theta) + negative * sigmoid(-theta), the form the committed tables ran."""
    local = tiny_params()
    glob = global_of(local)

    def two_branch(params):
        u = [(glob[k] > 0).float() * torch.sigmoid(params[k]) + (glob[k] < 0).float() * torch.sigmoid(-params[k])
             for k in glob]
        if reduction == "mean":
            return -0.3 * sum(v.mean() for v in u) / len(u)
        numel = sum(v.numel() for v in u)
        return -0.3 * {"sum": 1.0, "root4": numel ** -0.25}[reduction] * sum(v.sum() for v in u)

    new, old = sign_term(local, glob, 0.3, reduction), two_branch(local)
    assert torch.equal(new, old)
    old_grads = grads(old, local)
    assert all(torch.equal(g, old_grads[k]) for k, g in grads(new, local).items())


def test_sign_term_sum_pushes_weights_from_zero_by_lr_gamma_over_4():
    """At the paper's settings (lr 0.03, gamma 0.01) one SGD step on the `sum` term moves every
    near-zero weight away from zero by lr*gamma/4, whatever the model size; `mean` divides that
    by (tensor size x number of tensors)."""
    lr, gamma = 0.03, 0.01
    for reduction, scale in (("sum", 1.0), ("mean", None)):
        local = tiny_params()
        with torch.no_grad():
            for v in local.values():
                v.mul_(1e-4)
        glob = {k: v.detach().clone() for k, v in local.items()}
        opt = torch.optim.SGD(local.values(), lr=lr)
        opt.zero_grad()
        sign_term(local, glob, gamma, reduction).backward()
        opt.step()
        for k, v in local.items():
            step = v.detach().abs() - glob[k].abs()
            expected = lr * gamma / 4 * (scale if scale is not None else 1 / (v.numel() * len(local)))
            torch.testing.assert_close(step, torch.full_like(step, expected), rtol=1e-3, atol=1e-12)


def test_dyn_term_gradient_and_state_update():
    local = tiny_params()
    glob = global_of(local)
    grad_state = global_of(local, seed=2)
    alpha = 0.2
    value = dyn_term(local, glob, grad_state, alpha)
    plain = {k: v.detach() for k, v in local.items()}
    expected = (-sum(float((grad_state[k] * plain[k]).sum()) for k in local)
                + alpha / 2 * sum(float(((plain[k] - glob[k]) ** 2).sum()) for k in local))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    for k, g in grads(value, local).items():
        torch.testing.assert_close(g, -grad_state[k] + alpha * (local[k] - glob[k]).detach())


def test_feddyn_client_keeps_g_k_across_rounds():
    config = RunConfig(strategy="feddyn", feddyn_alpha=0.5)
    client = FedDynClient()
    model = nn.Linear(3, 2)
    state: dict = {}
    received = {k: v.detach().clone() for k, v in model.named_parameters()}
    term = client.make_term(client_round(model, received, state, config))  # first round: g_k = 0
    params = dict(model.named_parameters())
    for k, g in grads(term(params, None, None, None), params).items():
        torch.testing.assert_close(g, torch.zeros_like(g))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "training" moved every parameter by +1
    client.finish(client_round(model, received, state, config))
    for v in state[FEDDYN_STATE].values():
        torch.testing.assert_close(v, torch.full_like(v, -0.5))  # g_k = 0 - alpha * 1
    received = {k: v.detach().clone() for k, v in model.named_parameters()}
    term = client.make_term(client_round(model, received, state, config))
    params = dict(model.named_parameters())
    for k, g in grads(term(params, None, None, None), params).items():
        torch.testing.assert_close(g, torch.full_like(g, 0.5))  # -g_k at theta = theta^{t-1}


@pytest.mark.parametrize("adaptive", [True, False])
def test_feddyn_adaptive_alpha_follows_the_official_formula(adaptive):
    """Official alpemreacar/FedDyn: alpha_coef_adpt = alpha_coef / weight_list[k] with
    weight_list = n_k / mean(n) over all clients, in the term and in the g_k update."""
    sizes = [30, 10, 20]
    mean_size = sum(sizes) / len(sizes)
    config = RunConfig(strategy="feddyn", feddyn_alpha=0.1, feddyn_adaptive_alpha=adaptive)
    client = FedDynClient()
    for n_k in sizes:
        official = 0.1 / (n_k / mean_size) if adaptive else 0.1
        assert client_alpha(0.1, n_k, mean_size, adaptive) == pytest.approx(official)
        model = nn.Linear(3, 2)
        received = {k: v.detach().clone() for k, v in model.named_parameters()}
        state: dict = {}
        ctx = client_round(model, received, state, config, num_examples=n_k, mean_num_examples=mean_size)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        params = dict(model.named_parameters())
        for g in grads(client.make_term(ctx)(params, None, None, None), params).values():
            torch.testing.assert_close(g, torch.full_like(g, official))  # alpha_k * (theta - theta^{t-1})
        client.finish(ctx)
        for v in state[FEDDYN_STATE].values():
            torch.testing.assert_close(v, torch.full_like(v, -official))


def test_sign_gamma_adds_the_sign_term_to_another_algorithm():
    config = RunConfig(strategy="fedprox", proximal_mu=0.2, sign_gamma=0.03, fedsign_reduction="sum")
    algorithm = make_client_algorithm(config)
    assert isinstance(algorithm, WithSignTerm) and algorithm.name == "fedprox+sign"
    assert not isinstance(make_client_algorithm(config.replace(sign_gamma=0.0)), WithSignTerm)
    model = nn.Linear(4, 3)
    params = dict(model.named_parameters())
    glob = global_of(params)
    term = algorithm.make_term(client_round(model, glob, {}, config))
    with torch.no_grad():
        expected = proximal_term(params, glob, 0.2) + sign_term(params, glob, 0.03, "sum")
        assert float(term(params, None, None, None)) == pytest.approx(float(expected), rel=1e-6)
        # An algorithm without a term (FedAvg) gets the sign term alone.
        term = make_client_algorithm(config.replace(strategy="fedavg")).make_term(
            client_round(model, glob, {}, config))
        assert float(term(params, None, None, None)) == pytest.approx(float(sign_term(params, glob, 0.03, "sum")))
    with pytest.raises(ConfigError, match="fedsign-gamma"):
        RunConfig(strategy="fedsign", sign_gamma=0.1).validate()


# ---- MOON --------------------------------------------------------------------------------
def test_moon_loss_matches_its_formula():
    gen = torch.Generator().manual_seed(0)
    z, zg, zp = (torch.randn(5, 7, generator=gen) for _ in range(3))
    tau = 0.5
    expected = 0.0
    for i in range(5):
        pos = float(z[i] @ zg[i] / (z[i].norm() * zg[i].norm())) / tau
        neg = float(z[i] @ zp[i] / (z[i].norm() * zp[i].norm())) / tau
        expected += -math.log(math.exp(pos) / (math.exp(pos) + math.exp(neg)))
    assert float(moon_contrastive_loss(z, zg, zp, tau)) == pytest.approx(expected / 5, rel=1e-5)


def test_moon_model_has_the_projection_head():
    config = RunConfig(strategy="moon", moon_out_dim=16)
    model = build_run_model(config)
    assert model.projection is not None and model.projection[2].out_features == 16
    assert model.classifier.in_features == 16
    for layer in (model.projection[0], model.projection[2], model.classifier):  # PyTorch's default init
        bound = 1 / math.sqrt(layer.in_features)
        w = layer.weight.detach()
        assert float(w.abs().max()) <= bound and float(w.std()) > bound / 3
    assert build_run_model(config.replace(moon_head=False)).projection is None


def test_moon_second_round_contrasts_against_the_clients_own_first_round_model():
    """Round 1 with moon-first-previous='global': z_prev is the received global model (zero
    gradient); round 2: z_prev is the client's round-1 local model, run frozen in eval mode (BN
    statistics, no dropout)."""
    config = RunConfig(strategy="moon", model="resnet20", moon_out_dim=8, moon_mu=2.0, moon_temperature=0.5,
                       moon_first_previous="global")
    client = MOONClient()
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=3, in_channels=1, image_size=8,
                        **client.model_options(config))
    x = torch.randn(6, 1, 8, 8)
    state: dict = {}

    def received_params():
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    def frozen(reference: nn.Module) -> torch.Tensor:
        reference = copy.deepcopy(reference).eval()
        with torch.no_grad():
            return reference(x, return_features=True)[1]

    # Round 1: the previous model is the global model itself.
    global_1 = copy.deepcopy(model)
    model.train()
    term = client.make_term(client_round(model, received_params(), state, config))
    params = dict(model.named_parameters())
    value = term(params, model(x, return_features=True)[1], x, None)
    assert float(value.detach()) == pytest.approx(2.0 * math.log(2), rel=1e-5)
    assert all(float(g.abs().max()) < 1e-5 for g in grads(value, params).values())  # float noise only
    with torch.no_grad():  # local training moved the model
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model(x)  # and updated its BN statistics
    client.finish(client_round(model, received_params(), state, config))
    local_1 = copy.deepcopy(model)
    stored = {k: v.clone() for k, v in state[MOON_STATE].items()}  # as save_state copies it
    assert all(torch.equal(stored[k], v) for k, v in local_1.state_dict().items() if v.is_floating_point())

    # Round 2: a new global model arrives (e.g. the average of other clients' models).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    global_2 = copy.deepcopy(model)
    model.train()
    state = {MOON_STATE: {k: v.clone() for k, v in stored.items()}}  # as persisted between rounds
    term = client.make_term(client_round(model, received_params(), state, config))
    features = model(x, return_features=True)[1]
    value = term(dict(model.named_parameters()), features, x, None)
    features = features.detach()
    expected = float(2.0 * moon_contrastive_loss(features, frozen(global_2), frozen(local_1), 0.5))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(
        float(2.0 * moon_contrastive_loss(features, frozen(global_2), frozen(global_1), 0.5)), rel=1e-3)
    assert model.training  # the frozen evaluations restored the mode


@pytest.mark.parametrize("mode", ["init", "random", "global", "none"])
def test_moon_first_round_stand_in_for_the_previous_model(mode):
    """A first-time client contrasts against theta^0 (init, FedRepo), its own seeded fresh model
    (random, official MOON after round 1), the received model (global: constant log 2, zero
    gradient) or has no term (none: official MOON's round 1)."""
    config = RunConfig(strategy="moon", moon_out_dim=8, moon_mu=1.0, moon_temperature=0.5, moon_first_previous=mode)
    client = MOONClient()
    theta_0 = build_run_model(config)
    model = copy.deepcopy(theta_0)
    with torch.no_grad():  # the received global model of a later round
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    built: list[int] = []

    def fresh_model(seed: int) -> nn.Module:
        built.append(seed)
        return build_run_model(config, seed=seed)

    x = torch.randn(4, 1, 8, 8)
    received = {k: v.detach().clone() for k, v in model.named_parameters()}
    ctx = client_round(model, received, {}, config, fresh_model=fresh_model, partition_id=3)
    inputs = client.term_inputs(ctx)
    expected = {"init": theta_0, "random": build_run_model(config, seed=built[0]) if built else None,
                "global": model, "none": model}[mode]
    for k, v in expected.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(inputs["previous"][k], v)
    params = dict(model.named_parameters())
    value = client.make_term(ctx, inputs)(params, model(x, return_features=True)[1], x, None)
    gradient = max(float(g.abs().max()) for g in grads(value, params).values())
    if mode in ("global", "none"):
        assert float(value.detach()) == (pytest.approx(math.log(2), rel=1e-5) if mode == "global" else 0.0)
        assert gradient < 1e-5 and built == []
    else:
        assert gradient > 1e-4
        assert built == [config.seed] if mode == "init" else (len(built) == 1 and built[0] != config.seed)
    # another client's "random" stand-in differs; its "init" stand-in does not
    other = client.term_inputs(client_round(model, received, {}, config, fresh_model=fresh_model, partition_id=4))
    same = all(torch.equal(other["previous"][k], inputs["previous"][k]) for k in inputs["previous"])
    assert same == (mode != "random")
    # from its second round on every mode contrasts against the client's own previous model
    client.finish(ctx)
    later = client.term_inputs(client_round(model, received, ctx.state, config, fresh_model=fresh_model,
                                            partition_id=3))
    assert float(later["weight"]) == 1.0 and float(inputs["weight"]) == (0.0 if mode == "none" else 1.0)


# ---- FedPAN ------------------------------------------------------------------------------
def test_pan_encoding_values():
    e = pan_encoding(8, 1.0)
    s = math.sqrt(0.5)
    torch.testing.assert_close(e, torch.tensor([0, s, 1, s, 0, -s, -1, -s], dtype=torch.float32), atol=1e-6, rtol=0)
    assert float(pan_encoding(8, 4.0).abs().max()) < 1e-5  # sin(pi*i) = 0
    h = torch.ones(2, 8, 3, 3)
    torch.testing.assert_close(apply_pan(h, e, "mul", 0.1), (1 + 0.1 * e).reshape(1, 8, 1, 1).expand(2, 8, 3, 3))
    torch.testing.assert_close(apply_pan(h[:, :, 0, 0], e, "add", 0.1), 1 + 0.1 * e.expand(2, 8))


@pytest.mark.parametrize("op", ["mul", "add"])
def test_pan_goes_before_every_relu_and_never_on_the_classifier(op):
    """The CNN with PAN equals a hand-written forward that encodes the two conv outputs and
    the hidden-FC output before their ReLUs and leaves the classifier alone."""
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8)
    plain = copy.deepcopy(model)
    handles = add_position_encoding(model, op, 0.3, 2.0)
    assert len(handles) == sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3
    x = torch.randn(4, 1, 8, 8)

    def pan(h):
        return apply_pan(h, pan_encoding(h.shape[1], 2.0), op, 0.3)

    conv1, _, conv2, _, pool = plain.features
    h = pool(torch.relu(pan(conv2(torch.relu(pan(conv1(x)))))))
    h = torch.relu(pan(plain.fc[0](torch.flatten(h, 1))))
    torch.testing.assert_close(model(x), plain.classifier(h))
    assert not torch.allclose(model(x), plain(x))


def test_pan_is_built_into_the_run_model_on_server_and_clients():
    config = RunConfig(strategy="fedpan", model="resnet20")
    model = build_run_model(config)  # what run_server and the ClientApp both call
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 9 * 2
    assert all(len(m._forward_pre_hooks) == 1 for m in relus)
    assert not model.classifier._forward_pre_hooks and not model.classifier._forward_hooks


# ---- server side -------------------------------------------------------------------------
def test_every_strategy_builds_its_server_with_the_runs_sampling():
    for name in ALGORITHMS:
        strategy = make_strategy(RunConfig(strategy=name, feddyn_alpha=0.3, clients_per_round=5))
        assert isinstance(strategy, FedAvg) and strategy.fraction_train == 0.5
    assert make_strategy(RunConfig(strategy="feddyn", feddyn_alpha=0.3)).alpha == 0.3


def fake_client_app() -> ClientApp:
    """A ClientApp whose 'training' adds node- and round-seeded noise to the received arrays and replies
    with an ArrayRecord (as a client in another process does)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        server_round = int(msg.content["config"]["server-round"])
        rng = np.random.default_rng([context.node_id, server_round])
        received = unpack(msg.content, "arrays", "cpu")  # by reference: InProcessGrid shares the process
        arrays = {k: Array((a.numpy() + rng.normal(size=a.shape)).astype(a.numpy().dtype)) for k, a in received.items()}
        metrics = MetricRecord({"num-examples": 10 * context.node_id + 3, "train_loss": 1.0})
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)

    return app


def initial_arrays() -> ArrayRecord:
    rng = np.random.default_rng(7)
    shapes = {"conv.weight": (3, 2), "bn.weight": (3,), "bn.running_mean": (3,), "bn.running_var": (3,)}
    return ArrayRecord({k: Array(rng.normal(size=s).astype(np.float32)) for k, s in shapes.items()})


def one_round(strategy, grid, server_round, arrays):
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    return replies, strategy.aggregate_train(server_round, replies)[0]


def test_fedavg_equals_flowers_fedavg_and_the_plain_mean():
    grid = InProcessGrid(fake_client_app(), 6, {})
    arrays = initial_arrays()
    ours = FedAvg(fraction_train=0.5, min_train_nodes=3, min_available_nodes=6, weighted=True, seed=0)
    replies, weighted = one_round(ours, grid, 1, arrays)
    flower, _ = FlowerFedAvg(fraction_train=0.5, min_train_nodes=3).aggregate_train(1, replies)
    plain, _ = FedAvg(fraction_train=0.5, min_train_nodes=3, weighted=False).aggregate_train(1, replies)
    sizes = {r.content["metrics"]["num-examples"] for r in replies}
    assert len(sizes) == 3  # distinct weights, so weighted and plain means differ
    for key in arrays:
        np.testing.assert_array_equal(weighted[key].numpy(), flower[key].numpy())
        mean = np.mean([r.content["arrays"][key].numpy() for r in replies], axis=0)
        np.testing.assert_allclose(plain[key].numpy(), mean, rtol=1e-6)
        assert not np.allclose(weighted[key].numpy(), mean)


def test_an_aggregate_train_override_sets_the_rounds_model_and_metrics():
    """A Flower user overrides ``aggregate_train``; the round loop's entry (``aggregate_round``) uses it."""
    class Halving(FedAvg):
        def aggregate_train(self, server_round, replies):
            arrays, metrics = super().aggregate_train(server_round, replies)
            halved = ArrayRecord({k: Array(a.numpy() / 2) for k, a in arrays.items()})
            return halved, MetricRecord({**metrics, "halved": 1})

    grid = InProcessGrid(fake_client_app(), 6, {})
    arrays = initial_arrays()
    results = {}
    for cls in (FedAvg, Halving):
        strategy = cls(fraction_train=0.5, min_train_nodes=3, min_available_nodes=6, seed=0)
        strategy.set_node_order(sorted(grid.get_node_ids()))
        replies = list(grid.send_and_receive(strategy.configure_train(1, arrays, ConfigRecord(), grid)))
        results[cls] = strategy.aggregate_round(1, replies)
    plain, halved = results[FedAvg], results[Halving]
    assert len(halved.usable) == len(plain.usable) == 3 and halved.dropped == [] and len(halved.client_arrays) == 3
    assert halved.metrics["halved"] == 1 and "halved" not in plain.metrics
    for key in arrays:
        torch.testing.assert_close(halved.arrays[key], plain.arrays[key] / 2, rtol=0, atol=0)
        assert not torch.equal(halved.arrays[key], plain.arrays[key])


def test_integer_arrays_average_as_flower_and_numpy_do():
    """A Flower caller's ArrayRecord(model.state_dict()) carries int64 BN counters."""
    grid = InProcessGrid(fake_client_app(), 6, {})
    arrays = ArrayRecord({**initial_arrays(), "bn.num_batches_tracked": Array(np.array([7], dtype=np.int64))})
    ours = FedAvg(fraction_train=0.5, min_train_nodes=3, min_available_nodes=6, weighted=True, seed=0)
    replies, weighted = one_round(ours, grid, 1, arrays)
    flower, _ = FlowerFedAvg(fraction_train=0.5, min_train_nodes=3).aggregate_train(1, replies)
    plain, _ = FedAvg(fraction_train=0.5, min_train_nodes=3, weighted=False).aggregate_train(1, replies)
    for key in arrays:
        assert weighted[key].numpy().dtype == flower[key].numpy().dtype, key
        np.testing.assert_array_equal(weighted[key].numpy(), flower[key].numpy())
        mean = np.mean([r.content["arrays"][key].numpy() for r in replies], axis=0)
        assert plain[key].numpy().dtype == mean.dtype, key
        np.testing.assert_allclose(plain[key].numpy(), mean, rtol=1e-6)


def test_aggregation_follows_partition_order_not_arrival_order():
    """Float sums depend on their order; replies are summed in node order, so an engine whose replies
    arrive in another order (Ray) gives the same bits."""
    grid = InProcessGrid(fake_client_app(), 6, {})
    rng = np.random.default_rng(1)
    arrays = ArrayRecord({"w": Array(rng.normal(size=(1000,)).astype(np.float32))})

    def aggregate(ordered: bool, reverse: bool) -> np.ndarray:
        strategy = FedAvg(fraction_train=1.0, min_train_nodes=6, min_available_nodes=6, weighted=True, seed=0)
        if ordered:
            strategy.set_node_order(sorted(grid.get_node_ids()))
        replies = list(grid.send_and_receive(strategy.configure_train(1, arrays, ConfigRecord(), grid)))
        return strategy.aggregate_train(1, replies[::-1] if reverse else replies)[0]["w"].numpy()

    np.testing.assert_array_equal(aggregate(True, False), aggregate(True, True))
    assert not np.array_equal(aggregate(False, False), aggregate(False, True))  # the control: order matters


def test_feddyn_server_follows_its_formula_over_three_rounds_of_partial_participation():
    num_nodes, alpha = 6, 0.3
    grid = InProcessGrid(fake_client_app(), num_nodes, {})
    strategy = FedDyn(fraction_train=0.5, min_train_nodes=3, min_available_nodes=num_nodes, weighted=True,
                      seed=0, alpha=alpha)
    arrays = initial_arrays()
    trainable = ("conv.weight", "bn.weight")
    h = {k: np.zeros(arrays[k].shape) for k in trainable}
    participants = []
    for server_round in (1, 2, 3):
        sent = {k: a.numpy().astype(np.float64) for k, a in arrays.items()}
        replies, arrays = one_round(strategy, grid, server_round, arrays)
        participants.append({r.metadata.src_node_id for r in replies})
        thetas = [{k: a.numpy().astype(np.float64) for k, a in r.content["arrays"].items()} for r in replies]
        mean = {k: np.mean([t[k] for t in thetas], axis=0) for k in sent}
        for k in trainable:
            h[k] = h[k] - alpha / num_nodes * sum(t[k] - sent[k] for t in thetas)
            np.testing.assert_allclose(arrays[k].numpy(), mean[k] - h[k] / alpha, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(strategy.h[k], h[k], rtol=1e-12)
        for k in ("bn.running_mean", "bn.running_var"):  # BN statistics: plain participant mean
            np.testing.assert_allclose(arrays[k].numpy(), mean[k], rtol=1e-6)
        extra = strategy.evaluation_extras()["participant_mean"]
        for k in sent:
            np.testing.assert_allclose(extra[k].numpy(), mean[k], rtol=1e-5, atol=1e-6)
    assert len(participants[0]) == 3 and len(set.union(*participants)) > 3  # partial, varying


def test_feddyn_state_dict_restores_h_and_sampling():
    grid = InProcessGrid(fake_client_app(), 6, {})

    def new():
        return FedDyn(fraction_train=0.5, min_train_nodes=3, min_available_nodes=6, seed=0, alpha=0.3)

    a = new()
    _, arrays = one_round(a, grid, 1, initial_arrays())
    b = new()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    _, from_a = one_round(a, grid, 2, arrays)
    _, from_b = one_round(b, grid, 2, arrays)
    for k in arrays:
        np.testing.assert_array_equal(from_a[k].numpy(), from_b[k].numpy())

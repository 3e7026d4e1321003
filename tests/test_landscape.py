"""fedsign.landscape: directions, groups, batched evaluation with BN policies, curves, theory, CLI (CPU)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedsign.cli import main
from fedsign.data import DATASETS, load_dataset, make_batch_transform
from fedsign.landscape import (
    Line,
    evaluate_lines,
    evaluate_point,
    interpolation,
    make_directions,
    model_state,
    normalize,
    parameter_roles,
    point_buffers,
    prepare_data,
    ratio_noise,
    select_parameters,
    sign_consistency,
    special_direction,
    valley_curves,
)
from fedsign.landscape.directions import direction_seed, draw_noise, make_direction
from fedsign.landscape.groups import ROLES, GroupError
from fedsign.landscape.hessian import hutchinson_trace
from fedsign.landscape.soups import soup_record
from fedsign.landscape.theory import (
    clipped_log_loss,
    digits_softmax,
    relu_simulation,
    softmax_gradient,
    softmax_hessian,
    softmax_hessian_quadratic,
    softmax_hessian_trace,
    softmax_metrics,
    softmax_probs,
)
from fedsign.landscape.variants import build_variant_model, float_state, train_checkpoints
from fedsign.models import MODEL_NAMES, build_model
from fedsign.training import TrainSettings, evaluate

DIGITS = DATASETS["digits"]

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def data(digits):
    return prepare_data(digits.test_x, digits.test_y, make_batch_transform(DIGITS, train=False), digits.train_x,
                        test_samples=120, recal_samples=200, batch_size=64)


def net(name="resnet20", seed=0, bn_weight_init="ones"):
    return build_variant_model(name, DIGITS, bn_weight_init, seed=seed)


# ------------------------------------------------------------------------------ signs and directions
def test_sign_consistency_of_a_model_with_itself_and_its_negation():
    theta = {k: v for k, v in model_state(net())[0].items()}
    groups = parameter_roles(net())
    same = sign_consistency(theta, theta, groups)
    assert all(v == 1.0 for v in same.values())
    flipped = sign_consistency(theta, {k: -v for k, v in theta.items()})
    nonzero = sum(int((v != 0).sum()) for v in theta.values()) / sum(v.numel() for v in theta.values())
    assert flipped["all"] == pytest.approx(1.0 - nonzero)  # zeros (BN biases at init) match themselves
    randn = {"w": torch.randn(1000), "b": torch.randn(10)}
    assert sign_consistency(randn, randn)["all"] == 1.0
    assert sign_consistency(randn, {k: -v for k, v in randn.items()})["all"] == 0.0


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
def test_ratio_noise_has_expected_sign_consistency(ratio):
    theta = {"a": torch.randn(300, 200), "b": torch.randn(5000)}
    eps = ratio_noise(theta, ratio, torch.Generator().manual_seed(1))
    assert sign_consistency(eps, theta)["all"] == pytest.approx(ratio + (1 - ratio) / 2, abs=0.006)


def test_common_noises_sign_replacement_and_seeding():
    theta = {"w": torch.randn(64, 3, 3, 3), "b": torch.randn(64)}
    values = {"ternary": {-1.0, 0.0, 1.0}, "binary": {0.0, 1.0}, "ones": {1.0}}
    for kind, allowed in values.items():
        noise = draw_noise(kind, theta, torch.Generator().manual_seed(0))
        assert set(torch.cat([v.reshape(-1) for v in noise.values()]).unique().tolist()) <= allowed
    dirs = make_directions(["gauss", "sc-gauss", "uniform01", "sc-uniform01"], theta, seed=3, normalization="none")
    assert sign_consistency(dirs["sc-gauss"], theta)["all"] == 1.0
    for k in theta:  # a noise and its sign-consistent version share the draw
        assert torch.equal(dirs["gauss"][k].abs(), dirs["sc-gauss"][k].abs())
    assert sign_consistency(dirs["uniform01"], theta)["all"] == pytest.approx(0.5, abs=0.05)
    again = make_directions(["gauss"], theta, seed=3, normalization="none")
    assert all(torch.equal(again["gauss"][k], dirs["gauss"][k]) for k in theta)
    assert direction_seed("ratio-0.1", 0) == direction_seed("ratio-0.9", 0) != direction_seed("gauss", 0)


def test_special_directions():
    theta = {"w": torch.randn(32, 16) + 0.3, "b": torch.randn(32)}
    assert sign_consistency(special_direction("sign", theta), theta)["all"] == 1.0
    sgp = special_direction("sgp", theta)
    assert set(torch.cat([v.reshape(-1) for v in sgp.values()]).unique().tolist()) == {0.0, 1.0}
    centered = special_direction("sign-mu", theta)
    assert torch.equal(centered["w"], torch.sign(theta["w"] - theta["w"].mean()))
    theta0 = {k: torch.randn_like(v) for k, v in theta.items()}
    assert torch.equal(special_direction("init", theta, theta0)["w"], theta0["w"])
    with pytest.raises(ValueError, match="theta_0"):
        make_direction("init", theta, torch.Generator())


def test_normalizations():
    theta = {"conv": torch.randn(8, 4, 3, 3), "bias": torch.randn(8)}
    d = {k: torch.randn_like(v) for k, v in theta.items()}
    ns = normalize(d, theta, "ns")
    norm = lambda t: float(torch.sqrt(sum((v ** 2).sum() for v in t.values())))  # noqa: E731
    assert norm(ns) == pytest.approx(norm(theta), rel=1e-5)
    assert torch.allclose(ns["conv"] / d["conv"], ns["bias"][:1] / d["bias"][:1])  # direction unchanged
    filt = normalize(d, theta, "filter")
    assert torch.allclose(filt["conv"].flatten(1).norm(dim=1), theta["conv"].flatten(1).norm(dim=1))
    assert torch.equal(filt["bias"], theta["bias"])  # default 1-D rule: copy theta (Li et al.)
    with pytest.raises(ValueError, match="zero direction"):
        normalize({k: torch.zeros_like(v) for k, v in theta.items()}, theta, "ns")


def test_parameter_roles():
    model = net()
    layer1 = select_parameters(model, "LAYER1")  # the first stage after the stem conv1/bn1
    assert layer1[0] == "layer1.0.conv1.weight" and all(n.startswith("layer1.") for n in layer1)
    assert "layer1.2.bn2.bias" in layer1
    assert select_parameters(model, "clf") == ["classifier.weight", "classifier.bias"]
    feat = select_parameters(model, "FEAT")
    assert "classifier.weight" not in feat and len(feat) + 2 == len(list(model.parameters()))
    assert all(".bn" in n or n.startswith("bn") or "shortcut.1" in n for n in select_parameters(model, "BN"))
    assert all(n.endswith("weight") and "bn" not in n for n in select_parameters(model, "CONV"))
    assert select_parameters(model, r"^layer3\.2\.conv2") == ["layer3.2.conv2.weight"]
    assert select_parameters(net("cnn"), "LAYER1") == ["features.0.weight", "features.0.bias",
                                                       "features.2.weight", "features.2.bias"]  # 8x8: one pool
    with pytest.raises(GroupError, match="selects no parameter"):
        select_parameters(model, "nothing_here")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_roles_of_every_fedsign_model(name):
    """The one role classification: a FedSign model's `classifier` (the last nn.Linear, after a MOON
    projection head) is CLF, every BatchNorm parameter a BN role, conv / linear weights and biases other."""
    m = build_model(name, 10, projection_dim=16)
    groups = parameter_roles(m)
    assert list(groups) == [n for n, _ in m.named_parameters()]
    assert set(groups.values()) <= set(ROLES) - {"other"}
    assert [n for n, g in groups.items() if g.startswith("classifier")] == ["classifier.weight", "classifier.bias"]
    assert groups["classifier.weight"] == "classifier_weight" and groups["classifier.bias"] == "classifier_bias"
    assert groups["projection.2.weight"] == "other_weight" and groups["projection.2.bias"] == "other_bias"
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert sum(g == "bn_weight" for g in groups.values()) == n_bn
    assert sum(g == "bn_bias" for g in groups.values()) == n_bn
    params = dict(m.named_parameters())
    for n, g in groups.items():
        assert n.endswith(g.rsplit("_", 1)[1])
        if g == "other_bias":
            assert params[n].dim() == 1
        elif g == "other_weight":
            assert params[n].dim() >= 2  # conv / linear weights only; BN weights are never "other"
    if name == "resnet20":
        assert groups["layer2.0.shortcut.1.weight"] == "bn_weight"
        assert groups["layer2.0.shortcut.0.weight"] == "other_weight"
        assert n_bn == 1 + 9 * 2 + 2



# ------------------------------------------------------------------------------ evaluation and BN policies
def test_recalibration_makes_bn_net_invariant_to_conv_scaling_but_stale_statistics_do_not(data):
    model = net()
    params, _ = model_state(model)
    buffers = point_buffers(model, params, data)  # realistic statistics of the unscaled net
    scale_conv1 = {"conv1.weight": params["conv1.weight"]}  # conv1 feeds bn1: theta + 4 * W = 5 W
    line = [Line(params, scale_conv1, [0.0, 4.0], buffers)]
    recal = evaluate_lines(model, line, data, bn="recalibrate")
    stale = evaluate_lines(model, line, data, bn="stale")
    assert recal.loss[0][1] == pytest.approx(recal.loss[0][0], abs=1e-4)
    assert recal.error[0][1] == recal.error[0][0]
    assert abs(stale.loss[0][1] - stale.loss[0][0]) > 0.05
    assert stale.loss[0][0] == pytest.approx(recal.loss[0][0], abs=1e-5)  # same statistics at the anchor


@pytest.mark.parametrize("name,group", [("resnet20", "ALL"), ("resnet20", "CLF"), ("cnn", "ALL")])
def test_vmap_and_loop_agree(data, name, group):
    model = net(name)
    params, buffers = model_state(model)
    names = select_parameters(model, group)
    d = make_directions(["sc-gauss"], {n: params[n] for n in names}, seed=0)["sc-gauss"]
    lines = [Line(params, d, [-1.0, -0.3, 0.0, 0.5, 1.0], buffers)]
    for bn in ("recalibrate", "stale", "none"):
        fast = evaluate_lines(model, lines, data, bn=bn, chunk=3, vectorize=True)
        slow = evaluate_lines(model, lines, data, bn=bn, chunk=3, vectorize=False)
        assert fast.vectorized and not slow.vectorized
        np.testing.assert_allclose(fast.loss[0], slow.loss[0], rtol=1e-4, atol=1e-4)
        assert np.abs(fast.error[0] - slow.error[0]).max() <= 1.0 / len(data.y)


def test_a_channels_last_model_is_evaluated_in_channels_last_with_the_same_values(data, monkeypatch):
    import fedsign.landscape.evaluate as evaluate_module

    plain = net("resnet20")
    params, buffers = model_state(plain)
    d = make_directions(["gauss"], params, seed=0)["gauss"]
    reference = evaluate_lines(plain, [Line(params, d, [-0.5, 0.0, 1.0], buffers)], data, chunk=2, vectorize=False)
    model = net("resnet20").to(memory_format=torch.channels_last)
    conv_layouts = []

    def recording_call(module, state, args):
        conv_layouts.extend(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                            for n, t in state.items() if n.endswith("conv2.weight"))
        return functional_call(module, state, args)

    functional_call = evaluate_module.functional_call
    monkeypatch.setattr(evaluate_module, "functional_call", recording_call)
    fast = evaluate_lines(model, [Line(params, d, [-0.5, 0.0, 1.0], buffers)], data, chunk=2, vectorize=False)
    assert conv_layouts and all(conv_layouts)  # stacked, sliced, then laid out as the module's weights
    np.testing.assert_allclose(fast.loss[0], reference.loss[0], rtol=1e-5)
    assert np.abs(fast.error[0] - reference.error[0]).max() <= 1.0 / len(data.y)


def test_the_anchor_is_evaluated_once_for_the_lines_that_share_it(data):
    model = net("resnet20")
    params, buffers = model_state(model)
    dirs = make_directions(["gauss", "sc-gauss"], params, seed=0)
    shared = [Line(params, d, [-0.5, 0.0, 0.5], buffers) for d in dirs.values()]
    together = evaluate_lines(model, shared, data, chunk=2, vectorize=False)
    assert together.points == 5
    for k, line in enumerate(shared):
        alone = evaluate_lines(model, [line], data, chunk=2, vectorize=False)
        np.testing.assert_array_equal(together.loss[k], alone.loss[0])
        np.testing.assert_array_equal(together.error[k], alone.error[0])
    other_anchor = Line(dict(params), dirs["gauss"], [0.0], buffers)  # an equal anchor, another object
    other_buffers = Line(params, dirs["gauss"], [0.0], dict(buffers))
    assert evaluate_lines(model, [shared[0], other_anchor, other_buffers], data, vectorize=False).points == 5


def test_bf16_evaluation_is_close(data):
    model = net("cnn")
    params, _ = model_state(model)
    lines = [Line(params, {}, [0.0])]
    full = evaluate_lines(model, lines, data, bn="stale")
    half = evaluate_lines(model, lines, data, bn="stale", bf16=True)
    assert half.loss[0][0] == pytest.approx(full.loss[0][0], abs=0.02)


def test_interpolation_endpoints_reproduce_the_two_models(digits, data):
    m1, m2 = net(seed=1), net(seed=2)
    (p1, _), (p2, _) = model_state(m1), model_state(m2)
    b1, b2 = point_buffers(m1, p1, data), point_buffers(m2, p2, data)
    groups = parameter_roles(m1)
    rec = interpolation(m1, p1, p2, data, groups=groups, buffers1=b1, buffers2=b2, lambdas=[0.0, 0.5, 1.0],
                        bn="stale")
    for k, (params, buffers) in ((0, (p1, b1)), (2, (p2, b2))):
        reference = net()
        reference.load_state_dict({**params, **buffers}, strict=False)
        idx = torch.sort(torch.randperm(len(digits.test_x), generator=torch.Generator().manual_seed(0))[:120]).values
        acc, loss = evaluate(reference, digits.test_x[idx], digits.test_y[idx].long(),
                             make_batch_transform(DIGITS, train=False))
        assert rec["error"][k] == pytest.approx(1 - acc, abs=1e-9)
        assert rec["loss"][k] == pytest.approx(loss, abs=1e-5)
    recal = interpolation(m1, p1, p2, data, groups=groups, lambdas=[0.0, 1.0])
    assert recal["loss"][0] == pytest.approx(evaluate_point(m1, p1, data)[1], abs=1e-5)
    assert recal["loss"][1] == pytest.approx(evaluate_point(m1, p2, data)[1], abs=1e-5)
    assert set(rec["stats"]["theta1"]) == set(groups.values())
    assert rec["ssr"]["theta1_theta2"]["all"] == sign_consistency(p1, p2)["all"]
    assert 0 < rec["ssr"]["theta2_d"]["all"] < 1


def test_valley_curves_share_the_center_and_report_asymmetry(data):
    model = net("cnn")
    params, _ = model_state(model)
    dirs = make_directions(["sc-gauss", "gauss"], params, seed=0)
    rec = valley_curves(model, params, dirs, data, scales=(0.5, 1.0), lambdas=np.linspace(-1, 1, 5), bn="stale")
    assert rec["timing"]["points"] == 2 * 6 + 1  # s * lambda in {0, ±0.25, ±0.5, ±1}: shared values run once,
    # and the center of both directions once
    for curve in rec["curves"].values():
        centers = [s["error"][2] for s in curve["scales"].values()]
        assert centers[0] == centers[1]
        a = curve["scales"]["1"]["asymmetry"]["loss"]
        assert a["asymmetry"] == pytest.approx(a["neg_mean"] - a["pos_mean"])


def test_soup_record_gap_and_ssr(data):
    model = net("cnn")
    init = float_state(model)
    a = {1: float_state(net("cnn", seed=5))}
    b = {1: float_state(net("cnn", seed=6))}
    rec = soup_record(model, init, a, b, data, lambdas=[0.0, 0.25, 0.5, 0.75, 1.0], bn="stale")
    row = rec["checkpoints"][0]
    acc = row["accuracy"]
    assert row["gap"] == pytest.approx(acc[2] - 0.5 * (acc[0] + acc[4]))
    assert row["ssr_ab"]["all"] == sign_consistency(a[1], b[1])["all"]


def test_training_variants_go_through_train_local(digits, monkeypatch):
    import fedsign.landscape.variants as variants

    calls = []
    real = variants.train_local
    monkeypatch.setattr(variants, "train_local", lambda *a, **k: calls.append(a[3].epochs) or real(*a, **k))
    model = build_variant_model("resnet20", DIGITS, "gaussian", seed=0)
    bn_weight = model.bn1.weight.detach()
    assert 0.05 < float(bn_weight.std()) < 0.2 and float(bn_weight.min()) < 0
    init = float_state(model)
    settings = TrainSettings(epochs=99, batch_size=32, lr=0.05, momentum=0.9, weight_decay=1e-3)
    states, stats = train_checkpoints(model, digits.train_x[:96], digits.train_y[:96].long(), DIGITS, settings,
                                      [1, 3], seed=0)
    assert calls == [1, 2] and len(stats) == 2
    assert not torch.equal(states[1]["conv1.weight"], init["conv1.weight"])
    assert not torch.equal(states[3]["conv1.weight"], states[1]["conv1.weight"])


# ------------------------------------------------------------------------------ theory (Appendix D)
def _listing2_grad_hessian(X, Y, P):
    """Listing 2's grad_hessian, verbatim (W and Z unused there)."""
    N, D = X.shape
    C = len(np.unique(Y))
    Id = np.tile(np.diag(np.ones(C)), (N, 1, 1))
    OY = np.diag(np.ones(C))[Y]
    XX = (X[:, None, :] * X[:, :, None]).reshape(N, D * D)
    PIP = (P[:, None, :] * (Id - P[:, :, None])).reshape(N, C * C)
    g = -1.0 * np.dot((OY - P).T, X) / N
    H = np.dot(PIP.T, XX) / N
    H = H.reshape(C, C, D, D).transpose(0, 2, 1, 3).reshape(C * D, C * D)
    return g, H


def test_softmax_metrics_reproduce_listing2():
    from scipy.special import softmax
    from sklearn.metrics import log_loss

    W, X, Y = digits_softmax()
    np.random.seed(7)
    noise = np.random.randn(*W.shape)
    lambdas = np.array([-1.0, 0.0, 0.4])
    ours = softmax_metrics(W, X, Y, noise, lambdas)
    for lam, row in zip(lambdas, ours):
        Wn = W + lam * noise
        P = softmax(np.dot(X, Wn.T), axis=1)
        g, H = _listing2_grad_hessian(X, Y, P)
        listing = [np.mean(np.argmax(P, axis=1) != Y), log_loss(Y, P), np.sum(np.diag(H)),
                   np.sum(P * (1 - P), axis=1).mean(), np.sum(g * noise),
                   np.dot(noise.reshape(-1), np.dot(H, noise.reshape(-1))), np.sum(g * Wn),
                   np.dot(Wn.reshape(-1), np.dot(H, Wn.reshape(-1)))]
        np.testing.assert_allclose(row, listing, rtol=1e-9, atol=1e-12)
    assert np.allclose(softmax_hessian(X, P), H)


def test_closed_form_trace_equals_autograd_hessian_trace():
    W, X, Y = digits_softmax()
    X, Y = X[:400], Y[:400]
    W = W + 0.05 * np.random.default_rng(0).standard_normal(W.shape)
    xt, yt = torch.tensor(X), torch.tensor(Y)
    H = torch.autograd.functional.hessian(lambda w: F.cross_entropy(xt @ w.T, yt), torch.tensor(W),
                                          vectorize=True).reshape(W.size, W.size)
    P = softmax_probs(X, W)
    assert softmax_hessian_trace(X, P) == pytest.approx(float(torch.trace(H)), rel=1e-9)
    V = np.random.default_rng(1).standard_normal(W.shape)
    v = torch.tensor(V.reshape(-1))
    assert softmax_hessian_quadratic(X, P, V) == pytest.approx(float(v @ H @ v), rel=1e-9)
    g = torch.autograd.functional.jacobian(lambda w: F.cross_entropy(xt @ w.T, yt), torch.tensor(W))
    np.testing.assert_allclose(softmax_gradient(X, Y, P), g.numpy(), atol=1e-12)
    assert clipped_log_loss(Y, P) == pytest.approx(float(F.cross_entropy(xt @ torch.tensor(W).T, yt)), rel=1e-9)


def test_hutchinson_trace():
    a = torch.rand(50) + 0.5  # diagonal Hessian: every Rademacher probe gives the trace exactly
    est, _ = hutchinson_trace(lambda p: 0.5 * (a * p["x"] ** 2).sum(), {"x": torch.randn(50)}, probes=3)
    assert est == pytest.approx(float(a.sum()), rel=1e-6)
    W, X, Y = digits_softmax()
    xt, yt = torch.tensor(X[:300]), torch.tensor(Y[:300])
    est, err = hutchinson_trace(lambda p: F.cross_entropy(xt @ p["w"].T, yt), {"w": torch.tensor(W)}, probes=64,
                                generator=torch.Generator().manual_seed(0))
    exact = softmax_hessian_trace(X[:300], softmax_probs(X[:300], W))
    assert abs(est - exact) < 5 * err + 1e-9


def test_relu_simulation_reproduces_listing1():
    sim = relu_simulation(seed=3, samples=40)
    np.random.seed(3)
    d = 512
    h = np.random.randn(d)
    for k, lamb in enumerate(np.linspace(-1.0, 1.0, 5)):
        vs = []
        for _ in range(40):
            w = np.random.randn(d) + 0.1 * h
            vs.append(np.dot(w + lamb * (2.0 * (w > 0.0) - 1.0), h))
        np.testing.assert_allclose(sim["values"][k], vs, rtol=1e-12)


# ------------------------------------------------------------------------------ CLI
def test_digits_demo_cli_writes_the_record_and_sign_consistent_curves_are_asymmetric(tmp_path, capsys):
    assert main(["landscape", "digits-demo", "--out", str(tmp_path), "--seed", "0", "--draws", "3"]) == 0
    rec = json.loads((tmp_path / "digits_demo.json").read_text())
    assert set(rec) == {"lambdas", "noises"} and len(rec["lambdas"]) == 21
    metrics = {"error", "loss", "trace_hessian", "gini", "first_order_text", "second_order_text",
               "first_order_listing", "second_order_listing"}
    assert set(rec["noises"]) == {"gaussian", "sign_consistent"}
    assert all(set(v) == metrics and all(len(x) == 21 for x in v.values()) for v in rec["noises"].values())
    sc, gauss = rec["noises"]["sign_consistent"], rec["noises"]["gaussian"]
    assert sc["error"][-1] < sc["error"][0] - 0.3  # flat along +sign(W), sharp along -sign(W)
    assert sc["trace_hessian"][-1] < sc["trace_hessian"][0]
    assert abs(gauss["error"][-1] - gauss["error"][0]) < 0.1  # Gaussian noise: symmetric
    assert abs(np.mean(gauss["error"][:11]) - np.mean(gauss["error"][10:])) < 0.05
    assert (tmp_path / "digits_demo.png").stat().st_size > 0 and (tmp_path / "digits_demo.npz").exists()


def test_cli_train_curves_interpolate_bench(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["landscape", "train", "--dataset", "digits", "--model", "resnet20", "--epochs", "1",
                 "--train-samples", "128", "--batch-size", "32", "--lr", "0.05", "--out", str(run),
                 "--device", "cpu"]) == 0
    assert {"config.json", "model.safetensors", "init.safetensors", "train.json"} <= {p.name for p in run.iterdir()}
    common = ["--test-samples", "64", "--recal-samples", "64", "--device", "cpu", "--chunk", "4"]
    assert main(["landscape", "curves", str(run), "--directions", "ones,sc-ones,init", "--scales", "1",
                 "--points", "3", "--group", "CLF", *common]) == 0
    rec = json.loads((run / "landscape" / "valleys.json").read_text())
    assert set(rec["curves"]) == {"ones", "sc-ones", "init"} and rec["seed"] == 0
    assert rec["parameters"] == ["classifier.weight", "classifier.bias"]
    assert (run / "landscape" / "valleys_error.png").exists() and (run / "landscape" / "valleys.npz").exists()
    assert main(["landscape", "interpolate", str(run), str(run / "init.safetensors"), "--points", "4",
                 *common]) == 0
    assert "SSR(θ1, θ2)" in capsys.readouterr().out
    assert main(["landscape", "bench", str(run), "--points", "4", *common]) == 0
    bench = json.loads((run / "landscape" / "bench.json").read_text())
    assert bench["modes"]["vmap"]["max_abs_diff_loss"] < 1e-3
    assert main(["landscape", "curves", str(run), "--group", "nope", *common]) == 2
    assert capsys.readouterr().err.strip().startswith("error: parameter group 'nope' selects no parameter")
    assert main(["landscape", "curves", str(tmp_path), *common]) == 2


def test_sign_consistency_of_stacked_models_is_their_mean_ssr():
    g = torch.Generator().manual_seed(0)
    ref = {"w": torch.randn(5, 4, generator=g), "b": torch.randn(3, generator=g)}
    others = [{k: torch.randn(v.shape, generator=g) for k, v in ref.items()} for _ in range(4)]
    groups = {"w": "other_weight", "b": "other_bias"}
    single = [sign_consistency(ref, o, groups) for o in others]
    stacked = sign_consistency(ref, {k: torch.stack([o[k] for o in others]) for k in ref}, groups)
    for group, value in stacked.items():
        assert value == pytest.approx(sum(s[group] for s in single) / len(single))

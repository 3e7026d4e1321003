"""Reference-exact options of fedsign.landscape: Filter-NS 1-D rules against hand-computed tensors, Fig. 29's two
coefficient definitions against finite differences, Fig. 10's weight patterns, soups from a given start."""

import json

import numpy as np
import pytest
import torch

from fedsign.cli import main
from fedsign.landscape import normalize
from fedsign.landscape.directions import DirectionError
from fedsign.landscape.theory import digits_softmax, softmax_metrics, softmax_probs, weight_patterns

THETA = {"w": torch.tensor([[3.0, 4.0], [0.0, 1.0]]), "b": torch.tensor([2.0, -1.0])}
D = {"w": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([-0.5, 3.0])}


@pytest.mark.parametrize("rule,bias", [("copy", [2.0, -1.0]), ("zero", [0.0, 0.0]), ("element", [-2.0, 1.0])])
def test_filter_ns_one_dimensional_rules(rule, bias):
    out = normalize(D, THETA, "filter", filter_1d=rule)
    # rows of w: ||d_0|| = 1 -> ||theta_0|| = 5; ||d_1|| = 2 -> ||theta_1|| = 1 (hand-computed)
    assert torch.equal(out["w"], torch.tensor([[5.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(out["b"], torch.tensor(bias))
    with pytest.raises(DirectionError, match="1-D rule"):
        normalize(D, THETA, "filter", filter_1d="bogus")


def _mean_ce(W, X, Y):
    P = softmax_probs(X, W)
    return float(np.mean(-np.log(P[np.arange(len(Y)), Y])))


def test_fig29_coefficients_match_finite_differences():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((200, 6)), rng.integers(0, 4, 200)
    W, eps = 0.3 * rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    lam, h = 0.4, 1e-4
    row = dict(zip(("error", "loss", "trace", "gini", "g_text", "h_text", "g_listing", "h_listing"),
                   softmax_metrics(W, X, Y, eps, np.array([lam]))[0]))
    Wn = W + lam * eps
    for v, g_key, h_key in ((eps, "g_text", "h_text"), (Wn, "g_listing", "h_listing")):
        plus, zero, minus = (_mean_ce(Wn + t * v, X, Y) for t in (h, 0.0, -h))
        assert row[g_key] == pytest.approx((plus - minus) / (2 * h), rel=1e-5)  # v^T g
        assert row[h_key] == pytest.approx((plus - 2 * zero + minus) / h ** 2, rel=1e-3)  # v^T H v
    assert row["g_text"] != pytest.approx(row["g_listing"], rel=0.1)


def test_fig10_weight_patterns():
    W, X, Y = digits_softmax()
    rec = weight_patterns(W, X, Y, cls=0, lambdas=[-1.0, 0.0, 1.0])
    patterns = np.asarray(rec["patterns"])
    assert patterns.shape == (3, 8, 8)
    np.testing.assert_allclose(patterns[1].reshape(-1), W[0])
    np.testing.assert_allclose(patterns[2].reshape(-1), W[0] + np.sign(W[0]))
    corr = rec["correlation"]
    assert corr[1] > 0.3 and corr[2] > 0.3 and corr[0] < corr[1]  # -sign(w) destroys the digit-0 pattern


def test_soups_start_from_a_given_weights_file(tmp_path, capsys):
    pre = tmp_path / "pre"
    assert main(["landscape", "train", "--dataset", "digits", "--model", "cnn", "--epochs", "2",
                 "--train-samples", "256", "--batch-size", "32", "--lr", "0.05", "--out", str(pre),
                 "--device", "cpu"]) == 0
    common = ["soups", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--train-samples", "128",
              "--batch-size", "32", "--lr", "0.01", "--points", "3", "--test-samples", "64", "--device", "cpu"]
    assert main(["landscape", *common, "--out", str(tmp_path / "fresh")]) == 0
    assert main(["landscape", *common, "--init", str(pre / "model.safetensors"), "--out", str(tmp_path / "pre_s")]) == 0
    fresh = json.loads((tmp_path / "fresh" / "soups.json").read_text())
    started = json.loads((tmp_path / "pre_s" / "soups.json").read_text())
    assert started["start"].startswith("weights file") and fresh["start"].startswith("seeded")
    from safetensors.torch import load_file
    init = load_file(str(tmp_path / "pre_s" / "init.safetensors"))
    trained = load_file(str(pre / "model.safetensors"))
    assert all(torch.equal(init[k], trained[k]) for k in trained)
    # from a trained start both halves stay close: higher SSR-AB than from the random init
    assert started["checkpoints"][0]["ssr_ab"]["all"] > fresh["checkpoints"][0]["ssr_ab"]["all"]
    assert main(["landscape", *common, "--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "error: weights file" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_digits_pattern_cli(tmp_path):
    assert main(["landscape", "digits-pattern", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "digits_pattern.json").read_text())
    assert rec["lambdas"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and (tmp_path / "digits_pattern.png").exists()

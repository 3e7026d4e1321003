"""Tests for fedsign.models (CPU, seconds)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fedsign.config import ConfigError, RunConfig
from fedsign.models import (
    BN_WEIGHT_INITS,
    MODEL_NAMES,
    ModelConfigError,
    build_model,
    check_model_input,
)


# ---- parameter-count formulas -------------------------------------------------------------
def conv(cin, cout, k=3, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def lin(i, o):
    return i * o + o


def bn(c):
    return 2 * c


def vgg_count(cfg, c=10, cin=3, batch_norm=False):
    total, prev = 0, cin
    for v in cfg:
        if v != "M":
            total += conv(prev, v) + (bn(v) if batch_norm else 0)
            prev = v
    # hidden fc 512-512-512, classifier 512-C
    return total + lin(512, 512) + lin(512, 512) + lin(512, c)


def resnet20_count(c=10, cin=3):
    total = conv(cin, 16, bias=False) + bn(16)
    prev = 16
    for planes in (16, 32, 64):
        for _ in range(3):
            total += conv(prev, planes, bias=False) + bn(planes) + conv(planes, planes, bias=False) + bn(planes)
            if prev != planes:  # option-B projection shortcut
                total += conv(prev, planes, k=1, bias=False) + bn(planes)
            prev = planes
    return total + lin(64, c)


def cnn_count(c=10, cin=3, s=8, widths=(32, 64), hidden=128):
    # s = spatial size after pooling (8x8 input -> 4, 28 -> 7, 32 -> 8)
    c1, c2 = widths
    return conv(cin, c1) + conv(c1, c2) + lin(c2 * s * s, hidden) + lin(hidden, c)


CFG8 = [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"]
CFG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# (name, in_channels, image_size, pinned count for C=10, formula)
PARAM_COUNTS = [
    ("vgg8", 3, 32, 4_441_226, vgg_count(CFG8)),
    ("vgg8_bn", 3, 32, 4_444_170, vgg_count(CFG8, batch_norm=True)),
    ("vgg11", 3, 32, 9_750_922, vgg_count(CFG11)),
    ("vgg11_bn", 3, 32, 9_756_426, vgg_count(CFG11, batch_norm=True)),
    ("vgg16", 3, 32, 15_245_130, vgg_count(CFG16)),
    ("vgg16_bn", 3, 32, 15_253_578, vgg_count(CFG16, batch_norm=True)),
    ("resnet20", 3, 32, 272_474, resnet20_count()),
    ("resnet20", 1, 28, 272_186, resnet20_count(cin=1)),
    ("cnn", 3, 32, 545_098, cnn_count(cin=3, s=8)),
    ("cnn", 1, 28, 421_642, cnn_count(cin=1, s=7)),
    ("cnn", 1, 8, 151_306, cnn_count(cin=1, s=4)),
    ("cnn_small", 1, 28, 105_866, cnn_count(cin=1, s=7, widths=(16, 32), hidden=64)),
    ("mlp", 1, 28, 199_210, (784 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)),  # McMahan et al.'s 2NN
    ("mlp", 3, 32, 656_810, (3 * 32 * 32 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)),
    # McMahan et al.'s CNN = FL-bench's avgcnn (582,026 weights on MNIST): unpadded 5x5 convs, s = 4 at 28, 5 at 32
    ("fedavg_cnn", 1, 28, 582_026, (25 * 32 + 32) + (25 * 32 * 64 + 64) + (64 * 16 * 512 + 512) + (512 * 10 + 10)),
    ("fedavg_cnn", 3, 32, 878_538, (75 * 32 + 32) + (25 * 32 * 64 + 64) + (64 * 25 * 512 + 512) + (512 * 10 + 10)),
]

RELU_COUNTS = {"cnn": 3, "cnn_small": 3, "mlp": 2, "fedavg_cnn": 3, "resnet20": 19, "vgg8": 7, "vgg8_bn": 7, "vgg11": 10,
               "vgg11_bn": 10, "vgg16": 15, "vgg16_bn": 15}
BN_NAMES = [n for n in MODEL_NAMES if n.endswith("_bn") or n == "resnet20"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,cin,size,pinned,formula", PARAM_COUNTS)
def test_parameter_counts(name, cin, size, pinned, formula):
    count = n_params(build_model(name, 10, cin, size))
    assert count == formula  # the layers are the ones written out in the formula
    assert count == pinned  # and the formula itself did not drift


def test_model_names():
    assert set(MODEL_NAMES) == set(RELU_COUNTS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_32x32x3(name):
    torch.manual_seed(0)
    m = build_model(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, feats = m(x, return_features=True)
    assert logits.shape == (2, 10)
    assert feats.shape == (2, m.feature_dim)
    assert torch.allclose(m(x), logits)
    # features are exactly what the classifier receives
    assert torch.allclose(m.classifier(feats), logits)
    assert isinstance(m.classifier, nn.Linear) and m.classifier.in_features == m.feature_dim
    assert list(m.state_dict())[-2:] == ["classifier.weight", "classifier.bias"]
    assert m.projection is None


@pytest.mark.parametrize("name", ["cnn", "resnet20"])
@pytest.mark.parametrize("size", [8, 28])
def test_small_grayscale_shapes(name, size):
    m = build_model(name, 7, in_channels=1, image_size=size).eval()
    logits, feats = m(torch.randn(3, 1, size, size), return_features=True)
    assert logits.shape == (3, 7) and feats.shape == (3, m.feature_dim)


def test_feature_dims():
    assert build_model("vgg8", 10).feature_dim == 512
    assert build_model("resnet20", 10).feature_dim == 64
    assert build_model("cnn", 10, 1, 8).feature_dim == 128
    # a 64x64 VGG flattens 512*2*2 into its first hidden Linear
    assert build_model("vgg8", 10, 3, 64).fc[0].in_features == 2048


def test_vgg8_matches_fedrepo_layout():
    m = build_model("vgg8", 10)
    kinds = [type(x).__name__ for x in m.features]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d"] * 5
    assert [x.out_channels for x in m.features if isinstance(x, nn.Conv2d)] == [64, 128, 256, 512, 512]
    assert all(x.bias is not None and x.kernel_size == (3, 3) and x.padding == (1, 1)
               for x in m.features if isinstance(x, nn.Conv2d))
    assert [type(x).__name__ for x in m.fc] == ["Linear", "ReLU", "Dropout"] * 2
    assert all(x.p == 0.5 for x in m.fc if isinstance(x, nn.Dropout))
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
    # only the final layer is named classifier
    assert [k for k in m.state_dict() if k.startswith("classifier")] == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("name", ["cnn", "resnet20", "vgg8", "vgg11_bn"])
def test_projection_head(name):
    size, cin = (8, 1) if name == "cnn" else (32, 3)
    base = build_model(name, 10, cin, size)
    m = build_model(name, 10, cin, size, projection_dim=32).eval()
    d = base.feature_dim
    p = m.projection
    assert [type(x) for x in p] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (p[0].in_features, p[0].out_features, p[2].in_features, p[2].out_features) == (d, d, d, 32)
    assert m.feature_dim == 32 and m.classifier.in_features == 32
    assert n_params(m) == n_params(base) + lin(d, d) + lin(d, 32) + lin(32, 10) - lin(d, 10)
    logits, feats = m(torch.randn(2, cin, size, size), return_features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 32)
    assert torch.allclose(m.classifier(feats), logits)
    assert sum(isinstance(x, nn.ReLU) for x in m.modules()) == RELU_COUNTS[name] + 1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_relu_modules_distinct_and_each_called_once(name):
    m = build_model(name, 10).eval()
    relus = [x for x in m.modules() if isinstance(x, nn.ReLU)]
    assert len(relus) == RELU_COUNTS[name]
    assert len({id(r) for r in relus}) == len(relus)
    assert not any(r.inplace for r in relus)
    calls = []
    hooks = [r.register_forward_pre_hook(lambda mod, inp: calls.append(id(mod))) for r in relus]
    m(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sorted(calls) == sorted(id(r) for r in relus)


def test_relu_pre_hook_position_encoding_changes_output():
    torch.manual_seed(0)
    m = build_model("resnet20", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = m(x)

    def add_pe(mod, inp):
        (h,) = inp
        pe = torch.linspace(-1, 1, h.shape[1]).view(1, -1, *([1] * (h.dim() - 2)))
        return (h + pe,)

    hooks = [r.register_forward_pre_hook(add_pe) for r in m.modules() if isinstance(r, nn.ReLU)]
    out = m(x)
    for h in hooks:
        h.remove()
    assert not torch.allclose(out, ref)
    assert torch.allclose(m(x), ref)


@pytest.mark.parametrize(
    "name,cin,size,fragment",
    [
        ("vgg8", 3, 28, "divisible by 32"),
        ("vgg16_bn", 1, 8, "divisible by 32"),
        ("vgg11", 3, 48, "divisible by 32"),
        ("cnn", 1, 30, "cnn needs"),
        ("cnn", 1, 2, "cnn needs"),
        ("resnet18", 3, 32, "unknown model"),
        ("resnet20", 0, 32, "in_channels"),
        ("resnet20", 3, 0, "image_size"),
    ],
)
def test_check_model_input_errors(name, cin, size, fragment):
    with pytest.raises(ValueError, match=fragment) as err:
        check_model_input(name, cin, size)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelConfigError):
        build_model(name, 10, cin, size)


ACCEPTED = ([(name, 3, 32) for name in MODEL_NAMES]
            + [(name, 1, s) for name in ("cnn", "mlp", "resnet20") for s in (8, 28)]
            + [("cnn", 1, 4), ("cnn", 1, 12), ("cnn", 3, 16), ("vgg8", 3, 64), ("fedavg_cnn", 1, 16),
               ("fedavg_cnn", 1, 28)])


@pytest.mark.parametrize("name,cin,size", ACCEPTED)
def test_check_model_input_accepts_what_the_model_can_run(name, cin, size):
    assert check_model_input(name, cin, size) is None
    model = build_model(name, 10, cin, size).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, cin, size, size)).shape == (2, 10)


def test_build_model_argument_errors():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn", 0)
    with pytest.raises(ValueError, match="projection_dim"):
        build_model("cnn", 10, projection_dim=0)
    with pytest.raises(ValueError, match="bn_weight_init"):
        build_model("resnet20", 10, bn_weight_init="zeros")


def _bn_weights(m):
    return torch.cat([x.weight.detach() for x in m.modules() if isinstance(x, nn.BatchNorm2d)])


def _bn_biases(m):
    return torch.cat([x.bias.detach() for x in m.modules() if isinstance(x, nn.BatchNorm2d)])


@pytest.mark.parametrize("name", BN_NAMES)
def test_bn_weight_init(name):
    torch.manual_seed(0)
    w = _bn_weights(build_model(name, 10))
    assert torch.equal(w, torch.ones_like(w))
    m = build_model(name, 10, bn_weight_init="uniform")
    w = _bn_weights(m)
    assert w.min() >= 0 and w.max() <= 1 and 0.4 < w.mean() < 0.6
    assert torch.all(_bn_biases(m) == 0)
    m = build_model(name, 10, bn_weight_init="gaussian")
    w = _bn_weights(m)
    assert (w < 0).any() and abs(w.mean()) < 0.02 and 0.08 < w.std() < 0.12
    assert torch.all(_bn_biases(m) == 0)
    assert set(BN_WEIGHT_INITS) == {"ones", "uniform", "gaussian"}


def test_conv_and_linear_init():
    torch.manual_seed(0)
    m = build_model("vgg16", 10)
    conv_last = m.features[-3]
    assert isinstance(conv_last, nn.Conv2d)
    fan_out = conv_last.out_channels * 9
    assert abs(conv_last.weight.std().item() - (2.0 / fan_out) ** 0.5) < 0.002
    assert torch.all(conv_last.bias == 0)
    for lyr in [m.fc[0], m.fc[3], m.classifier]:
        assert abs(lyr.weight.std().item() - 0.01) < 0.001
        assert torch.all(lyr.bias == 0)


def test_vmap_matches_separate_calls_cnn():
    torch.manual_seed(0)
    models = [build_model("cnn", 10, 1, 8) for _ in range(2)]
    params, buffers = stack_module_state(models)
    base = build_model("cnn", 10, 1, 8).to("meta")
    x = torch.randn(2, 5, 1, 8, 8)

    def f(p, b, xb):
        return functional_call(base, (p, b), (xb,), {"return_features": True})

    logits, feats = vmap(f)(params, buffers, x)
    for i, mdl in enumerate(models):
        ref_logits, ref_feats = mdl(x[i], return_features=True)
        assert torch.allclose(logits[i], ref_logits, atol=1e-6)
        assert torch.allclose(feats[i], ref_feats, atol=1e-6)
    assert not torch.allclose(logits[0], logits[1])


def test_functional_call_vmap_resnet_eval():
    torch.manual_seed(0)
    models = [build_model("resnet20", 10).eval() for _ in range(2)]
    params, buffers = stack_module_state(models)
    base = build_model("resnet20", 10).eval()
    x = torch.randn(3, 3, 32, 32)
    out = vmap(lambda p, b: functional_call(base, (p, b), (x,)))(params, buffers)
    for i, mdl in enumerate(models):
        assert torch.allclose(out[i], mdl(x), atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "resnet20", "vgg11_bn"])
def test_init_deterministic_under_seed(name):
    def sd(seed):
        torch.manual_seed(seed)
        return build_model(name, 10, bn_weight_init="gaussian").state_dict()

    a, b, c = sd(3), sd(3), sd(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cnn_trains_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(digits.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    m = build_model("cnn", 10, in_channels=1, image_size=8)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            loss = nn.functional.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(x[te]).argmax(1) == y[te]).float().mean().item()
    assert acc >= 0.9


def test_fedavg_cnn_refuses_images_its_unpadded_convolutions_cannot_take():
    with pytest.raises(ModelConfigError, match="needs image_size >= 16, got 8"):
        build_model("fedavg_cnn", 10, 1, 8)
    with pytest.raises(ConfigError, match="model 'fedavg_cnn' cannot take dataset 'digits'"):
        RunConfig.from_overrides("dataset='digits' model='fedavg_cnn'")

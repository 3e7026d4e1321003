"""fedsign.landscape on outside models: torchvision resnet18, vgg11_bn, vit_b_16 (weights=None) and a plain MLP,
with data as a DataLoader, a Dataset, an (x, y) pair or an EvalData (tiny random 32x32 images, CPU)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsign.landscape import (EvalData, GroupError, NonFiniteError, as_eval_data, evaluate_point, interpolation,
                               make_directions, model_state, parameter_roles, select_parameters, valley_curves)
from fedsign.landscape.records import write_record
from fedsign.landscape.soups import soup_record

CLASSES = 3

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def vgg11_bn() -> nn.Module:
    """torchvision's vgg11_bn with its two 4096-wide hidden layers narrowed to 32 (same module layout,
    ``classifier.6`` last): 9 M instead of 129 M parameters keeps whole-model interpolation fast."""
    model = torchvision.models.vgg11_bn(weights=None, num_classes=CLASSES)
    for i, (fan_in, fan_out) in {0: (512 * 7 * 7, 32), 3: (32, 32), 6: (32, CLASSES)}.items():
        model.classifier[i] = nn.Linear(fan_in, fan_out)
    return model


def vit_b_16() -> nn.Module:
    """vit_b_16 on 32x32 images (4 patches); its zero-initialized head re-drawn so the logits depend on the body."""
    model = torchvision.models.vit_b_16(weights=None, num_classes=CLASSES, image_size=32)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


BUILDERS = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=CLASSES),
    "vgg11_bn": vgg11_bn,
    "vit_b_16": vit_b_16,
    "mlp": mlp,
}




@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, CLASSES, (8,), generator=g)


@pytest.fixture(scope="module")
def loader(tensors):
    return DataLoader(TensorDataset(*tensors), batch_size=4)


@pytest.fixture(scope="module", params=list(BUILDERS))
def built(request):
    torch.manual_seed(0)
    return request.param, BUILDERS[request.param]().eval()


EXPECTED = {  # name: (CLF, predicate every LAYER1 name satisfies, a BN name, CONV names or None)
    "resnet18": (["fc.weight", "fc.bias"], lambda n: n.startswith("layer1."), "layer4.1.bn2.weight", 20),
    "vgg11_bn": (["classifier.6.weight", "classifier.6.bias"], lambda n: n.split(".")[1] in ("0", "1"),
                 "features.26.weight", 16),
    "vit_b_16": (["heads.head.weight", "heads.head.bias"], lambda n: n.startswith("encoder.layers."),
                 "encoder.ln.weight", 2),
    "mlp": (["3.weight", "3.bias"], None, None, None),
}


def test_parameter_groups_of_outside_models(built):
    name, model = built
    clf, layer1, bn_name, conv_count = EXPECTED[name]
    names = [n for n, _ in model.named_parameters()]
    assert select_parameters(model, "CLF") == clf
    feat = select_parameters(model, "FEAT")
    assert not set(feat) & set(clf) and len(feat) + len(clf) == len(names) == len(select_parameters(model, "ALL"))
    if name == "vit_b_16":
        assert "class_token" in feat and "encoder.pos_embedding" in feat
    if layer1 is None:  # the MLP: no stage structure, no conv, no normalization layer
        for group in ("LAYER1", "CONV", "BN"):
            with pytest.raises(GroupError, match=f"group '{group}' selects no parameter"):
                select_parameters(model, group)
        return
    first = select_parameters(model, "LAYER1")
    assert first and all(layer1(n) for n in first) and len(first) < len(names) - 2
    assert bn_name in select_parameters(model, "BN")
    assert len(select_parameters(model, "CONV")) == conv_count
    roles = parameter_roles(model)
    assert roles[clf[0]] == "classifier_weight" and roles[bn_name] == "bn_weight"


def test_classifier_override_and_frozen_parameters():
    model = BUILDERS["resnet18"]()
    assert select_parameters(model, "CLF", clf="layer4.1.conv2") == ["layer4.1.conv2.weight"]
    assert select_parameters(model, "CLF", clf=r"^fc\.weight$") == ["fc.weight"]
    assert "fc.bias" in select_parameters(model, "FEAT", clf=r"^fc\.weight$")
    with pytest.raises(GroupError, match="'CLF' selects no parameter.*clf='nothing'"):
        select_parameters(model, "CLF", clf="nothing")
    model.conv1.weight.requires_grad_(False)
    assert "conv1.weight" not in select_parameters(model, "ALL") + select_parameters(model, "FEAT")
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(GroupError, match="'FEAT'.*CLF is empty"):
        select_parameters(headless, "FEAT")


def reference_loss(model: nn.Module, loader) -> float:
    """Recalibrate BN as a cumulative average over the loader (momentum=None), then eval-mode CE."""
    model = __import__("copy").deepcopy(model)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            model.eval()
            for m in bns:
                m.train()
            for x, _ in loader:
                model(x)
        model.eval()
        return float(np.mean([F.cross_entropy(model(x), y, reduction="none").mean() for x, y in loader]))


def test_valley_curves_on_outside_models(built, loader):
    name, model = built
    theta, buffers = model_state(model)
    group = "BN" if name == "vit_b_16" else "ALL"  # ViT: 86 M parameters, so a small stack per point
    names = select_parameters(model, group)
    dirs = make_directions(["gauss", "sc-gauss"], {n: theta[n] for n in names}, seed=0)
    rec = valley_curves(model, theta, dirs, loader, scales=(1.0,), lambdas=[-1.0, 0.0, 1.0], buffers=buffers,
                        chunk=3, vectorize=False)
    centers = [c["scales"]["1"]["loss"][1] for c in rec["curves"].values()]
    assert centers[0] == pytest.approx(centers[1], abs=1e-6)
    assert centers[0] == pytest.approx(reference_loss(model, loader), rel=1e-4, abs=1e-5)
    ends = [c["scales"]["1"]["loss"][k] for c in rec["curves"].values() for k in (0, 2)]
    assert all(math.isfinite(v) for v in ends) and max(abs(v - centers[0]) for v in ends) > 1e-6
    json.dumps(rec, allow_nan=False)


def test_interpolation_and_soups_on_outside_models(built, loader):
    name, model = built
    theta1, buffers = model_state(model)
    g = torch.Generator().manual_seed(1)
    theta2 = {n: t + 0.05 * t.abs().mean() * torch.randn(t.shape, generator=g) for n, t in theta1.items()}
    rec = interpolation(model, theta1, theta2, loader, lambdas=[0.0, 1.0], chunk=1, vectorize=False)
    for k, theta in enumerate((theta1, theta2)):
        assert rec["loss"][k] == pytest.approx(evaluate_point(model, theta, loader)[1], rel=1e-5)
    assert rec["ssr"]["theta1_theta2"]["all"] < 1.0 and "classifier_weight" in rec["stats"]["theta1"]
    state = {**theta1, **buffers}
    rec = soup_record(model, state, {1: state}, {1: {**theta2, **buffers}}, loader, lambdas=[0.0, 0.5, 1.0],
                      chunk=1, vectorize=False)
    row = rec["checkpoints"][0]
    acc = row["accuracy"]
    assert row["gap"] == pytest.approx(acc[1] - (acc[0] + acc[2]) / 2)
    assert row["ssr_ia"]["all"] == 1.0 and row["ssr_ab"]["all"] < 1.0
    assert set(row["ssr_ab"]) >= {"all", "classifier_weight"}


def test_every_data_kind_gives_the_same_numbers(tensors, loader):
    torch.manual_seed(0)
    model = BUILDERS["resnet18"]().eval()
    theta, _ = model_state(model)
    x, y = tensors
    kinds = {"loader": loader, "dataset": as_eval_data(TensorDataset(x, y), batch_size=4),
             "pair": as_eval_data((x, y), batch_size=4), "evaldata": EvalData(x, y, recal_x=x, batch_size=4)}
    losses = {k: evaluate_point(model, theta, v) for k, v in kinds.items()}
    for k, v in losses.items():
        assert v == pytest.approx(losses["loader"], rel=1e-5), k
    only_test = as_eval_data(loader, recal=x[:4])  # recalibration on other images changes the statistics
    assert evaluate_point(model, theta, only_test)[1] != pytest.approx(losses["loader"][1], rel=1e-6)
    one_batch = evaluate_point(model, theta, TensorDataset(x, y))  # default batches of 256: other BN statistics
    assert one_batch[1] != pytest.approx(losses["loader"][1], rel=1e-6)
    with pytest.raises(ValueError, match="unsupported evaluation data"):
        evaluate_point(model, theta, [1, 2, 3])


def test_non_finite_models_are_refused_and_records_are_strict_json(loader, tmp_path):
    model = mlp()
    theta, _ = model_state(model)
    theta["1.weight"] = theta["1.weight"].clone()
    theta["1.weight"][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite values in '1.weight'"):
        evaluate_point(model, theta, loader)
    path = write_record(tmp_path, "r", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("nan")})[0]
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": None}


def test_the_package_imports_nothing_of_the_fl_side():
    """The landscape package (its CLI lives in fedsign/cli/landscape/) imports no task, config, CLI,
    clients or strategies."""
    import subprocess
    import sys

    modules = ["activations", "curves", "directions", "evaluate", "groups", "hessian", "plots", "records", "signs",
               "soups", "theory", "variants", "weights"]
    code = ("import sys; import " + ", ".join(f"fedsign.landscape.{m}" for m in modules) + "; "
            "print([m for m in sys.modules if m.split('.')[0] in ('clients', 'strategies', 'flwr') or "
            "m in ('fedsign.task', 'fedsign.config', 'fedsign.cli', 'fedsign.server', 'fedsign.engines')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

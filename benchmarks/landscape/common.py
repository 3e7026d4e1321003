"""What the landscape suites share: output folders, the networks by key, training one network through
``train_local`` (``fedsign.landscape.variants``), test accuracy with recalibrated BN, and Fig. 7."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from fedsign.data import DatasetSpec, load_dataset
from fedsign.landscape import (
    EvalData,
    evaluate_point,
    group_stats,
    lambda_grid,
    make_directions,
    parameter_roles,
    plots,
    select_parameters,
    sign_consistency,
    split_state,
    valley_curves,
)
from fedsign.landscape.variants import build_variant_model, float_state, train_checkpoints
from fedsign.models import BN_WEIGHT_INITS
from fedsign.training import TrainProgress, TrainSettings, derive_seed

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "landscape"
QUICK_OUT = ROOT / "runs" / "landscape-quick"
BN = "recalibrate"  # BN statistics recomputed at every evaluated point (paper A.3)

# network key -> (architecture of fedsign.models, has BatchNorm); a BN-free resnet20 is resnet20 with every
# BatchNorm replaced by identity, vgg8 is vgg8_bn's layout without BN.
NETS = {"cnn": ("cnn", False), "resnet20": ("resnet20", True), "resnet20-nobn": ("resnet20", False),
        "vgg8_bn": ("vgg8_bn", True), "vgg8": ("vgg8", False)}

FIG7_SCALES = {"BN": 1.0, "ALL": 0.2}  # noise group -> scale s
FIG7_FILTER_1D = {"BN": "element", "ALL": "copy"}  # Filter-NS would copy theta into a BN-only direction


@dataclass
class Trained:
    """A trained model: the module (holding the final state), its parameters, buffers and theta_0."""

    model: torch.nn.Module
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    init: dict[str, Tensor]
    seconds: float


def run_header(seed: int, threads: int, scale) -> dict:
    """The settings every suite's ``numbers.json`` starts with (``scale``: the suite's scale dataclass)."""
    return {"seed": seed, "command": " ".join(sys.argv), "threads": threads, "scale": asdict(scale),
            "bn_policy": BN, "noise_group": "ALL", "normalization": "ns"}


def load_permuted(name: str, data_dir: str, seed: int):
    """Dataset ``name`` (``data_dir`` or its default place) and its training images and labels in a seeded
    permutation: (dataset, x, y)."""
    dataset = load_dataset(name, data_dir or None)
    perm = torch.randperm(len(dataset.train_x), generator=torch.Generator().manual_seed(seed))
    return dataset, dataset.train_x[perm], dataset.train_y[perm].long()


def strip_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The BN-free twin: every BatchNorm replaced by ``nn.Identity`` (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            parent, _, local = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, local, torch.nn.Identity())
    return model


def build_net(key: str, spec: DatasetSpec, seed: int, bn_weight_init: str = "ones",
              init: str = "fedrepo", channels_last: bool = False) -> torch.nn.Module:
    """Network ``key`` of :data:`NETS` for ``spec``, initialized from ``seed`` by ``init`` (fedrepo | pytorch);
    ``channels_last``: its weights in that memory layout (faster convolutions on a CPU; the same init values)."""
    arch, has_bn = NETS[key]
    model = build_variant_model(arch, spec, bn_weight_init, seed=seed, init=init)
    if not has_bn and arch == "resnet20":
        strip_batch_norm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def start_net(key: str, spec: DatasetSpec, seed: int, bn_weight_init: str = "ones", init: str = "fedrepo",
              channels_last: bool = False, start: dict[str, Tensor] | None = None) -> torch.nn.Module:
    """:func:`build_net`, then the state ``start`` loaded into it when given."""
    model = build_net(key, spec, seed, bn_weight_init, init, channels_last)
    if start is not None:
        model.load_state_dict(start, strict=False)
    return model


def train_model(key: str, spec: DatasetSpec, x: Tensor, y: Tensor, settings: TrainSettings, epochs: int, seed: int,
                *, bn_weight_init: str = "ones", init: str = "fedrepo", channels_last: bool = False,
                start: dict[str, Tensor] | None = None, resume: TrainProgress | None = None,
                on_epoch: Callable[[TrainProgress], None] | None = None) -> Trained:
    """Network ``key`` built from ``seed`` by ``init`` (or started from the state ``start``), trained for ``epochs``
    epochs through ``train_local`` (one stretch, so a cosine schedule spans all of them); ``channels_last``: see
    :func:`build_net`; ``resume`` / ``on_epoch``: ``train_local``'s (``Trained.seconds`` counts this call)."""
    model = start_net(key, spec, seed, bn_weight_init, init, channels_last, start)
    init = float_state(model)
    begin = time.perf_counter()
    states, _ = train_checkpoints(model, x, y, spec, settings, [epochs], seed=derive_seed(seed, 1), resume=resume,
                                  on_epoch=on_epoch)
    params, buffers = split_state(model, states[epochs])
    return Trained(model, params, buffers, split_state(model, init)[0], time.perf_counter() - begin)


def train_halves(key: str, spec: DatasetSpec, x: Tensor, y: Tensor, halves: Sequence[Tensor], settings: TrainSettings,
                 epochs: Sequence[int], seed: int, *, init: str = "fedrepo", channels_last: bool = False,
                 start: dict[str, Tensor] | None = None) -> tuple[torch.nn.Module, dict, dict, dict]:
    """Fig. 11's two models: network ``key`` built from ``seed`` (or started from the state ``start``) and trained
    on each index set of ``halves`` alike, with checkpoints at ``epochs`` (:func:`train_checkpoints`).
    Returns the second model, the common start θ_I and each half's ``{epoch: state}``."""
    states = []
    for half in halves:
        model = start_net(key, spec, seed, init=init, channels_last=channels_last, start=start)
        theta_i = float_state(model)
        states.append(train_checkpoints(model, x[half], y[half], spec, settings, epochs, seed=derive_seed(seed, 1))[0])
    return model, theta_i, states[0], states[1]


def accuracy(t: Trained, data: EvalData) -> float:
    return 1.0 - evaluate_point(t.model, t.params, data, buffers=t.buffers, bn=BN)[0]


def curve_options(t: Trained, points: int) -> dict:
    """valley_curves / ratio_sweep options: point-by-point evaluation (faster than vmap on a CPU)."""
    return {"lambdas": lambda_grid(points), "buffers": t.buffers, "bn": BN, "vectorize": False}


def bn_init_figure(key: str, spec: DatasetSpec, x: Tensor, y: Tensor, settings: TrainSettings, epochs: int,
                   data: EvalData, points: int, seed: int, path: Path, title: str,
                   trained: dict[str, Trained] | None = None) -> dict:
    """Fig. 7 for BN net ``key``: BN weights initialized to ones, U(0,1) and G(0,0.1), each trained on
    ``(x, y)`` unless ``trained`` holds it already (init -> model); {0,1} noise on BN (s = 1) and on ALL
    (s = 0.2), NS and Filter-NS (1-D rule per
    :data:`FIG7_FILTER_1D`). The paper explains the asymmetry by the noise agreeing in sign with
    all-positive BN weights."""
    trained = trained or {}
    out, panels = {}, {}
    for init in BN_WEIGHT_INITS:
        t = trained[init] if init in trained else train_model(key, spec, x, y, settings, epochs, seed,
                                                          bn_weight_init=init)
        roles = parameter_roles(t.model)
        bn_names = [n for n, g in roles.items() if g == "bn_weight"]
        w0 = torch.cat([t.init[n].reshape(-1) for n in bn_names])
        wf = torch.cat([t.params[n].reshape(-1) for n in bn_names])
        out[init] = {
            "test_accuracy": accuracy(t, data), "train_seconds": t.seconds,
            "bn_weight": {"init": group_stats(t.init, roles)["bn_weight"],
                          "final": group_stats(t.params, roles)["bn_weight"],
                          "positive_fraction_init": float((w0 > 0).double().mean()),
                          "positive_fraction_final": float((wf > 0).double().mean())},
            "asymmetry": {}, "ssr_noise_theta": {}, "records": {},
        }
        for group, s in FIG7_SCALES.items():
            theta = {n: t.params[n] for n in select_parameters(t.model, group)}
            directions = {norm: make_directions(["binary"], theta, seed, normalization=norm,
                                                filter_1d=FIG7_FILTER_1D[group])["binary"] for norm in ("ns", "filter")}
            record = valley_curves(t.model, t.params, directions, data, scales=(s,), **curve_options(t, points))
            out[init]["asymmetry"][group] = {k: c["scales"][f"{s:g}"]["asymmetry"]["error"]["asymmetry"]
                                             for k, c in record["curves"].items()}
            out[init]["ssr_noise_theta"][group] = sign_consistency(directions["ns"], theta, roles)
            out[init]["records"][group] = record
        panels[init] = (w0.numpy(), wf.numpy())
    plots.plot_bn_init(panels, out, FIG7_SCALES, path, title)
    return out

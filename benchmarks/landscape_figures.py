"""The paper's landscape figures (Figs. 3, 4, 5, 7, 8, 11, 29) at reduced scale on real MNIST.

Every model is trained here through ``fedsign.landscape.variants`` (i.e. ``fedsign.training.train_local``)
and analysed with ``fedsign.landscape``; noise goes to ALL parameters, NS-normalized, unless stated; BN
statistics are recalibrated at every point (paper A.3). Seeded throughout (``--seed``).

- Fig. 3: valleys of the small ``cnn`` along the 7 common noises and their sign-consistent versions.
- Fig. 4: mean test error of the positive / negative side against the ratio r of sign-consistent elements.
- Fig. 5: the 6 special directions (theta_0, theta_f, sign, sign - mu, sgp, sgp - mu).
- Fig. 7: ``resnet20`` (the BN net that takes 28x28 inputs) with BN weights initialized to ones, U(0,1) and
  G(0,0.1): BN-weight histograms and the valleys along {0,1} noise, NS and Filter-NS, with the noise on the
  BN parameters (s = 1) and on ALL parameters (s = 0.2).
- Fig. 8: interpolation of two ``cnn`` s trained from one initialization with batch size 32 and 256,
  per-group statistics and sign consistency.
- Fig. 11: model soups: two ``cnn`` s from one initialization trained on the two halves of the data, with
  checkpoints; interpolation accuracy, SSR-IA/IB/AB and the gap Acc(soup) - mean Acc.
- Fig. 29: Listing 2, softmax regression on sklearn digits (no training scale involved).

Writes ``fig*.png`` and ``numbers.json`` (settings, seeds, accuracies, asymmetry scores, SSRs, gaps, the
curves and timings) to ``--out`` and prints a summary table.

    python benchmarks/landscape_figures.py            # ~9 min on the 2 shared cores here
    python benchmarks/landscape_figures.py --quick    # ~2 min smoke version (writes to runs/)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedsign.data import DatasetSpec, load_dataset, make_batch_transform
from fedsign.landscape import (
    DIRECTION_SETS,
    EvalData,
    asymmetry,
    evaluate_point,
    interpolation,
    lambda_grid,
    make_directions,
    plots,
    prepare_data,
    ratio_sweep,
    select_parameters,
    sign_consistency,
    split_state,
    valley_curves,
)
from fedsign.landscape.curves import group_stats
from fedsign.landscape.records import write_record
from fedsign.landscape.soups import soup_record, split_halves
from fedsign.landscape.theory import digits_demo
from fedsign.landscape.variants import (
    State,
    build_variant_model,
    float_state,
    train_checkpoints,
)
from fedsign.landscape.groups import parameter_roles
from fedsign.models import BN_WEIGHT_INITS, parameter_groups
from fedsign.training import TrainSettings, derive_seed

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "landscape"
QUICK_OUT = ROOT / "runs" / "landscape-quick"
BN = "recalibrate"


@dataclass(frozen=True)
class Scale:
    """How much of everything: training images and epochs per figure, evaluation sizes, grids."""

    train_samples: int  # cnn of Figs. 3-5 and the two models of Fig. 8
    epochs: int
    bn_train_samples: int  # resnet20 of Fig. 7
    bn_epochs: int
    soup_samples: int  # split into two halves (Fig. 11)
    soup_epochs: tuple[int, ...]
    test_samples: int
    bn_test_samples: int  # resnet20 (Fig. 7): every point is ~8x the cnn's cost
    recal_samples: int  # training images for BN recalibration (resnet20)
    points: int  # λ points in [-1, 1]
    interp_points: int  # λ points in [-1, 2] (Fig. 8)
    ratios: int  # r in linspace(0, 1, ratios) (Fig. 4)
    digits_draws: int


FULL = Scale(10000, 3, 3000, 2, 6000, (1, 2, 4), 500, 300, 128, 11, 31, 11, 10)
QUICK = Scale(3000, 2, 600, 1, 2000, (1, 2), 200, 150, 64, 7, 13, 6, 3)

# SGD settings (momentum 0.9, weight decay 5e-4 as the paper's §4.2; batch 256 its default).
CNN = TrainSettings(epochs=1, batch_size=256, lr=0.05, momentum=0.9, weight_decay=5e-4)
CNN_SMALL_BATCH = replace(CNN, batch_size=32)  # the other model of Fig. 8
RESNET = TrainSettings(epochs=1, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4)
SOUP = replace(CNN, batch_size=64)
VALLEY_SCALES = (0.2, 1.0, 2.0)
FIG7_SCALES = {"BN": 1.0, "ALL": 0.2}  # noise group -> scale s


@dataclass
class Trained:
    """A trained model: the module (holding the final state), its parameters, buffers and theta_0."""

    model: torch.nn.Module
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    init: dict[str, Tensor]
    seconds: float


def train(name: str, spec: DatasetSpec, x: Tensor, y: Tensor, settings: TrainSettings, epochs: int, seed: int,
          bn_weight_init: str = "ones") -> Trained:
    """Build ``name`` from ``seed`` and train it for ``epochs`` epochs through ``train_local``."""
    model = build_variant_model(name, spec, bn_weight_init, seed=seed)
    init = float_state(model)
    start = time.perf_counter()
    states, _ = train_checkpoints(model, x, y, spec, settings, [epochs], seed=derive_seed(seed, 1))
    params, buffers = split_state(model, states[epochs])
    return Trained(model, params, buffers, split_state(model, init)[0], time.perf_counter() - start)


def accuracy(t: Trained, data: EvalData) -> float:
    return 1.0 - evaluate_point(t.model, t.params, data, buffers=t.buffers, bn=BN)[0]


def curve_options(t: Trained, points: int) -> dict:
    """valley_curves / ratio_sweep options: point-by-point evaluation (faster than vmap on a CPU)."""
    return {"lambdas": lambda_grid(points), "buffers": t.buffers, "bn": BN, "vectorize": False}


def valley_summary(record: dict, directions: dict, theta: dict) -> dict:
    """Per direction: its sign consistency with theta and the error asymmetry per scale."""
    return {name: {"label": c["label"], "ssr": sign_consistency(directions[name], theta)["all"],
                   "asymmetry": {s: v["asymmetry"]["error"]["asymmetry"] for s, v in c["scales"].items()},
                   "error_at_-1": {s: v["error"][0] for s, v in c["scales"].items()},
                   "error_at_+1": {s: v["error"][-1] for s, v in c["scales"].items()}}
            for name, c in record["curves"].items()}


def fig_valleys(t: Trained, data: EvalData, rows: list[list[str]], scale: Scale, seed: int, path: Path,
                title: str) -> dict:
    """Figs. 3 and 5: valleys along the named directions over ALL parameters."""
    names = select_parameters(t.model, "ALL")
    theta = {n: t.params[n] for n in names}
    directions = make_directions([d for row in rows for d in row], theta, seed, theta0=t.init)
    record = valley_curves(t.model, t.params, directions, data, scales=VALLEY_SCALES,
                           **curve_options(t, scale.points))
    plots.plot_valleys(record, rows, path, "error", title)
    return {"summary": valley_summary(record, directions, theta), "record": record}


def fig_ratio(t: Trained, data: EvalData, scale: Scale, seed: int, path: Path, title: str) -> dict:
    """Fig. 4: ratio-r sweep of G(0,1) noise, s = 1."""
    ratios = np.round(np.linspace(0.0, 1.0, scale.ratios), 2)
    record = ratio_sweep(t.model, t.params, select_parameters(t.model, "ALL"), data, ratios=ratios, scale=1.0,
                         seed=seed, **curve_options(t, scale.points))
    plots.plot_ratio_sweep(record, path, title)
    return {"sweep": record["sweep"], "timing": record["timing"]}


def fig_bn_init(spec: DatasetSpec, x: Tensor, y: Tensor, test: tuple[Tensor, Tensor], scale: Scale, seed: int,
                path: Path) -> dict:
    """Fig. 7: resnet20 per BN-weight initialization; valleys along {0,1} noise, NS and Filter-NS, on the
    BN parameters (the paper's explanation: the noise agrees in sign with all-positive BN weights) and on
    ALL parameters (the paper's plot), each at its scale in :data:`FIG7_SCALES`."""
    data = prepare_data(*test, make_batch_transform(spec, train=False), x, test_samples=scale.bn_test_samples,
                        recal_samples=scale.recal_samples, seed=seed)
    out, panels = {}, {}
    for init in BN_WEIGHT_INITS:
        t = train("resnet20", spec, x, y, RESNET, scale.bn_epochs, seed, bn_weight_init=init)
        groups = parameter_groups(t.model)
        bn_names = [n for n, g in groups.items() if g == "bn_weight"]
        bn_init = torch.cat([t.init[n].reshape(-1) for n in bn_names])
        bn_final = torch.cat([t.params[n].reshape(-1) for n in bn_names])
        out[init] = {
            "test_accuracy": accuracy(t, data), "train_seconds": t.seconds,
            "bn_weight": {"init": group_stats(t.init, groups)["bn_weight"],
                          "final": group_stats(t.params, groups)["bn_weight"],
                          "positive_fraction_init": float((bn_init > 0).double().mean()),
                          "positive_fraction_final": float((bn_final > 0).double().mean())},
            "asymmetry": {}, "ssr_noise_theta": {}, "records": {},
        }
        for group, s in FIG7_SCALES.items():
            theta = {n: t.params[n] for n in select_parameters(t.model, group)}
            directions = {norm: make_directions(["binary"], theta, seed, normalization=norm,
                                                filter_1d=FIG7_FILTER_1D[group])["binary"] for norm in ("ns", "filter")}
            record = valley_curves(t.model, t.params, directions, data, scales=(s,), **curve_options(t, scale.points))
            out[init]["asymmetry"][group] = {k: c["scales"][f"{s:g}"]["asymmetry"]["error"]["asymmetry"]
                                             for k, c in record["curves"].items()}
            out[init]["ssr_noise_theta"][group] = sign_consistency(directions["ns"], theta, groups)
            out[init]["records"][group] = record
        panels[init] = (bn_init.numpy(), bn_final.numpy())
    plots.plot_bn_init(panels, out, FIG7_SCALES, path,
                       "Fig. 7-style: resnet20 on MNIST, BN weight initialization and valley asymmetry")
    return out


def fig_interpolation(spec: DatasetSpec, x: Tensor, y: Tensor, large_batch: Trained, data: EvalData,
                      scale: Scale, seed: int, path: Path) -> dict:
    """Fig. 8: theta_1 (batch 32) and theta_2 (batch 256, the Figs. 3-5 model), same initialization."""
    small_batch = train("cnn", spec, x, y, CNN_SMALL_BATCH, scale.epochs, seed)
    record = interpolation(small_batch.model, small_batch.params, large_batch.params, data,
                           groups=parameter_groups(small_batch.model), lambdas=lambda_grid(scale.interp_points, -1, 2),
                           bn=BN, vectorize=False)
    plots.plot_interpolation(record, path, names=("θ1 (bs 32)", "θ2 (bs 256)"),
                             title="Fig. 8-style: cnn on MNIST, batch size 32 vs 256")
    lam = np.asarray(record["lambdas"])
    error_at = {f"{v:g}": record["error"][int(np.argmin(np.abs(lam - v)))] for v in (0.0, 0.5, 1.0)}
    return {"train_seconds_bs32": small_batch.seconds, "error_at": error_at, "ssr": record["ssr"],
            "stats": record["stats"], "lambdas": record["lambdas"], "error": record["error"],
            "loss": record["loss"], "timing": record["timing"]}


def fig_soups(spec: DatasetSpec, x: Tensor, y: Tensor, data: EvalData, scale: Scale, seed: int,
              path: Path) -> dict:
    """Fig. 11: two cnn's from one initialization on the two halves of ``x``, checkpoints ``soup_epochs``."""
    model = build_variant_model("cnn", spec, seed=seed)
    init = float_state(model)
    checkpoints: dict[str, dict[int, State]] = {}
    start = time.perf_counter()
    for k, half in enumerate(split_halves(len(x), seed)):
        model.load_state_dict(init, strict=False)
        checkpoints["AB"[k]], _ = train_checkpoints(model, x[half], y[half], spec, SOUP, scale.soup_epochs,
                                                    seed=derive_seed(seed, k + 1))
    seconds = time.perf_counter() - start
    record = soup_record(model, init, checkpoints["A"], checkpoints["B"], data, groups=parameter_groups(model),
                         bn=BN, vectorize=False)
    plots.plot_soups(record, path, f"Fig. 11-style: cnn on MNIST, two halves of {len(x)} images, one init")
    return {"train_seconds": seconds, **record}


def fig_digits(scale: Scale, seed: int, path: Path) -> dict:
    """Fig. 29: Listing 2 (Gaussian vs sign-consistent noise on the digits softmax regression)."""
    record, _ = digits_demo(seed=seed, draws=scale.digits_draws)
    plots.plot_digits_demo(record, path)
    lam = record["lambdas"]
    return {**record, "error_asymmetry": {k: asymmetry(lam, v["error"])["asymmetry"]
                                          for k, v in record["noises"].items()}}


def print_summary(n: dict) -> None:
    print(f"\nFigs. 3-5: cnn, test accuracy {n['models']['cnn_bs256']['test_accuracy']:.4f}; "
          "error asymmetry = mean err(λ<0) - mean err(λ>0)")
    print(f"{'direction':<22} {'SSR':>6}" + "".join(f" {'s=' + format(s, 'g'):>8}" for s in VALLEY_SCALES))
    for fig in ("fig3", "fig5"):
        for d in n[fig]["summary"].values():
            print(f"{d['label']:<22} {d['ssr']:6.3f}" + "".join(f" {a:+8.4f}" for a in d["asymmetry"].values()))
    sweep = n["fig4"]["sweep"]
    print("\nFig. 4: ratio r     " + " ".join(f"{r:6.2f}" for r in sweep["ratios"]))
    print("        SSR         " + " ".join(f"{v:6.3f}" for v in sweep["ssr"]))
    print("        asymmetry   " + " ".join(f"{v:+6.3f}" for v in sweep["error_asymmetry"]))
    cols = [(g, norm) for g in FIG7_SCALES for norm in ("ns", "filter")]
    print("\nFig. 7: resnet20, {0,1} noise; SSR(noise, BN weights) and error asymmetry per group/normalization")
    print(f"{'BN init':<10} {'acc':>6} {'w>0 init':>8} {'w>0 end':>8} {'SSR(BN)':>8}"
          + "".join(f" {g + '/' + norm + '@' + format(FIG7_SCALES[g], 'g'):>13}" for g, norm in cols))
    for init, r in n["fig7"].items():
        print(f"{init:<10} {r['test_accuracy']:6.3f} {r['bn_weight']['positive_fraction_init']:8.3f} "
              f"{r['bn_weight']['positive_fraction_final']:8.3f} {r['ssr_noise_theta']['BN']['bn_weight']:8.3f}"
              + "".join(f" {r['asymmetry'][g][norm]:+13.4f}" for g, norm in cols))
    f8 = n["fig8"]
    print(f"\nFig. 8: bs 32 vs bs 256: error at λ=0 {f8['error_at']['0']:.4f}, λ=0.5 {f8['error_at']['0.5']:.4f}, "
          f"λ=1 {f8['error_at']['1']:.4f}")
    for key, label in (("theta1_theta2", "SSR(θ1, θ2)"), ("theta1_d", "SSR(θ1, d)"), ("theta2_d", "SSR(θ2, d)")):
        print(f"  {label:<12} " + "  ".join(f"{g} {v:.3f}" for g, v in f8["ssr"][key].items()))
    print("\nFig. 11: epoch  acc(A)  acc(B)  acc(soup)    gap   SSR-IA  SSR-IB  SSR-AB")
    lam = np.asarray(n["fig11"]["lambdas"])
    mid = int(np.argmin(np.abs(lam - 0.5)))
    for row in n["fig11"]["checkpoints"]:
        acc = row["accuracy"]
        print(f"        {row['epoch']:5d}  {acc[0]:.4f}  {acc[-1]:.4f}  {acc[mid]:.4f}  {row['gap']:+.4f}  "
              f"{row['ssr_ia']['all']:.4f}  {row['ssr_ib']['all']:.4f}  {row['ssr_ab']['all']:.4f}")
    print("\nFig. 29: digits softmax regression, error at λ = -1 / 0 / +1, asymmetry")
    for noise, metrics in n["fig29"]["noises"].items():
        err = metrics["error"]
        print(f"  {noise:<16} {err[0]:.4f} / {err[len(err) // 2]:.4f} / {err[-1]:.4f}   "
              f"{n['fig29']['error_asymmetry'][noise]:+.4f}")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in n["seconds"].items()))


# ------------------------------------------------------------------------------------------ BN suite
# Figs. 3, 4, 5, 7, 8 and 11 on CIFAR-10 for two BN networks and their BN-free twins (``--suite bn``).
BN_NETS = {"resnet20": ("resnet20", True), "resnet20-nobn": ("resnet20", False),
           "vgg8_bn": ("vgg8_bn", True), "vgg8": ("vgg8", False)}


@dataclass(frozen=True)
class BNScale:
    train_samples: int  # theta_f of every net; the soup halves use the next 2 * soup_half images
    epochs: int
    soup_half: int
    soup_epochs: int
    test_samples: int
    recal_samples: int
    points: int  # λ points in [-1, 1]
    interp_points: int  # λ points in [-0.5, 1.5]
    ratios: tuple[float, ...]
    noise_seeds: int  # Fig. 3 noise draws per net
    fig7_nets: tuple[str, ...]


BN_FULL = BNScale(1500, 2, 500, 2, 128, 64, 5, 9, (0.0, 0.5, 1.0), 3, ("resnet20",))
BN_QUICK = BNScale(128, 1, 64, 1, 32, 32, 3, 3, (0.0, 1.0), 1, ("resnet20",))
BN_SGD = {True: TrainSettings(epochs=1, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4),
          False: TrainSettings(epochs=1, batch_size=64, lr=0.02, momentum=0.9, weight_decay=5e-4)}
BN_SMALL_BATCH = 16  # Fig. 8's other model
FIG7_FILTER_1D = {"BN": "element", "ALL": "copy"}  # Filter-NS would copy theta into a BN-only direction


def strip_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The BN-free twin: every BatchNorm replaced by ``nn.Identity`` (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            parent, _, local = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, local, torch.nn.Identity())
    return model


def train_net(key: str, spec: DatasetSpec, x: Tensor, y: Tensor, epochs: int, seed: int, *,
              bn_weight_init: str = "ones", batch_size: int | None = None,
              start: dict[str, Tensor] | None = None) -> Trained:
    """Net ``key`` of :data:`BN_NETS` from ``seed`` (or from the state ``start``), trained by ``train_local``."""
    arch, bn = BN_NETS[key]
    model = build_variant_model(arch, spec, bn_weight_init, seed=seed)
    if not bn and arch == "resnet20":
        strip_batch_norm(model)
    if start is not None:
        model.load_state_dict(start, strict=False)
    init = float_state(model)
    settings = BN_SGD[bn] if batch_size is None else replace(BN_SGD[bn], batch_size=batch_size)
    begin = time.perf_counter()
    states, _ = train_checkpoints(model, x, y, spec, settings, [epochs], seed=derive_seed(seed, 1))
    params, buffers = split_state(model, states[epochs])
    return Trained(model, params, buffers, split_state(model, init)[0], time.perf_counter() - begin)


def _asym(record: dict, name: str) -> float:
    return record["curves"][name]["scales"]["1"]["asymmetry"]["error"]["asymmetry"]


def bn_net_figures(key: str, spec: DatasetSpec, x: Tensor, y: Tensor, data: EvalData, scale: BNScale, seed: int,
                   out: Path) -> tuple[dict, Trained]:
    """Figs. 3, 4, 5, 8 and 11 for one net (noise on ALL, NS, s = 1, BN recalibrated): their numbers, and
    the trained net (Fig. 7 reuses it)."""
    res: dict = {}
    xs, ys = x[:scale.train_samples], y[:scale.train_samples]
    t = train_net(key, spec, xs, ys, scale.epochs, seed)
    res["test_accuracy"], res["train_seconds"] = accuracy(t, data), t.seconds
    names = select_parameters(t.model, "ALL")
    theta = {n: t.params[n] for n in names}
    opts = {"lambdas": lambda_grid(scale.points), "buffers": t.buffers, "bn": BN, "vectorize": False}
    title = f"{key} on CIFAR-10 ({len(xs)} images, {scale.epochs} epochs, acc {res['test_accuracy']:.3f})"
    rows3 = [list(DIRECTION_SETS["common"]), list(DIRECTION_SETS["common-sc"])]
    fig3 = []
    for k in range(scale.noise_seeds):  # Fig. 3 with several noise draws
        dirs = make_directions([d for row in rows3 for d in row], theta, derive_seed(seed, 100 + k))
        record = valley_curves(t.model, t.params, dirs, data, scales=(1.0,), **opts)
        fig3.append({name: _asym(record, name) for name in record["curves"]})
        if k == 0:
            plots.plot_valleys(record, rows3, out / f"fig3_{key}.png", "error", "Fig. 3-style: " + title)
            res["fig3_record"] = record
    res["fig3"] = {name: [draw[name] for draw in fig3] for name in fig3[0]}
    ratio = ratio_sweep(t.model, t.params, names, data, ratios=scale.ratios, seed=seed, **opts)
    plots.plot_ratio_sweep(ratio, out / f"fig4_{key}.png", "Fig. 4-style: " + title)
    res["fig4"] = ratio["sweep"]
    special = make_directions(list(DIRECTION_SETS["special"]), theta, seed, theta0=t.init)
    record = valley_curves(t.model, t.params, special, data, scales=(1.0,), **opts)
    plots.plot_valleys(record, [list(DIRECTION_SETS["special"])], out / f"fig5_{key}.png", "error",
                       "Fig. 5-style: " + title)
    res["fig5"] = {name: _asym(record, name) for name in record["curves"]}
    res["fig5_record"] = record
    # Fig. 8: the same init trained with a small batch (theta_1) vs theta_f (theta_2)
    small = train_net(key, spec, xs, ys, scale.epochs, seed, batch_size=BN_SMALL_BATCH)
    interp = interpolation(small.model, small.params, t.params, data, buffers1=small.buffers, buffers2=t.buffers,
                           lambdas=np.linspace(-0.5, 1.5, scale.interp_points), bn=BN, vectorize=False)
    plots.plot_interpolation(interp, out / f"fig8_{key}.png", names=(f"θ1 (bs {BN_SMALL_BATCH})", "θ2 (bs 64)"),
                             title=f"Fig. 8-style: {key} on CIFAR-10")
    lam = np.asarray(interp["lambdas"])
    err = np.asarray(interp["error"])
    res["fig8"] = {"error": interp["error"], "lambdas": interp["lambdas"], "ssr": interp["ssr"],
                   "side_mean_error": {"theta1_side": float(err[lam <= 0].mean()),
                                       "theta2_side": float(err[lam >= 1].mean())}}
    # Fig. 11: two halves of fresh images, from the seeded init vs from theta_f (pre-trained on other images)
    soup_x = x[scale.train_samples:scale.train_samples + 2 * scale.soup_half]
    soup_y = y[scale.train_samples:scale.train_samples + 2 * scale.soup_half]
    res["fig11"] = {}
    for arm, start in (("random_init", None), ("pretrained", {**t.params, **t.buffers})):
        # both halves from one start: the seeded init (the one theta_f started from) or theta_f itself
        a, b = (train_net(key, spec, soup_x[half], soup_y[half], scale.soup_epochs, seed, start=start)
                for half in split_halves(len(soup_x), seed))
        rec = soup_record(a.model, a.init, {scale.soup_epochs: {**a.params, **a.buffers}},
                          {scale.soup_epochs: {**b.params, **b.buffers}}, data, lambdas=[0.0, 0.5, 1.0], bn=BN,
                          vectorize=False)
        row = rec["checkpoints"][0]
        res["fig11"][arm] = {"accuracy": row["accuracy"], "gap": row["gap"], "ssr_ab": row["ssr_ab"]["all"],
                             "ssr_ia": row["ssr_ia"]["all"], "ssr_ib": row["ssr_ib"]["all"]}
    return res, t


def bn_init_figure(key: str, ones: Trained, spec: DatasetSpec, x: Tensor, y: Tensor, data: EvalData,
                   scale: BNScale, seed: int, out: Path) -> dict:
    """Fig. 7 for a BN net: BN weights initialized to ones (``ones``, the Figs. 3-5 model), U(0,1) and
    G(0,0.1); {0,1} noise on BN (s = 1) and on ALL (s = 0.2), NS and Filter-NS (1-D rule per
    :data:`FIG7_FILTER_1D`)."""
    res, panels = {}, {}
    for init in BN_WEIGHT_INITS:
        t = ones if init == "ones" else train_net(key, spec, x[:scale.train_samples], y[:scale.train_samples],
                                                  scale.epochs, seed, bn_weight_init=init)
        roles = parameter_roles(t.model)
        bn_names = [n for n, g in roles.items() if g == "bn_weight"]
        w0 = torch.cat([t.init[n].reshape(-1) for n in bn_names])
        wf = torch.cat([t.params[n].reshape(-1) for n in bn_names])
        res[init] = {"test_accuracy": accuracy(t, data), "positive_fraction_init": float((w0 > 0).double().mean()),
                     "positive_fraction_final": float((wf > 0).double().mean()), "asymmetry": {}, "records": {}}
        for group, s in FIG7_SCALES.items():
            theta = {n: t.params[n] for n in select_parameters(t.model, group)}
            dirs = {norm: make_directions(["binary"], theta, seed, normalization=norm,
                                          filter_1d=FIG7_FILTER_1D[group])["binary"] for norm in ("ns", "filter")}
            record = valley_curves(t.model, t.params, dirs, data, scales=(s,), lambdas=lambda_grid(scale.points),
                                   buffers=t.buffers, bn=BN, vectorize=False)
            res[init]["asymmetry"][group] = {k: c["scales"][f"{s:g}"]["asymmetry"]["error"]["asymmetry"]
                                             for k, c in record["curves"].items()}
            res[init]["records"][group] = record
        panels[init] = (w0.numpy(), wf.numpy())
    plots.plot_bn_init(panels, res, FIG7_SCALES, out / f"fig7_{key}.png",
                       f"Fig. 7-style: {key} on CIFAR-10, BN weight initialization and valley asymmetry")
    return res


def run_bn_suite(args: argparse.Namespace) -> None:
    """``--suite bn``: every net of :data:`BN_NETS` on a CIFAR-10 subset; writes ``bn/numbers.json``."""
    total_start = time.perf_counter()
    scale = BN_QUICK if args.quick else BN_FULL
    out = (Path(args.out) if args.out else QUICK_OUT if args.quick else OUT) / ("bn" if args.seed == 0 else
                                                                               f"bn-seed{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    cifar = load_dataset("cifar10", args.data_dir or None)
    spec = cifar.spec
    perm = torch.randperm(len(cifar.train_x), generator=torch.Generator().manual_seed(seed))
    x, y = cifar.train_x[perm], cifar.train_y[perm].long()
    data = prepare_data(cifar.test_x, cifar.test_y, make_batch_transform(spec, train=False), x,
                        test_samples=scale.test_samples, recal_samples=scale.recal_samples, seed=seed)
    numbers: dict = {"seed": seed, "command": " ".join(sys.argv), "threads": args.threads, "scale": asdict(scale),
                     "bn_policy": BN, "noise_group": "ALL", "normalization": "ns", "scale_s": 1.0,
                     "sgd": {("bn" if k else "no_bn"): asdict(v) for k, v in BN_SGD.items()},
                     "fig7_scales": FIG7_SCALES, "fig7_filter_1d": FIG7_FILTER_1D,
                     "data": {"train": f"first images of a seeded permutation of the {len(x)} CIFAR-10 training "
                                       "images (theta_f: the first train_samples; soups: the next 2 * soup_half)",
                              "test": f"{len(data.x)} seeded CIFAR-10 test images",
                              "recal": f"{len(data.recal_x)} training images"},
                     "nets": {}, "seconds": {}}
    for key in (args.nets.split(",") if args.nets else BN_NETS):
        start = time.perf_counter()
        numbers["nets"][key], trained = bn_net_figures(key, spec, x, y, data, scale, seed, out)
        if key in scale.fig7_nets:
            numbers["nets"][key]["fig7"] = bn_init_figure(key, trained, spec, x, y, data, scale, seed, out)
        numbers["seconds"][key] = time.perf_counter() - start
        accuracy_ = numbers["nets"][key]["test_accuracy"]
        print(f"[{time.perf_counter() - total_start:6.0f} s] {key} done: acc {accuracy_:.3f}", flush=True)
        write_record(out, "numbers", numbers)  # after every net: a crash keeps what was measured
    numbers["seconds"]["total"] = time.perf_counter() - total_start
    write_record(out, "numbers", numbers)
    print(f"wrote {len(list(out.glob('fig*.png')))} PNGs and numbers.json to {out}")




# ------------------------------------------------------------------------------------------ claims
CLAIM_TEXT = {
    "C1": "sign-consistent noise ⇒ flatter positive side (all 7 noises)",
    "C2": "raw noises ≈ symmetric valleys (the paper's exception: positive-mean noises on BN nets)",
    "C3": "asymmetry grows monotonically with the ratio r of sign-consistent elements",
    "C4": "special directions: θ0, θf, sign(θf), sign(θf-μ) asymmetric; sgp(θf), sgp(θf-μ) not",
    "C5": "BN weights init ones / U(0,1) ⇒ asymmetric {0,1}-noise valley; G(0,0.1) ⇒ symmetric "
          "(noise groups: this project's reading)",
    "C6": "interpolation: the endpoint more sign-consistent with its outward direction has the flatter outer side "
          "(this project's reading)",
    "C7": "soups: a pre-trained start ⇒ higher SSR-AB and a positive soup gap (random init: lower, negative)",
    "C8": "Listing 2 (digits softmax): sign-consistent noise asymmetric, Gaussian symmetric",
}
# The verdict rule of each claim, as the code below applies it (CLAIMS.md prints these).
NOISE_RULES = (
    "Error asymmetry = mean test error over λ ≤ 0 − mean over λ ≥ 0 (λ = 0 in both): > 0 means the positive "
    "side is flatter.",
    "A quantity is *beyond noise* when its mean over seeds exceeds a threshold: the larger of 3 test images' "
    "worth of error (3 / the test images per point) and twice its standard error over the seeds (per-seed "
    "values are means over the noise draws). Values are printed as mean ± SE.",
)
RULES = {
    "C1": "holds when all 7 sign-consistent noises are positive beyond noise; contradicted when any is negative "
          "beyond noise; else within noise.",
    "C2": "the 3 zero-mean raw noises (G(0,1), U(−1,1), {−1,0,1}) must be within noise. The 4 positive-mean "
          "ones (G(1,1), U(0,1), {0,1}, {1}) must be within noise too, except that on a BN net a positive "
          "asymmetry along them is the paper's own exception (§4.1: \"the last four noise directions show slight "
          "asymmetry when s = 0.2\"; App. A.4: only with BN, whose all-positive weights agree in sign with the "
          "noise), reported as such. Measured at s = 1 only (the paper's exception is stated for s = 0.2).",
    "C3": "per seed, the asymmetry at each r of the grid; holds when it rises from the first r to the last "
          "beyond noise and no step between neighbouring r falls beyond noise (the paper: monotone over "
          "r ∈ {0, 0.1, …, 1}); contradicted when the rise or any step is negative beyond noise. A grid of 3 "
          "values (the BN suite) tests monotonicity only at those 3 points.",
    "C4": "holds when θ0, θf, sign(θf), sign(θf − μ) are positive beyond noise and sgp(θf), sgp(θf − μ) "
          "within noise; contradicted when one of the first four is negative beyond noise or an sgp direction "
          "is beyond noise; else within noise.",
    "C5": "holds when ones and U(0,1) are positive beyond noise (NS and Filter-NS) and G(0, 0.1) within "
          "noise; contradicted when ones or U(0,1) is negative or G(0, 0.1) beyond noise. The paper's Fig. 7 "
          "does not name the noised parameters and explains the asymmetry by the BN weights; testing both the "
          "BN parameters (s = 1) and ALL parameters (s = 0.2) is this project's reading.",
    "C6": "this project's reading of §4.2.2, which shows one pair (the small-batch model in a sharper, nearly "
          "symmetric valley, the large-batch one flatter and asymmetric) and says that sign consistency "
          "matters to the symmetry, without an endpoint rule: the endpoint whose SSR with its outward "
          "direction (−d at θ1, +d at θ2, d = θ2 − θ1) is higher should have the smaller error rise beyond "
          "it; holds / contradicted when the difference of the two rises is beyond noise with / against that "
          "sign.",
    "C7": "holds when the pre-trained start gives a higher SSR-AB on every seed, a gap not negative beyond "
          "noise, and a gap above the random-init arm's beyond noise; contradicted when its gap is below the "
          "random-init arm's beyond noise; else within noise.",
    "C8": "holds when the sign-consistent error asymmetry is above 0.02 and the Gaussian one within ±0.02.",
}
COMMON = tuple(DIRECTION_SETS["common"])
POSITIVE_MEAN = ("gauss1", "uniform01", "binary", "ones")  # the paper's "last four" noises of Fig. 3


class Stat:
    """A measured quantity over seeds (and noise draws): its mean and a noise threshold, the larger of
    ``base`` (3 test images' worth of error) and twice its standard error over the seeds."""

    def __init__(self, values, base: float):
        self.values = [float(v) for v in np.ravel(values)]
        self.mean = float(np.mean(self.values))
        self.se = float(np.std(self.values, ddof=1) / np.sqrt(len(self.values))) if len(self.values) > 1 else 0.0
        self.threshold = max(base, 2 * self.se)

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.mean:+.3f}"
        return f"{self.mean:+.3f}±{self.se:.3f}"

    @property
    def positive(self) -> bool:
        return self.mean > self.threshold + 1e-9  # float fuzz: a value at the threshold is noise

    @property
    def negative(self) -> bool:
        return self.mean < -self.threshold - 1e-9


def _joined(stats) -> str:
    return " ".join(str(v) for v in stats)


def _c6(runs: list[dict], base: float) -> tuple[str, str]:
    rise1, rise2, out1, out2 = [], [], [], []
    for f8 in runs:
        lam, err = np.asarray(f8["lambdas"]), np.asarray(f8["error"])
        rise1.append(err[lam < 0].mean() - err[np.argmin(np.abs(lam))])
        rise2.append(err[lam > 1].mean() - err[np.argmin(np.abs(lam - 1))])
        out1.append(1 - f8["ssr"]["theta1_d"]["all"])  # outward directions: -d at θ1, +d at θ2
        out2.append(f8["ssr"]["theta2_d"]["all"])
    diff = Stat(np.subtract(rise1, rise2), base)  # > 0: θ2's outer side is the flatter one
    text = (f"SSR(θ1,-d) {np.mean(out1):.3f}, SSR(θ2,d) {np.mean(out2):.3f}; error rise beyond θ1 "
            f"{np.mean(rise1):+.3f}, beyond θ2 {np.mean(rise2):+.3f} (difference {diff})")
    if not (diff.positive or diff.negative):
        return text, "within noise"
    return text, "holds" if diff.positive == (np.mean(out2) > np.mean(out1)) else "contradicted"


def _fig7_rows(runs: list[dict], base: float) -> list[tuple[str, str]]:
    """C5 per noise group (BN, ALL): (measured, verdict)."""
    out = []
    for group in ("BN", "ALL"):
        stat = {(i, n): Stat([r[i]["asymmetry"][group][n] for r in runs], base)
                for i in runs[0] for n in ("ns", "filter")}
        text = f"noise on {group}: " + "; ".join(f"{i} NS {stat[i, 'ns']} Filter-NS {stat[i, 'filter']}"
                                                 for i in runs[0])
        pos = [v for (i, _), v in stat.items() if i in ("ones", "uniform")]
        sym = [v for (i, _), v in stat.items() if i == "gaussian"]
        verdict = ("holds" if all(v.positive for v in pos) and not any(v.positive or v.negative for v in sym)
                   else "contradicted" if any(v.negative for v in pos) or any(v.positive or v.negative for v in sym)
                   else "within noise")
        out.append((text, verdict))
    return out


def _c2_verdict(raw: dict[str, Stat], has_bn: bool) -> str:
    """C2 (rule in :data:`RULES`): zero-mean noises symmetric; positive-mean noises symmetric, or
    positive on a BN net (the paper's own exception)."""
    off = [n for n, v in raw.items() if (v.positive or v.negative)
           and not (has_bn and n in POSITIVE_MEAN and v.positive)]
    if off:
        return f"contradicted ({', '.join(off)} asymmetric)"
    excepted = [n for n, v in raw.items() if v.positive or v.negative]
    return f"holds (the paper's BN exception: {', '.join(excepted)} positive)" if excepted else "holds"


def _c3_verdict(per_seed: list[list[float]], base: float) -> str:
    """C3 (rule in :data:`RULES`): per-seed asymmetries over the r grid; rises from the first r to the
    last beyond noise with no step down beyond noise."""
    overall = Stat([a[-1] - a[0] for a in per_seed], base)
    steps = [Stat([a[k + 1] - a[k] for a in per_seed], base) for k in range(len(per_seed[0]) - 1)]
    if overall.negative or any(step.negative for step in steps):
        return "contradicted"
    return "holds" if overall.positive else "within noise"


def _c7_verdict(gain: Stat, pretrained_gap: Stat, ssr_higher_every_seed: bool) -> str:
    """C7 (rule in :data:`RULES`): ``gain`` = pre-trained gap - random-init gap, per seed."""
    if gain.positive and not pretrained_gap.negative and ssr_higher_every_seed:
        return "holds"
    return "contradicted" if gain.negative else "within noise"


def net_rows(label: str, runs: list[dict], base: float, has_bn: bool) -> list[tuple[str, str, str, str]]:
    """C1-C7 rows of one network over its seeds (``runs``: one result dict per seed; ``has_bn``: the net
    has BatchNorm, for C2's exception)."""
    rows = []
    fig3 = {k: Stat([np.mean(r["fig3"][k]) for r in runs], base) for k in runs[0]["fig3"]}
    sc = [fig3[f"sc-{n}"] for n in COMMON]
    v1 = "holds" if all(v.positive for v in sc) else "contradicted" if any(v.negative for v in sc) else \
        f"within noise ({sum(v.positive for v in sc)}/7 beyond noise)"
    rows.append(("C1", label, f"sc asym {_joined(sc)}", v1))
    raw = dict(zip(COMMON, (fig3[n] for n in COMMON)))
    rows.append(("C2", label, f"raw asym {_joined(raw.values())}", _c2_verdict(raw, has_bn)))
    ratios = runs[0]["fig4"]["ratios"]
    r_asym = [Stat([r["fig4"]["error_asymmetry"][k] for r in runs], base) for k in range(len(ratios))]
    rows.append(("C3", label, "r " + "/".join(f"{x:g}" for x in ratios) + f": asym {_joined(r_asym)}",
                 _c3_verdict([r["fig4"]["error_asymmetry"] for r in runs], base)))
    expected = {"init": True, "final": True, "sign": True, "sign-mu": True, "sgp": False, "sgp-mu": False}
    f5 = {k: Stat([r["fig5"][k] for r in runs], base) for k in expected}
    hits = sum(f5[k].positive if want else not (f5[k].positive or f5[k].negative) for k, want in expected.items())
    wrong = [k for k, want in expected.items() if (want and f5[k].negative) or (not want and (f5[k].positive or
                                                                                           f5[k].negative))]
    rows.append(("C4", label, f"asym {_joined(f5.values())} ({hits}/6 as predicted)",
                 "holds" if hits == 6 else f"contradicted ({', '.join(wrong)})" if wrong else "within noise"))
    rows.append(("C6", label, *_c6([r["fig8"] for r in runs], base)))
    if runs[0].get("fig11"):
        arm = {(a, k): Stat([r["fig11"][a][k] for r in runs], base) for a in ("random_init", "pretrained")
               for k in ("ssr_ab", "gap")}
        gain = Stat([r["fig11"]["pretrained"]["gap"] - r["fig11"]["random_init"]["gap"] for r in runs], base)
        ssr_up = np.mean([r["fig11"]["pretrained"]["ssr_ab"] > r["fig11"]["random_init"]["ssr_ab"] for r in runs])
        verdict = _c7_verdict(gain, arm["pretrained", "gap"], ssr_up == 1)
        rows.append(("C7", label, f"random init: SSR-AB {arm['random_init', 'ssr_ab'].mean:.4f}, gap "
                                  f"{arm['random_init', 'gap']}; pre-trained: SSR-AB "
                                  f"{arm['pretrained', 'ssr_ab'].mean:.4f}, gap {arm['pretrained', 'gap']}", verdict))
    if runs[0].get("fig7"):
        rows += [("C5", label, *row) for row in _fig7_rows([r["fig7"] for r in runs], base)]
    return rows


def claim_rows(cnn: dict | None, bn_seeds: list[dict]) -> list[tuple[str, str, str, str]]:
    """(claim, network, measured, verdict) rows from the cnn suite's numbers and the BN suite's per-seed numbers."""
    rows: list[tuple[str, str, str, str]] = []
    if cnn:
        base = 3 / cnn["scale"]["test_samples"]
        res = {"fig3": {k: [v["asymmetry"]["1"]] for k, v in cnn["fig3"]["summary"].items()},
               "fig4": cnn["fig4"]["sweep"],
               "fig5": {k: v["asymmetry"]["1"] for k, v in cnn["fig5"]["summary"].items()},
               "fig8": cnn["fig8"]}
        rows += net_rows("cnn (MNIST, no BN; 1 seed)", [res], base, has_bn=False)
        checkpoints = cnn["fig11"]["checkpoints"]
        rows.append(("C7", "cnn (MNIST, no BN; 1 seed)", "random init only: " + ", ".join(
            f"E{c['epoch']} SSR-AB {c['ssr_ab']['all']:.3f} gap {c['gap']:+.3f}" for c in checkpoints),
            "not tested (no pre-trained arm in that run)"))
        rows += [("C5", "resnet20 (MNIST, cnn suite, 1 seed; Filter-NS 1-D rule 'element')", *row)
                 for row in _fig7_rows([cnn["fig7"]], 3 / cnn["scale"]["bn_test_samples"])]
        d = cnn["fig29"]["error_asymmetry"]
        rows.append(("C8", "softmax regression (sklearn digits, 10 draws)",
                     f"error asym: sign-consistent {d['sign_consistent']:+.3f}, Gaussian {d['gaussian']:+.3f}",
                     "holds" if d["sign_consistent"] > 0.02 and abs(d["gaussian"]) <= 0.02 else "contradicted"))
    if bn_seeds:
        base = 3 / bn_seeds[0]["scale"]["test_samples"]
        for key in bn_seeds[0]["nets"]:
            runs = [n["nets"][key] for n in bn_seeds if key in n["nets"]]
            rows += net_rows(f"{key} (CIFAR-10; {len(runs)} seeds × {bn_seeds[0]['scale']['noise_seeds']} draws)",
                             runs, base, has_bn=BN_NETS[key][1])
    return sorted(rows, key=lambda row: row[0])


def claims_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| claim | network | measured: error asymmetry, mean (± SE over seeds) | verdict |", "|---|---|---|---|"]
    lines += [f"| {c}: {CLAIM_TEXT[c]} | {net} | {text} | **{verdict}** |" for c, net, text, verdict in rows]
    return "\n".join(lines) + "\n"


def _row_name(network: str, measured: str) -> str:
    """A verdict row's network in a summary: 'resnet20 (CIFAR-10)', 'cnn (MNIST)', plus the noise group of C5."""
    name, _, detail = network.partition(" (")
    data = next((d for d in ("MNIST", "CIFAR-10", "sklearn digits") if d in detail), "")
    group = measured.split(":")[0] if measured.startswith("noise on ") else ""
    return name + (f" ({data})" if data else "") + (f", {group}" if group else "")


def claim_summaries(rows: list[tuple[str, str, str, str]]) -> list[str]:
    """One line per claim, produced from its verdict rows: the networks grouped by verdict, each with the
    verdict's detail (e.g. which noises were asymmetric)."""
    lines = []
    for claim in dict.fromkeys(c for c, *_ in rows):
        groups: dict[str, list[str]] = {}
        for _, network, measured, verdict in (r for r in rows if r[0] == claim):
            head, _, detail = verdict.partition(" (")
            groups.setdefault(head, []).append(_row_name(network, measured) + (f" ({detail}" if detail else ""))
        order = ("holds", "within noise", "contradicted", "not tested")
        parts = [f"{head} on {', '.join(groups[head])}" for head in sorted(groups, key=order.index)]
        lines.append(f"* **{claim}** ({CLAIM_TEXT[claim]}): " + "; ".join(parts) + ".")
    return lines


def _mean_accuracy(bn_seeds: list[dict]) -> dict[str, float]:
    return {key: float(np.mean([n["nets"][key]["test_accuracy"] for n in bn_seeds if key in n["nets"]]))
            for key in bn_seeds[0]["nets"]}


def run_description(cnn: dict | None, bn_seeds: list[dict]) -> list[str]:
    """'What was run', every figure read from the numbers.json files."""
    lines = []
    if bn_seeds:
        sc = bn_seeds[0]["scale"]
        minutes = [n["seconds"]["total"] / 60 for n in bn_seeds]
        acc = _mean_accuracy(bn_seeds)
        seeds = ", ".join(str(n["seed"]) for n in bn_seeds)
        lines += [
            f"**BN suite** (`benchmarks/landscape_figures.py --suite bn --seed S`, seeds {seeds}, in `bn/` and "
            f"`bn-seed<S>/`; {min(minutes):.0f}–{max(minutes):.0f} min of one core per seed, one torch thread): "
            f"{', '.join(acc)} on CIFAR-10 (resnet20-nobn: resnet20 with every BatchNorm replaced by identity; "
            f"vgg8: vgg8_bn's layout without BN). θf is trained on the first {sc['train_samples']:,} images of a "
            f"seeded permutation of the training set for {sc['epochs']} epochs (SGD batch "
            f"{BN_SGD[True].batch_size}, momentum {BN_SGD[True].momentum}, weight decay {BN_SGD[True].weight_decay}, "
            f"lr {BN_SGD[True].lr} with BN, {BN_SGD[False].lr} without); every point is evaluated on "
            f"{sc['test_samples']} seeded test images with BN statistics recalibrated on {sc['recal_samples']} "
            f"training images. Valleys: noise on ALL parameters, NS-normalized, s = 1, {sc['points']} λ points in "
            f"[−1, 1]; Fig. 3 {sc['noise_seeds']} noise draws per seed; Fig. 4 r ∈ "
            f"{{{', '.join(f'{r:g}' for r in sc['ratios'])}}}; Fig. 8 θ1 trained with batch {BN_SMALL_BATCH}, "
            f"θ2 = θf; Fig. 11 two halves of {sc['soup_half']} further images, {sc['soup_epochs']} epochs each, "
            f"from the seeded initialization θf started from and from θf itself (pre-trained on other CIFAR-10 "
            f"images, not another dataset); Fig. 7 on {', '.join(sc['fig7_nets'])} only: BN weights initialized "
            f"to ones, U(0,1), G(0,0.1), {{0,1}} noise on " + " and on ".join(
                f"{g} (s = {FIG7_SCALES[g]:g}, Filter-NS 1-D rule `{FIG7_FILTER_1D[g]}`)" for g in FIG7_SCALES) + ".",
            "",
            "**This is a very small scale.** Test accuracy, mean over the seeds: "
            + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()) + " (chance 0.100). A contrast between the BN "
            "nets and their BN-free twins is therefore also a contrast between nets that trained more and nets "
            "that trained less; the verdicts are about these models, not converged ones.",
            "",
        ]
    if cnn:
        sc = cnn["scale"]
        lines += [
            f"**cnn suite** (`numbers.json`, seed {cnn['seed']}): the BN-free small cnn on MNIST "
            f"({sc['train_samples']:,} images, {sc['epochs']} epochs, test accuracy "
            f"{cnn['models']['cnn_bs256']['test_accuracy']:.3f}; {sc['test_samples']} test images, "
            f"{sc['points']} λ points, one noise draw, Fig. 4 over {sc['ratios']} values of r), Fig. 7 on "
            f"resnet20 / MNIST ({sc['bn_train_samples']:,} images, {sc['bn_epochs']} epochs, "
            f"{sc['bn_test_samples']} test images), Fig. 11 from a random initialization only, and Fig. 29 / "
            f"Listing 2 on sklearn digits ({sc['digits_draws']} draws).",
            "",
        ]
    return lines


def fl_section(records: list[dict]) -> list[str]:
    """The FL-valley tables from ``fl/*.json`` (``fedsign landscape fl``), every figure read from them."""
    lines = []
    for rec in records:
        cfg = rec["config"]
        title = rec["runs"][0]["label"].split("\n")[-1]
        lines += [f"### `fl/{cfg['name']}.json`: {title}", "",
                  f"`fedsign landscape fl` on {len(rec['runs'])} runs (" + ", ".join(
                      f"`{Path(r['run']).name}`" for r in rec["runs"]) + f"), {cfg['test_samples']:,} test images "
                  f"per point, noise on {cfg['group']} at scale {cfg['scale']:g}; θ0 rebuilt from each run's "
                  "config.json. One seed.", "",
                  "| run | test acc, last round (%) | raw-noise asymmetry | sign-consistent asymmetry | "
                  "client SSR, last round |", "|---|---|---|---|---|"]
        notes = []
        for run in rec["runs"]:
            asym = {n: c["scales"][f"{cfg['scale']:g}"]["asymmetry"]["error"]["asymmetry"]
                    for n, c in run["valleys"]["curves"].items()}
            raw = {n: asym[n] for n in COMMON}
            sc = [asym[f"sc-{n}"] for n in COMMON]
            last = run["ssr_clients"][-1]
            name = run["label"].split("\n")[0]
            lines.append(f"| {name} | {100 * last['accuracy']:.2f} | {min(raw.values()):+.3f} … "
                         f"{max(raw.values()):+.3f} | {min(sc):+.3f} … {max(sc):+.3f} | {last['ssr_clients']:.4f} |")
            widest = max(raw, key=lambda n: abs(raw[n]))
            notes.append(f"{name}: sign-consistent asymmetry > 0 along {sum(v > 0 for v in sc)} of 7 noises "
                         f"(smallest {min(sc):+.3f}); largest raw-noise |asymmetry| {raw[widest]:+.3f} ({widest})")
        lines += ["", "Per model: " + "; ".join(notes) + ".", ""]
    return lines


CLAIMS_HEADER = """# The paper's valley claims, measured: verdicts per network

Generated by `benchmarks/landscape_figures.py --claims` from the committed `numbers.json` files (and `fl/*.json`):
each row is one claim of the paper (§4–§6.1, App. D) measured on one network, with the numbers and a verdict —
**holds**, **contradicted** or **within noise** — by the rules below; the summaries under "Reading" are produced
from the rows. Nothing here is typed by hand; edit the code, not this file.
"""


def claims_document(cnn: dict | None, bn_seeds: list[dict], fl_records: list[dict]) -> str:
    rows = claim_rows(cnn, bn_seeds)
    lines = [CLAIMS_HEADER, "## What was run", "", *run_description(cnn, bn_seeds), "## Rules", "",
             *(f"* {rule}" for rule in NOISE_RULES), *(f"* {c}: {rule}" for c, rule in RULES.items()), "",
             "## Verdicts", "", claims_table(rows), "## Reading", "", *claim_summaries(rows), ""]
    if bn_seeds:
        arms = [n["nets"][k]["fig11"][a]["ssr_ab"] for n in bn_seeds for k in n["nets"]
                for a in ("random_init", "pretrained")]
        lines += [f"C7 at this scale: SSR-AB is {min(arms):.4f}–{max(arms):.4f} in both arms of every BN-suite "
                  "net and seed, so the halves hardly leave their start; `fedsign landscape soups --init` runs the "
                  "paper's contrast with longer fine-tuning. What would settle the open rows: converged CIFAR-10 "
                  "models (tens of epochs on the full training set, i.e. a GPU) and ≥ 1,000 test images per "
                  "point.", ""]
    if fl_records:
        lines += ["## The valley of FL models", "", *fl_section(fl_records)]
    return "\n".join(lines).rstrip() + "\n"


def write_claims(out: Path) -> Path:
    """``claims_table.md`` and ``CLAIMS.md`` (:func:`claims_document`) from ``numbers.json`` (cnn suite), every
    ``bn*/numbers.json`` (BN suite, one per seed: ``bn`` for seed 0, ``bn-seed<k>`` for the others) and
    ``fl/*.json``, and each seed's Fig. 11 PNG."""
    import json

    cnn_path = out / "numbers.json"
    cnn = json.loads(cnn_path.read_text()) if cnn_path.is_file() else None
    bn_paths = sorted(out.glob("bn*/numbers.json"))
    bn_seeds = [json.loads(p.read_text()) for p in bn_paths]
    fl_records = [json.loads(p.read_text()) for p in sorted(out.glob("fl/*.json"))]
    (out / "claims_table.md").write_text(claims_table(claim_rows(cnn, bn_seeds)))
    path = out / "CLAIMS.md"
    path.write_text(claims_document(cnn, bn_seeds, fl_records))
    for numbers_path in bn_paths:  # Fig. 11 of the BN suite, drawn from its numbers
        plots.plot_soup_arms(json.loads(numbers_path.read_text())["nets"], numbers_path.parent / "fig11_soups.png",
                             "Fig. 11-style on CIFAR-10: two halves from a random init vs from a pre-trained θf")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="cnn", choices=("cnn", "bn"),
                        help="cnn: the MNIST cnn/resnet20 figures (default); bn: CIFAR-10, resnet20 / vgg8_bn and "
                             "their BN-free twins")
    parser.add_argument("--claims", action="store_true",
                        help="only write claims_table.md and CLAIMS.md from the numbers.json and fl/*.json files in "
                             "--out (no computation)")
    parser.add_argument("--nets", default="", help=f"--suite bn: comma-separated subset of {', '.join(BN_NETS)}")
    parser.add_argument("--quick", action="store_true", help="smoke version (~2 min); default out runs/")
    parser.add_argument("--out", default="", help=f"output folder (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="", help="MNIST (cnn suite) or CIFAR-10 (bn suite) location "
                                                       "(default: the dataset's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--train-samples", type=int, help="cnn training images (Figs. 3-5, 8)")
    parser.add_argument("--epochs", type=int, help="cnn training epochs (Figs. 3-5, 8)")
    parser.add_argument("--bn-train-samples", type=int, help="resnet20 training images (Fig. 7)")
    parser.add_argument("--soup-samples", type=int, help="images split into the two soup halves (Fig. 11)")
    parser.add_argument("--test-samples", type=int, help="test images per evaluated point")
    parser.add_argument("--points", type=int, help="λ points in [-1, 1]")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.claims:
        print(f"wrote {write_claims(Path(args.out) if args.out else OUT)}")
        return
    if args.suite == "bn":
        run_bn_suite(args)
        return
    total_start = time.perf_counter()
    scale = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("train_samples", "epochs", "bn_train_samples", "soup_samples",
                                               "test_samples", "points") if getattr(args, k) is not None}
    scale = replace(scale, **overrides)
    out = Path(args.out) if args.out else QUICK_OUT if args.quick else OUT
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed

    mnist = load_dataset("mnist", args.data_dir or None)
    spec = mnist.spec
    perm = torch.randperm(len(mnist.train_x), generator=torch.Generator().manual_seed(seed))
    x, y = mnist.train_x[perm], mnist.train_y[perm].long()
    test = (mnist.test_x, mnist.test_y)
    cnn_data = prepare_data(*test, make_batch_transform(spec, train=False), test_samples=scale.test_samples,
                            seed=seed)
    n = len(x)
    numbers: dict = {"seed": seed, "command": " ".join(sys.argv), "threads": args.threads,
                     "scale": asdict(scale), "bn_policy": BN, "noise_group": "ALL", "normalization": "ns",
                     "valley_scales": VALLEY_SCALES, "fig7_scales": FIG7_SCALES,
                     "sgd": {name: {k: v for k, v in asdict(s).items() if k != "epochs"}  # epochs: see scale
                             for name, s in (("cnn", CNN), ("cnn_small_batch", CNN_SMALL_BATCH),
                                             ("resnet20", RESNET), ("soup", SOUP))},
                     "data": {"train": f"first images of a seeded permutation of the {n} MNIST training images",
                              "test": f"{len(cnn_data.x)} seeded MNIST test images"},
                     "models": {}, "seconds": {}}

    def stage(name: str, func, *a):
        start = time.perf_counter()
        result = func(*a)
        numbers["seconds"][name] = time.perf_counter() - start
        print(f"[{time.perf_counter() - total_start:6.0f} s] {name} done", flush=True)
        return result

    xs, ys = x[:scale.train_samples], y[:scale.train_samples]
    cnn = stage("train_cnn", train, "cnn", spec, xs, ys, CNN, scale.epochs, seed)
    numbers["models"]["cnn_bs256"] = {"test_accuracy": accuracy(cnn, cnn_data), "train_seconds": cnn.seconds,
                                      "train_samples": len(xs), "epochs": scale.epochs}
    title = (f"cnn on MNIST ({len(xs)} images, {scale.epochs} epochs, acc "
             f"{numbers['models']['cnn_bs256']['test_accuracy']:.3f}), noise on ALL, NS")
    rows3 = [list(DIRECTION_SETS["common"]), list(DIRECTION_SETS["common-sc"])]
    numbers["fig3"] = stage("fig3", fig_valleys, cnn, cnn_data, rows3, scale, seed, out / "fig3_common_noises.png",
                            "Fig. 3-style: " + title)
    numbers["fig4"] = stage("fig4", fig_ratio, cnn, cnn_data, scale, seed, out / "fig4_ratio_sweep.png",
                            "Fig. 4-style: " + title)
    numbers["fig5"] = stage("fig5", fig_valleys, cnn, cnn_data, [list(DIRECTION_SETS["special"])], scale, seed,
                            out / "fig5_special_directions.png", "Fig. 5-style: " + title)
    numbers["fig8"] = stage("fig8", fig_interpolation, spec, xs, ys, cnn, cnn_data, scale, seed,
                            out / "fig8_interpolation.png")
    numbers["fig11"] = stage("fig11", fig_soups, spec, x[:scale.soup_samples], y[:scale.soup_samples], cnn_data,
                             scale, seed, out / "fig11_soups.png")
    numbers["fig7"] = stage("fig7", fig_bn_init, spec, x[:scale.bn_train_samples], y[:scale.bn_train_samples],
                            test, scale, seed, out / "fig7_bn_init.png")
    numbers["fig29"] = stage("fig29", fig_digits, scale, seed, out / "fig29_digits_demo.png")
    numbers["seconds"]["total"] = time.perf_counter() - total_start
    write_record(out, "numbers", numbers)
    print_summary(numbers)
    print(f"wrote {len(list(out.glob('fig*.png')))} PNGs and numbers.json to {out}")


if __name__ == "__main__":
    main()

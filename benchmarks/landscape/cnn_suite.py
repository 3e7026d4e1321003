"""The cnn suite: the paper's landscape figures (Figs. 3, 4, 5, 7, 8, 11, 29) at reduced scale on real MNIST.

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
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from torch import Tensor

from fedsign.data import DatasetSpec, make_batch_transform
from fedsign.landscape import (
    DIRECTION_SETS,
    EvalData,
    asymmetry,
    interpolation,
    lambda_grid,
    make_directions,
    parameter_roles,
    plots,
    prepare_data,
    ratio_sweep,
    select_parameters,
    sign_consistency,
    valley_curves,
)
from fedsign.landscape.records import write_record
from fedsign.landscape.soups import soup_record, split_halves
from fedsign.landscape.theory import digits_demo
from fedsign.landscape.variants import State, build_variant_model, float_state, train_checkpoints
from fedsign.training import TrainSettings, derive_seed

from .common import (BN, FIG7_SCALES, OUT, QUICK_OUT, Trained, accuracy, bn_init_figure, curve_options,
                     load_permuted, run_header, train_model)


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

def fig_interpolation(spec: DatasetSpec, x: Tensor, y: Tensor, large_batch: Trained, data: EvalData,
                      scale: Scale, seed: int, path: Path) -> dict:
    """Fig. 8: theta_1 (batch 32) and theta_2 (batch 256, the Figs. 3-5 model), same initialization."""
    small_batch = train_model("cnn", spec, x, y, CNN_SMALL_BATCH, scale.epochs, seed)
    record = interpolation(small_batch.model, small_batch.params, large_batch.params, data,
                           groups=parameter_roles(small_batch.model), lambdas=lambda_grid(scale.interp_points, -1, 2),
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
    record = soup_record(model, init, checkpoints["A"], checkpoints["B"], data, groups=parameter_roles(model),
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


def run(args: argparse.Namespace) -> None:
    """``--suite cnn``: every figure on MNIST; writes ``numbers.json`` and the PNGs to ``--out``."""
    total_start = time.perf_counter()
    scale = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("train_samples", "epochs", "bn_train_samples", "soup_samples",
                                               "test_samples", "points") if getattr(args, k) is not None}
    scale = replace(scale, **overrides)
    out = Path(args.out) if args.out else QUICK_OUT if args.quick else OUT
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed

    mnist, x, y = load_permuted("mnist", args.data_dir, seed)
    spec = mnist.spec
    test = (mnist.test_x, mnist.test_y)
    cnn_data = prepare_data(*test, make_batch_transform(spec, train=False), test_samples=scale.test_samples,
                            seed=seed)
    n = len(x)
    numbers: dict = {**run_header(seed, args.threads, scale), "valley_scales": VALLEY_SCALES,
                     "fig7_scales": FIG7_SCALES,
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
    cnn = stage("train_cnn", train_model, "cnn", spec, xs, ys, CNN, scale.epochs, seed)
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
    xb, yb = x[:scale.bn_train_samples], y[:scale.bn_train_samples]
    bn_data = prepare_data(*test, make_batch_transform(spec, train=False), xb, test_samples=scale.bn_test_samples,
                           recal_samples=scale.recal_samples, seed=seed)
    numbers["fig7"] = stage("fig7", bn_init_figure, "resnet20", spec, xb, yb, RESNET, scale.bn_epochs, bn_data,
                            scale.points, seed, out / "fig7_bn_init.png",
                            "Fig. 7-style: resnet20 on MNIST, BN weight initialization and valley asymmetry")
    numbers["fig29"] = stage("fig29", fig_digits, scale, seed, out / "fig29_digits_demo.png")
    numbers["seconds"]["total"] = time.perf_counter() - total_start
    write_record(out, "numbers", numbers)
    print_summary(numbers)
    print(f"wrote {len(list(out.glob('fig*.png')))} PNGs and numbers.json to {out}")

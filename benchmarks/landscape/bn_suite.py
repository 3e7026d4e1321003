"""The BN suite: Figs. 3, 4, 5, 7, 8 and 11 per network for two BN networks (resnet20, vgg8_bn) and their
BN-free twins (resnet20-nobn, vgg8); :func:`net_figures` is one network's analysis at any evaluation scale,
:func:`run` the near-chance CIFAR-10 subset run (``--suite bn``) whose numbers are committed under ``bn*/``."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fedsign.data import make_batch_transform
from fedsign.landscape import (
    DIRECTION_SETS,
    EvalData,
    interpolation,
    make_directions,
    plots,
    prepare_data,
    ratio_sweep,
    select_parameters,
    valley_curves,
)
from fedsign.landscape.records import write_record
from fedsign.landscape.soups import soup_record, split_halves
from fedsign.training import TrainSettings, derive_seed

from .common import (BN, FIG7_FILTER_1D, FIG7_SCALES, NETS, OUT, QUICK_OUT, Trained, accuracy, bn_init_figure,
                     curve_options, load_permuted, run_header, train_halves, train_model)

BN_NETS = ("resnet20", "resnet20-nobn", "vgg8_bn", "vgg8")  # keys of NETS


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


def _asym(record: dict, name: str) -> float:
    return record["curves"][name]["scales"]["1"]["asymmetry"]["error"]["asymmetry"]


def interpolation_figure(t: Trained, small: Trained, data: EvalData, points: int, path: Path, title: str,
                         batch_sizes: tuple[int, int]) -> dict:
    """Fig. 8: (1 - λ) θ1 + λ θ2 for λ in ``points`` values of [-0.5, 1.5], θ1 = ``small``, θ2 = ``t``."""
    interp = interpolation(small.model, small.params, t.params, data, buffers1=small.buffers, buffers2=t.buffers,
                           lambdas=np.linspace(-0.5, 1.5, points), bn=BN, vectorize=False)
    plots.plot_interpolation(interp, path, names=tuple(f"θ{k} (bs {b})" for k, b in enumerate(batch_sizes, 1)),
                             title=title)
    lam = np.asarray(interp["lambdas"])
    err = np.asarray(interp["error"])
    return {"error": interp["error"], "lambdas": interp["lambdas"], "ssr": interp["ssr"],
            "side_mean_error": {"theta1_side": float(err[lam <= 0].mean()),
                                "theta2_side": float(err[lam >= 1].mean())}}


Step = Callable[[str, Callable[[], Any]], Any]


def run_step(name: str, compute: Callable[[], Any]) -> Any:
    """The default :data:`Step`: compute it (a resumable suite passes one that stores each step's result)."""
    return compute()


def net_figures(key: str, t: Trained, data: EvalData, scale, seed: int, out: Path, title: str,
                train_twin: Callable[[], Trained] | None,
                train_halves: Callable[[dict | None], tuple[torch.nn.Module, dict, dict, dict]],
                batch_sizes: tuple[int, int], step: Step = run_step) -> dict:
    """Figs. 3, 4, 5, 8 and 11 for the trained net ``t`` (noise on ALL, NS, s = 1, BN recalibrated), PNGs
    ``fig<k>_<key>.png`` in ``out``, each titled ``Fig. k-style: `` + ``title``. ``scale`` gives
    ``noise_seeds`` (Fig. 3 draws), ``points``, ``ratios``, ``interp_points`` and ``soup_epochs``;
    ``train_twin()``: θ1 of Fig. 8 (θf's initialization, the smaller batch of ``batch_sizes``; None: no Fig. 8);
    ``train_halves(start)``: the two Fig. 11 models from ``start`` (None: θf's initialization), as
    :func:`~.common.train_halves` returns them; ``fig11[arm]`` holds every checkpoint and, at its top level,
    the last one. Each part (a Fig. 3 draw, Fig. 4, 5, 8, a Fig. 11 arm) runs through ``step(name, compute)``;
    each depends only on the seeds, so a part's stored result stands in for computing it again."""
    res: dict = {"test_accuracy": accuracy(t, data), "train_seconds": t.seconds}
    names = select_parameters(t.model, "ALL")
    theta = {n: t.params[n] for n in names}
    opts = curve_options(t, scale.points)
    rows3 = [list(DIRECTION_SETS["common"]), list(DIRECTION_SETS["common-sc"])]

    def fig3_draw(k: int) -> dict:
        dirs = make_directions([d for row in rows3 for d in row], theta, derive_seed(seed, 100 + k))
        record = valley_curves(t.model, t.params, dirs, data, scales=(1.0,), **opts)
        draw = {"asymmetry": {name: _asym(record, name) for name in record["curves"]}}
        if k == 0:
            plots.plot_valleys(record, rows3, out / f"fig3_{key}.png", "error", "Fig. 3-style: " + title)
            draw["record"] = record
        return draw

    fig3 = [step(f"fig3_draw{k}", lambda k=k: fig3_draw(k)) for k in range(scale.noise_seeds)]  # several draws
    res["fig3_record"] = fig3[0]["record"]
    res["fig3"] = {name: [draw["asymmetry"][name] for draw in fig3] for name in fig3[0]["asymmetry"]}

    def fig4() -> dict:
        ratio = ratio_sweep(t.model, t.params, names, data, ratios=scale.ratios, seed=seed, **opts)
        plots.plot_ratio_sweep(ratio, out / f"fig4_{key}.png", "Fig. 4-style: " + title)
        return ratio["sweep"]

    res["fig4"] = step("fig4", fig4)

    def fig5() -> dict:
        special = make_directions(list(DIRECTION_SETS["special"]), theta, seed, theta0=t.init)
        record = valley_curves(t.model, t.params, special, data, scales=(1.0,), **opts)
        plots.plot_valleys(record, [list(DIRECTION_SETS["special"])], out / f"fig5_{key}.png", "error",
                           "Fig. 5-style: " + title)
        return {"asymmetry": {name: _asym(record, name) for name in record["curves"]}, "record": record}

    special = step("fig5", fig5)
    res["fig5"], res["fig5_record"] = special["asymmetry"], special["record"]
    if train_twin is not None:  # Fig. 8: the same init trained with a small batch (theta_1) vs theta_f (theta_2)
        res["fig8"] = step("fig8", lambda: interpolation_figure(
            t, train_twin(), data, scale.interp_points, out / f"fig8_{key}.png", "Fig. 8-style: " + title,
            batch_sizes))

    def fig11(start: dict | None) -> dict:  # two halves, from the seeded init or from theta_f
        model, theta_i, states_a, states_b = train_halves(start)
        rec = soup_record(model, theta_i, states_a, states_b, data, lambdas=[0.0, 0.5, 1.0], bn=BN, vectorize=False)
        rows = [{"epoch": row["epoch"], "accuracy": row["accuracy"], "gap": row["gap"], "ssr_ab": row["ssr_ab"]["all"],
                 "ssr_ia": row["ssr_ia"]["all"], "ssr_ib": row["ssr_ib"]["all"]} for row in rec["checkpoints"]]
        return {**rows[-1], "checkpoints": rows}

    res["fig11"] = {arm: step(f"fig11_{arm}", lambda start=start: fig11(start))
                    for arm, start in (("random_init", None), ("pretrained", {**t.params, **t.buffers}))}
    return res


def run(args: argparse.Namespace) -> None:
    """``--suite bn``: every net of :data:`BN_NETS` on a CIFAR-10 subset; writes ``bn/numbers.json``."""
    total_start = time.perf_counter()
    scale = BN_QUICK if args.quick else BN_FULL
    out = (Path(args.out) if args.out else QUICK_OUT if args.quick else OUT) / ("bn" if args.seed == 0 else
                                                                               f"bn-seed{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    cifar, x, y = load_permuted("cifar10", args.data_dir, seed)
    spec = cifar.spec
    data = prepare_data(cifar.test_x, cifar.test_y, make_batch_transform(spec, train=False), x,
                        test_samples=scale.test_samples, recal_samples=scale.recal_samples, seed=seed)
    numbers: dict = {**run_header(seed, args.threads, scale), "scale_s": 1.0,
                     "sgd": {("bn" if k else "no_bn"): asdict(v) for k, v in BN_SGD.items()},
                     "fig7_scales": FIG7_SCALES, "fig7_filter_1d": FIG7_FILTER_1D,
                     "data": {"train": f"first images of a seeded permutation of the {len(x)} CIFAR-10 training "
                                       "images (theta_f: the first train_samples; soups: the next 2 * soup_half)",
                              "test": f"{len(data.x)} seeded CIFAR-10 test images",
                              "recal": f"{len(data.recal_x)} training images"},
                     "nets": {}, "seconds": {}}
    xs, ys = x[:scale.train_samples], y[:scale.train_samples]
    soup_x = x[scale.train_samples:scale.train_samples + 2 * scale.soup_half]
    soup_y = y[scale.train_samples:scale.train_samples + 2 * scale.soup_half]
    for key in (args.nets.split(",") if args.nets else BN_NETS):
        start = time.perf_counter()
        settings = BN_SGD[NETS[key][1]]
        t = train_model(key, spec, xs, ys, settings, scale.epochs, seed)
        title = f"{key} on CIFAR-10 ({len(xs)} images, {scale.epochs} epochs, acc {accuracy(t, data):.3f})"

        def twin(key=key, settings=settings):
            return train_model(key, spec, xs, ys, replace(settings, batch_size=BN_SMALL_BATCH), scale.epochs, seed)

        def halves(begin, key=key, settings=settings):
            # both halves of fresh images from one start: the seeded init (theta_f's) or theta_f itself
            return train_halves(key, spec, soup_x, soup_y, split_halves(len(soup_x), seed), settings,
                                [scale.soup_epochs], seed, start=begin)

        numbers["nets"][key] = net_figures(key, t, data, scale, seed, out, title, twin, halves,
                                           (BN_SMALL_BATCH, settings.batch_size))
        if key in scale.fig7_nets:
            numbers["nets"][key]["fig7"] = bn_init_figure(
                key, spec, xs, ys, BN_SGD[True], scale.epochs, data, scale.points, seed, out / f"fig7_{key}.png",
                f"Fig. 7-style: {key} on CIFAR-10, BN weight initialization and valley asymmetry",
                trained={"ones": t})
        numbers["seconds"][key] = time.perf_counter() - start
        accuracy_ = numbers["nets"][key]["test_accuracy"]
        print(f"[{time.perf_counter() - total_start:6.0f} s] {key} done: acc {accuracy_:.3f}", flush=True)
        write_record(out, "numbers", numbers)  # after every net: a crash keeps what was measured
    numbers["seconds"]["total"] = time.perf_counter() - total_start
    write_record(out, "numbers", numbers)
    print(f"wrote {len(list(out.glob('fig*.png')))} PNGs and numbers.json to {out}")

"""fedsign landscape: the paper's landscape analyses from the command line.

Analyses of a trained model take a *run directory* -- one written by the platform (``fedsign run`` /
``simulate``: ``config.json`` + ``model.safetensors``) or by ``fedsign landscape train`` -- or a
``.safetensors`` file inside one (e.g. a client model the run saved). The model is rebuilt with
``fedsign.task.build_run_model`` from the run's config, evaluated on that run's dataset (test split;
BN recalibration on the training split), and theta_0 is ``init.safetensors`` when the directory has
one, else the run's seeded initialization. Each command writes ``<name>.json`` / ``.npz`` records and
PNG figures to ``--out`` (default ``<run dir>/landscape``) and prints a short summary.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from fedsign.algorithms import get_algorithm
from fedsign.cli.common import CLIError
from fedsign.config import ConfigError, RunConfig
from fedsign.data import DATASETS, DatasetSpec, load_dataset, make_batch_transform
from fedsign.landscape import plots
from fedsign.landscape.activations import activation_confusion
from fedsign.landscape.curves import interpolation, lambda_grid, ratio_sweep, valley_curves
from fedsign.landscape.directions import DIRECTION_SETS, FILTER_1D, NORMALIZATIONS, DirectionError, make_directions
from fedsign.landscape.evaluate import (BN_POLICIES, DataError, EvalData, Line, NonFiniteError, PolicyError,
                                        evaluate_lines, has_batch_norm, prepare_data, split_state,
                                        subset_indices)
from fedsign.landscape.groups import GROUP_NAMES, GroupError, parameter_roles, select_parameters
from fedsign.landscape.hessian import trace_curve
from fedsign.landscape.records import curve_arrays, write_record
from fedsign.landscape.soups import soup_record, split_halves
from fedsign.landscape.theory import (DIGITS_METRICS, digits_demo, digits_softmax, relu_simulation, relu_summary,
                                     weight_patterns)
from fedsign.landscape.variants import build_variant_model, float_state, train_checkpoints
from fedsign.landscape.weights import WeightsError, fit_weights, load_weights
from fedsign.models import BN_WEIGHT_INITS, MODEL_NAMES, ModelConfigError
from fedsign.results import RunResults, read_metrics
from fedsign.task import build_run_model
from fedsign.training import TrainSettings, derive_seed, evaluate, resolve_device

RUN_FILES = ("config.json", "model.safetensors")


# ------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedRun:
    """A trained model with everything the analyses need (from a run directory or ``--model``)."""

    run_dir: Path
    label: str  # "<model> on <dataset>"
    model: nn.Module
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    init: dict[str, Tensor]
    spec: DatasetSpec
    train_x: Tensor
    test_x: Tensor
    test_y: Tensor
    config: RunConfig | None = None


def _read_config(run_dir: Path) -> RunConfig:
    """The run's config.json, or a one-line CLIError for a broken one."""

    try:
        return RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CLIError(f"{run_dir / 'config.json'} is not valid JSON ({err}); restore it from the run") from None
    except (ConfigError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CLIError(f"{run_dir / 'config.json'} is not a valid run config ({first})") from None


def _run_state(model: nn.Module, path: Path, built: str = "") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Parameters and buffers of the weights file ``path`` for ``model`` (one-line errors; ``built`` says
    what the model was built as)."""
    try:
        return split_state(model, fit_weights(model, load_weights(path), f"weights file {path}"))
    except WeightsError as err:
        raise CLIError(f"{err}{'; the model was built as ' + built if built else ''}") from None


def load_run(path: str | Path, device: torch.device) -> LoadedRun:
    """Load a run directory (or a ``.safetensors`` file inside one) and its dataset."""

    path = Path(path)
    model_file = path if path.suffix == ".safetensors" else path / "model.safetensors"
    run_dir = model_file.parent
    if not (run_dir / "config.json").is_file() or not model_file.is_file():
        raise CLIError(f"{path} is not a run directory: it needs {' and '.join(RUN_FILES)} "
                       f"(written by fedsign run / simulate or fedsign landscape train)")
    config = _read_config(run_dir)
    model = build_run_model(config)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    built = f"{config.model} for {config.dataset} by {run_dir / 'config.json'}"
    if (run_dir / "init.safetensors").is_file():
        init, _ = _run_state(model, run_dir / "init.safetensors", built)
    params, buffers = _run_state(model, model_file, built)
    model.load_state_dict({**params, **buffers}, strict=False)
    model.to(device)
    data = load_dataset(config.dataset, config.data_dir or None)
    return LoadedRun(run_dir, f"{config.model} on {config.dataset} ({run_dir.name})", model,
                     _to_device(params, device), _to_device(buffers, device), _to_device(init, device),
                     DATASETS[config.dataset], data.train_x, data.test_x, data.test_y, config)


def build_callable(spec: str, kwargs: list[str]) -> nn.Module:
    """``package.module:callable`` called with ``key=value`` keyword arguments (values parsed as JSON
    where they parse: ``num_classes=10``, ``weights=null``; else strings)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CLIError(f"--model {spec!r}: write package.module:callable, e.g. torchvision.models:resnet18")
    options = {}
    for item in kwargs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--model-kwargs {item!r}: write key=value, e.g. num_classes=10")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise CLIError(f"--model {spec!r}: cannot import it ({err})") from None
    try:
        model = factory(**options)
    except Exception as err:  # the user's callable: report its failure in one line
        raise CLIError(f"--model {spec!r} with {options} failed: {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise CLIError(f"--model {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_callable(args: argparse.Namespace, device: torch.device, weights: str | None = None) -> LoadedRun:
    """``--model`` (seeded by ``--seed``: that fresh model is theta_0), ``weights`` loaded into it, and
    ``--dataset`` from ``--data-dir`` (ImageFolder, idx files or tarball; see ``fedsign.data``)."""

    if not args.dataset:
        raise CLIError(f"--model needs --dataset (one of {', '.join(DATASETS)}) and, for files, --data-dir")
    if args.dataset not in DATASETS:
        raise CLIError(f"unknown --dataset {args.dataset!r}; use one of {', '.join(DATASETS)}")
    torch.manual_seed(args.seed)
    model = build_callable(args.model, args.model_kwargs)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    params, buffers = split_state(model, {**dict(model.named_parameters()), **dict(model.named_buffers())})
    if weights:
        params, buffers = _run_state(model, Path(weights))
        model.load_state_dict({**params, **buffers}, strict=False)
    data = load_dataset(args.dataset, args.data_dir or None)
    spec = DATASETS[args.dataset]
    model.eval()
    with torch.no_grad():
        try:
            width = model(make_batch_transform(spec, train=False)(data.test_x[:2], None)).shape[-1]
        except Exception as err:
            shape = f"[{spec.channels}, {spec.image_size}, {spec.image_size}]"
            raise CLIError(f"--model {args.model} cannot take {args.dataset} images {shape}: "
                           f"{str(err).splitlines()[0]}") from None
    if width != spec.num_classes:
        raise CLIError(f"--model {args.model} outputs {width} classes but {args.dataset} has {spec.num_classes}; "
                       f"pass --model-kwargs num_classes={spec.num_classes} (or the model's own option)")
    model.to(device)
    name = Path(weights).name if weights else "its initialization"
    return LoadedRun(Path(weights).parent if weights else Path("."), f"{args.model} ({name}) on {args.dataset}",
                     model, _to_device({n: t.detach() for n, t in params.items()}, device),
                     _to_device({n: t.detach() for n, t in buffers.items()}, device), _to_device(init, device),
                     spec, data.train_x, data.test_x, data.test_y)


def load_target(args: argparse.Namespace, path: str | None, device: torch.device) -> LoadedRun:
    """A run directory (or a model file in one), or with ``--model`` a weights file (``path`` or ``--weights``)."""
    if getattr(args, "model", ""):
        return load_callable(args, device, path or args.weights)
    if not path:
        raise CLIError("give a run directory, or --model package.module:callable with --weights and --dataset")
    return load_run(path, device)


def _to_device(state: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {n: t.detach().to(device) for n, t in state.items()}


def eval_data(run: LoadedRun, args: argparse.Namespace, device: torch.device) -> EvalData:
    """The run's test split (and training images for BN recalibration where the model has BN)."""

    recal = run.train_x if args.bn == "recalibrate" and has_batch_norm(run.model) else None
    return prepare_data(run.test_x, run.test_y, make_batch_transform(run.spec, train=False), recal,
                        test_samples=args.test_samples, recal_samples=args.recal_samples,
                        batch_size=args.eval_batch, seed=args.seed, device=device)


def _device(args: argparse.Namespace) -> torch.device:
    """The device (and, with ``--threads``, torch's intra-op thread count)."""

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except RuntimeError as err:
        raise CLIError(str(err)) from None


def _out_dir(args: argparse.Namespace, run_path: str | Path | None) -> Path:
    """``--out``, else ``<run dir>/landscape`` (``<weights folder>/landscape`` with ``--model``)."""
    if args.out:
        return Path(args.out)
    if not run_path and not getattr(args, "weights", ""):
        raise CLIError("--model without a weights file: give --out")
    path = Path(run_path or args.weights)
    return (path.parent if path.is_file() else path) / "landscape"


def _floats(text: str) -> list[float]:
    """``0.2,1,2`` or ``start:stop:step`` (stop included)."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            return [round(v, 10) + 0.0 for v in np.arange(start, stop + step / 2, step)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.2,1,2 or 0:1:0.1, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2,5, got {text!r}") from None


def _config(args: argparse.Namespace) -> dict:
    """The record's ``config``: the command's arguments (without the handler)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def _evaluation(args: argparse.Namespace, device: torch.device) -> dict:
    """Evaluation options; ``--mode auto`` is vmap on a GPU and the loop on a CPU (where, for the
    small CNN on MNIST, the loop measured 2-3x more points per second than vmap)."""
    vectorize = args.mode == "vmap" or (args.mode == "auto" and device.type == "cuda")
    return {"bn": args.bn, "chunk": args.chunk, "vectorize": vectorize, "bf16": args.bf16}


def _errors_as_cli(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report the package's input errors as one-line ``CLIError`` s."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (DirectionError, GroupError, PolicyError, ModelConfigError, DataError, NonFiniteError,
                WeightsError) as err:
            raise CLIError(str(err)) from None

    return run


def _print_written(paths) -> None:
    print("wrote " + ", ".join(str(p) for p in paths))


def _subset(x: Tensor, y: Tensor, limit: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random subset of ``limit`` examples (all when ``limit`` is 0 or too large)."""
    idx = subset_indices(len(x), limit, torch.Generator().manual_seed(seed))
    return x[idx], y[idx]


def _direction_rows(spec: str) -> list[list[str]]:
    """Figure rows: one per direction set named in ``spec``, then one for the single names."""
    rows, singles = [], []
    for item in (s.strip() for s in spec.split(",")):
        if item in DIRECTION_SETS:
            rows.append(list(DIRECTION_SETS[item]))
        elif item:
            singles.append(item)
    if singles:
        rows.append(singles)
    if not rows:
        raise DirectionError("no direction given")
    return rows


def _title(run: LoadedRun, args: argparse.Namespace) -> str:
    bn = f"BN {args.bn}" if has_batch_norm(run.model) else "no BN"
    return f"{run.label}, group {args.group}, {args.norm.upper()} noise, {bn}"


def _training_config(args: argparse.Namespace, out_dir: str, epochs: int) -> RunConfig:
    """The RunConfig written to a landscape training directory (so it loads like a platform run)."""
    return RunConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, num_clients=1,
                     clients_per_round=1, num_rounds=1, local_epochs=epochs, batch_size=args.batch_size,
                     lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                     out_dir=out_dir, device=args.device).validate().resolved()


def _save_states(results, model: nn.Module, states: dict[str, dict[str, Tensor]]) -> list[Path]:
    """Save each ``{file name: state}`` through the run's results writer."""
    paths = []
    for name, state in states.items():
        model.load_state_dict(state, strict=False)
        paths.append(results.save_model(model, name))
    return paths


def cmd_train(args: argparse.Namespace) -> int:
    """Train one model (a §4.2 variant) through train_local and save it as a run directory."""
    device = _device(args)
    config = _training_config(args, args.out, args.epochs)
    results = RunResults.create(config.out_dir)
    data = load_dataset(config.dataset, config.data_dir or None)
    x, y = _subset(data.train_x, data.train_y, args.train_samples, args.seed)
    model = build_variant_model(config.model, data.spec, args.bn_weight_init, seed=config.seed).to(device)
    init = float_state(model)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             momentum=args.momentum, weight_decay=args.weight_decay)
    start = time.perf_counter()
    states, stats = train_checkpoints(model, x.to(device), y.long().to(device), data.spec, settings,
                                      [args.epochs], seed=args.seed)
    seconds = time.perf_counter() - start
    acc, loss = evaluate(model, data.test_x.to(device), data.test_y.long().to(device),
                         make_batch_transform(data.spec, train=False))
    results.write_config(config.to_dict())
    paths = _save_states(results, model, {"init.safetensors": init, "model.safetensors": states[args.epochs]})
    record = {"seed": args.seed, "config": _config(args), "train_samples": len(x), "train_ce": stats[-1].ce_loss,
              "test_accuracy": acc, "test_loss": loss, "seconds": seconds}
    paths += write_record(config.out_dir, "train", record)
    print(f"{config.model} on {config.dataset} ({len(x)} images, {args.epochs} epochs, lr {args.lr:g}, "
          f"bs {args.batch_size}, wd {args.weight_decay:g}, bn-weight-init {args.bn_weight_init}): "
          f"test accuracy {acc:.4f}, loss {loss:.4f}, {seconds:.1f} s")
    _print_written(paths)
    return 0


def _algorithm_label(config: RunConfig) -> str:
    """The run's algorithm with the hyperparameter Table 1 tunes (and the sign term's weight), e.g.
    ``fedsign fedsign-gamma=0.01``."""
    entry = get_algorithm(config.strategy)
    keys = ([entry.tuning[0]] if entry.tuning else []) + (["sign-gamma"] if config.sign_gamma > 0 else [])
    return " ".join([config.strategy, *(f"{k}={getattr(config, k.replace('-', '_')):g}" for k in keys)])


def analysis_target(args: argparse.Namespace) -> tuple[torch.device, LoadedRun, EvalData, list[str]]:
    """What an analysis of one model needs: the device, the model (run folder or --model), its evaluation
    data and the names of the parameter group the noise goes on."""
    device = _device(args)
    run = load_target(args, args.run, device)
    return device, run, eval_data(run, args, device), select_parameters(run.model, args.group, args.clf)


def cmd_curves(args: argparse.Namespace) -> int:
    """Figs. 3, 5-7, 9: valleys along named directions for several scales."""
    device, run, data, names = analysis_target(args)
    rows = _direction_rows(args.directions)
    theta = {n: run.params[n] for n in names}
    directions = make_directions([d for row in rows for d in row], theta, args.seed, normalization=args.norm,
                                 filter_1d=args.filter_1d, theta0={n: run.init[n] for n in names})
    record = valley_curves(run.model, run.params, directions, data, scales=args.scales,
                           lambdas=lambda_grid(args.points), buffers=run.buffers, **_evaluation(args, device))
    record = {"seed": args.seed, "config": _config(args), "run": str(run.run_dir), "group": args.group,
              "parameters": names, "normalization": args.norm, **record}
    out = _out_dir(args, args.run)
    paths = write_record(out, args.name, record, curve_arrays(record))
    for metric in ("error", "loss"):
        paths.append(plots.plot_valleys(record, rows, out / f"{args.name}_{metric}.png", metric, _title(run, args)))
    print(f"{'direction':<22}" + "".join(f"  asym(s={s:g})" for s in args.scales) + "   err(λ=-1)  err(λ=+1)")
    for curve in record["curves"].values():
        per_scale = list(curve["scales"].values())
        asym = "".join(f"  {c['asymmetry']['error']['asymmetry']:+11.4f}" for c in per_scale)
        print(f"{curve['label']:<22}{asym}   {per_scale[-1]['error'][0]:9.4f}  {per_scale[-1]['error'][-1]:9.4f}")
    _print_timing(record["timing"])
    _print_written(paths)
    return 0


def _print_timing(t: dict) -> None:
    mode = "vmap" if t["vectorized"] else "loop"
    print(f"{t['points']} points in {t['seconds']:.1f} s: {t['points_per_second']:.2f} points/s "
          f"({mode}, chunk {t['chunk']})")


def cmd_ratio(args: argparse.Namespace) -> int:
    """Fig. 4: mean error over the positive / negative side against the sign-consistency ratio r."""
    device, run, data, names = analysis_target(args)
    record = ratio_sweep(run.model, run.params, names, data, ratios=args.ratios, scale=args.scale,
                         lambdas=lambda_grid(args.points), normalization=args.norm, filter_1d=args.filter_1d,
                         seed=args.seed, buffers=run.buffers, **_evaluation(args, device))
    record = {"seed": args.seed, "config": _config(args), "run": str(run.run_dir), "group": args.group, **record}
    out = _out_dir(args, args.run)
    paths = write_record(out, args.name, record, {k: np.asarray(v) for k, v in record["sweep"].items()})
    paths.append(plots.plot_ratio_sweep(record, out / f"{args.name}.png", _title(run, args)))
    sweep = record["sweep"]
    print("    r     SSR   err[0,1]  err[-1,0]   asym")
    for r, ssr, pos, neg in zip(sweep["ratios"], sweep["ssr"], sweep["error_pos_mean"], sweep["error_neg_mean"]):
        print(f"{r:5.2f}  {ssr:6.3f}  {pos:8.4f}  {neg:8.4f}  {neg - pos:+.4f}")
    _print_timing(record["timing"])
    _print_written(paths)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Fig. 8: interpolation of two models, per-group statistics and sign consistency with d."""
    device = _device(args)
    run1, run2 = load_target(args, args.run1, device), load_target(args, args.run2, device)
    for key in ("model", "dataset") if run1.config and run2.config else ():
        if getattr(run1.config, key) != getattr(run2.config, key):
            raise CLIError(f"the two runs differ in {key}: {getattr(run1.config, key)} vs {getattr(run2.config, key)}")
    if list(run1.params) != list(run2.params):
        raise CLIError("the two models have different parameters (e.g. one has a MOON head); cannot interpolate")
    data = eval_data(run1, args, device)
    record = interpolation(run1.model, run1.params, run2.params, data, groups=parameter_roles(run1.model, args.clf),
                           buffers1=run1.buffers, buffers2=run2.buffers,
                           lambdas=lambda_grid(args.points, -1.0, 2.0), **_evaluation(args, device))
    record = {"seed": args.seed, "config": _config(args), "runs": [str(args.run1), str(args.run2)], **record}
    out = _out_dir(args, args.run1)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_interpolation(record, out / f"{args.name}.png",
                                          title=f"θ1 = {args.run1}, θ2 = {args.run2}, BN {args.bn}"))
    lam = np.asarray(record["lambdas"])
    at = {v: record["error"][int(np.argmin(np.abs(lam - v)))] for v in (0.0, 0.5, 1.0)}
    print(f"error at λ=0 (θ1) {at[0.0]:.4f}, λ=0.5 {at[0.5]:.4f}, λ=1 (θ2) {at[1.0]:.4f}")
    ssr = record["ssr"]
    print(f"SSR(θ1, θ2) {ssr['theta1_theta2']['all']:.4f}, SSR(θ1, d) {ssr['theta1_d']['all']:.4f}, "
          f"SSR(θ2, d) {ssr['theta2_d']['all']:.4f}")
    _print_timing(record["timing"])
    _print_written(paths)
    return 0


def cmd_soups(args: argparse.Namespace) -> int:
    """Fig. 11: two models from one initialization on the two halves of the data, with checkpoints."""
    device = _device(args)
    config = _training_config(args, args.out, max(args.epochs))
    data = load_dataset(config.dataset, config.data_dir or None)
    model = build_variant_model(config.model, data.spec, args.bn_weight_init, seed=args.seed)
    if args.init:  # a given start (e.g. pre-trained) instead of the seeded initialization; checked before writing
        params, buffers = _run_state(model, Path(args.init))
        model.load_state_dict({**params, **buffers}, strict=False)
    results = RunResults.create(config.out_dir)
    results.write_config(config.to_dict())
    x, y = _subset(data.train_x, data.train_y, args.train_samples, args.seed)
    model.to(device)
    init = float_state(model)
    settings = TrainSettings(epochs=1, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                             weight_decay=args.weight_decay)
    checkpoints, start = {}, time.perf_counter()
    for k, half in enumerate(split_halves(len(x), args.seed)):
        model.load_state_dict(init, strict=False)
        checkpoints["AB"[k]], _ = train_checkpoints(model, x[half].to(device), y[half].long().to(device), data.spec,
                                                    settings, args.epochs, seed=derive_seed(args.seed, k + 1))
    seconds = time.perf_counter() - start
    paths = _save_states(results, model, {"init.safetensors": init, **{
        f"{side}-e{e}.safetensors": state for side, states in checkpoints.items() for e, state in states.items()}})
    recal = x if args.bn == "recalibrate" and has_batch_norm(model) else None
    evaluation = prepare_data(data.test_x, data.test_y, make_batch_transform(data.spec, train=False), recal,
                              test_samples=args.test_samples, recal_samples=args.recal_samples,
                              batch_size=args.eval_batch, seed=args.seed, device=device)
    record = soup_record(model, init, checkpoints["A"], checkpoints["B"], evaluation,
                         groups=parameter_roles(model, args.clf), lambdas=lambda_grid(args.points, 0.0, 1.0),
                         **_evaluation(args, device))
    start_model = f"weights file {args.init}" if args.init else f"seeded initialization (seed {args.seed})"
    record = {"seed": args.seed, "config": _config(args), "start": start_model, "train_seconds": seconds, **record}
    paths += write_record(config.out_dir, args.name, record)
    paths.append(plots.plot_soups(record, Path(config.out_dir) / f"{args.name}.png",
                                  f"{config.model} on {config.dataset}, two halves of {len(x)} images"))
    print("epoch  acc(A)  acc(B)  acc(soup)    gap   SSR-IA  SSR-IB  SSR-AB")
    for row in record["checkpoints"]:
        acc = row["accuracy"]
        soup = acc[int(np.argmin(np.abs(np.asarray(record["lambdas"]) - 0.5)))]
        print(f"{row['epoch']:5d}  {acc[0]:.4f}  {acc[-1]:.4f}  {soup:.4f}  {row['gap']:+.4f}  "
              f"{row['ssr_ia']['all']:.4f}  {row['ssr_ib']['all']:.4f}  {row['ssr_ab']['all']:.4f}")
    _print_timing(record["timing"])
    _print_written(paths)
    return 0


def cmd_digits_demo(args: argparse.Namespace) -> int:
    """Listing 2 / Fig. 29: softmax regression on digits under Gaussian and sign-consistent noise."""
    start = time.perf_counter()
    record, arrays = digits_demo(seed=args.seed, draws=args.draws, points=args.points)
    out = Path(args.out)
    paths = write_record(out, "digits_demo", record, {
        **arrays, "seed": np.asarray(args.seed), "metrics": np.asarray(DIGITS_METRICS)})
    paths.append(plots.plot_digits_demo(record, out / "digits_demo.png"))
    for noise, metrics in record["noises"].items():
        err = metrics["error"]
        print(f"{noise:<16} error at λ=-1 {err[0]:.4f}, λ=0 {err[len(err) // 2]:.4f}, λ=+1 {err[-1]:.4f}; "
              f"tr H at λ=-1 {metrics['trace_hessian'][0]:.2f}, λ=+1 {metrics['trace_hessian'][-1]:.2f}")
    print(f"{args.draws} noise draws in {time.perf_counter() - start:.1f} s")
    _print_written(paths)
    return 0


def _ssr_rows(run_dir: Path) -> list[dict]:
    """Per round of metrics.csv: the clients' mean SSR with the global model they received (``ssr_clients``)."""

    if not (run_dir / "metrics.csv").is_file():
        raise CLIError(f"{run_dir} has no metrics.csv: is it a finished FL run (fedsign run / simulate)?")
    try:
        rows = read_metrics(run_dir)
    except (OSError, ValueError, KeyError) as err:
        raise CLIError(f"{run_dir / 'metrics.csv'} cannot be read ({err})") from None
    return [{"round": r["round"], "ssr_clients": r.get("ssr_clients"), "accuracy": r.get("accuracy")}
            for r in rows if r.get("round") is not None]


def cmd_fl(args: argparse.Namespace) -> int:
    """The valleys of FL runs' global models side by side: 7 raw and 7 sign-consistent noises, the
    interpolation from the initial to the final global model, and the clients' per-round SSR."""
    device = _device(args)
    runs = [load_run(path, device) for path in args.runs]  # every run loads (and fails) before any work
    ssr = [_ssr_rows(run.run_dir) for run in runs]
    names = list(DIRECTION_SETS["common"]) + list(DIRECTION_SETS["common-sc"])
    record: dict = {"seed": args.seed, "config": _config(args), "runs": []}
    for run, rows in zip(runs, ssr):
        data = eval_data(run, args, device)
        params = select_parameters(run.model, args.group, args.clf)
        theta = {n: run.params[n] for n in params}
        saved = (run.run_dir / "init.safetensors").is_file()
        first = ("init.safetensors (saved initial global model)" if saved else
                 f"initial global model rebuilt from config.json (seed {run.config.seed})")
        dirs = make_directions(names, theta, args.seed, normalization=args.norm, filter_1d=args.filter_1d)
        valleys = valley_curves(run.model, run.params, dirs, data, scales=(args.scale,),
                                lambdas=lambda_grid(args.points), buffers=run.buffers, **_evaluation(args, device))
        interp = interpolation(run.model, run.init, run.params, data, groups=parameter_roles(run.model, args.clf),
                               lambdas=lambda_grid(args.interp_points, -0.5, 1.5), **_evaluation(args, device))
        record["runs"].append({
            "run": str(run.run_dir), "label": f"{_algorithm_label(run.config)}\n{run.config.model} on "
                                              f"{run.config.dataset} (seed {run.config.seed}, "
                                              f"{run.config.num_rounds} rounds)",
            "first_model": first, "group": args.group, "valleys": valleys, "interpolation": interp,
            "ssr_clients": rows})
    out = Path(args.out)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_fl_valleys(record, out / f"{args.name}.png"))
    print(f"{'run':<40} {'raw asym':>9} {'sc asym':>9} {'err θ0':>7} {'err θT':>7} {'SSR last':>8}  θ0")
    for r in record["runs"]:
        curves = r["valleys"]["curves"]
        key = f"{args.scale:g}"
        raw = np.mean([curves[n]["scales"][key]["asymmetry"]["error"]["asymmetry"] for n in DIRECTION_SETS["common"]])
        sc = np.mean([curves[n]["scales"][key]["asymmetry"]["error"]["asymmetry"] for n in DIRECTION_SETS["common-sc"]])
        lam = np.asarray(r["interpolation"]["lambdas"])
        err = r["interpolation"]["error"]
        last = next((row["ssr_clients"] for row in reversed(r["ssr_clients"]) if row["ssr_clients"] is not None),
                    float("nan"))
        print(f"{Path(r['run']).name[:40]:<40} {raw:+9.4f} {sc:+9.4f} {err[int(np.argmin(np.abs(lam)))]:7.4f} "
              f"{err[int(np.argmin(np.abs(lam - 1)))]:7.4f} {last:8.4f}  {r['first_model']}")
    _print_written(paths)
    return 0


def cmd_digits_pattern(args: argparse.Namespace) -> int:
    """Fig. 10: the digits softmax weight of one class as w + λ·sign(w)."""
    W, X, Y = digits_softmax()
    record = {"seed": args.seed, "config": _config(args), **weight_patterns(W, X, Y, args.cls, args.lambdas)}
    out = Path(args.out)
    paths = write_record(out, "digits_pattern", record)
    paths.append(plots.plot_weight_patterns(record, out / "digits_pattern.png"))
    for lam, corr in zip(record["lambdas"], record["correlation"]):
        print(f"λ={lam:+.2f}: correlation with the mean digit {args.cls} {corr:+.3f}")
    _print_written(paths)
    return 0


def cmd_relu_sim(args: argparse.Namespace) -> int:
    """Listing 1 / Fig. 27: the distribution of (w + λ sign(w))^T h."""
    sim = relu_simulation(seed=args.seed, samples=args.samples)
    record = {"seed": args.seed, "config": _config(args), **relu_summary(sim)}
    out = Path(args.out)
    paths = write_record(out, "relu_sim", record, sim)
    paths.append(plots.plot_relu_simulation(sim, out / "relu_sim.png"))
    for lam, mean, active in zip(record["lambdas"], record["mean"], record["active_fraction"]):
        print(f"λ={lam:+.1f}: mean {mean:+8.3f}, activated {active:.3f}")
    _print_written(paths)
    return 0


def _run_data_direction(args: argparse.Namespace):
    """The run, its evaluation data and ``args.direction`` over ``args.group`` (normalized)."""
    device, run, data, names = analysis_target(args)
    theta = {n: run.params[n] for n in names}
    direction = make_directions([args.direction], theta, args.seed, normalization=args.norm,
                                filter_1d=args.filter_1d, theta0={n: run.init[n] for n in names})[args.direction]
    return run, data, direction


def cmd_activations(args: argparse.Namespace) -> int:
    """Fig. 28: activation confusion matrices along a direction."""
    run, data, direction = _run_data_direction(args)
    record = activation_confusion(run.model, run.params, direction, data, args.lambdas, buffers=run.buffers,
                                  bn=args.bn, samples=args.samples)
    record = {"seed": args.seed, "config": _config(args), "run": str(run.run_dir), **record}
    out = _out_dir(args, args.run)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_activation_confusion(record, out / f"{args.name}.png", _title(run, args)))
    print("   λ   unchanged")
    for lam, diag in zip(record["lambdas"], record["diagonal"]):
        print(f"{lam:+5.2f}  {diag:.4f}")
    _print_written(paths)
    return 0


def cmd_hessian(args: argparse.Namespace) -> int:
    """Hutchinson trace of the CE Hessian (w.r.t. a parameter group) along a direction."""
    run, data, direction = _run_data_direction(args)
    record = trace_curve(run.model, run.params, direction, data, args.lambdas, buffers=run.buffers, bn=args.bn,
                         probes=args.probes, samples=args.samples, seed=args.seed)
    record = {"seed": args.seed, "config": _config(args), "run": str(run.run_dir), "group": args.group, **record}
    out = _out_dir(args, args.run)
    paths = write_record(out, args.name, record)
    paths.append(plots.plot_trace_curve(record, out / f"{args.name}.png", _title(run, args)))
    for lam, tr, err in zip(record["lambdas"], record["trace"], record["stderr"]):
        print(f"λ={lam:+5.2f}: tr H ≈ {tr:.4f} ± {err:.4f}")
    _print_written(paths)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Points per second of the vmap and loop evaluators on the same points, and their agreement."""
    device, run, data, names = analysis_target(args)
    theta = {n: run.params[n] for n in names}
    direction = make_directions([args.direction], theta, args.seed, normalization=args.norm,
                                filter_1d=args.filter_1d)[args.direction]
    line = [Line(run.params, direction, lambda_grid(args.points).tolist(), run.buffers)]
    modes = {"vmap": dict(vectorize=True), "loop": dict(vectorize=False)}
    if args.bf16:
        modes["vmap-bf16"] = dict(vectorize=True, bf16=True)
    results = {}
    for mode, options in modes.items():
        ev = evaluate_lines(run.model, line, data, bn=args.bn, chunk=args.chunk, **options)
        results[mode] = {"points_per_second": ev.points_per_second, "seconds": ev.seconds, "points": ev.points,
                         "vectorized": ev.vectorized, "error": ev.error[0].tolist(), "loss": ev.loss[0].tolist()}
    ref = results["loop"]
    for mode, r in results.items():
        r["max_abs_diff_error"] = float(np.max(np.abs(np.subtract(r["error"], ref["error"]))))
        r["max_abs_diff_loss"] = float(np.max(np.abs(np.subtract(r["loss"], ref["loss"]))))
        print(f"{mode:<10} {r['points_per_second']:8.2f} points/s  ({r['points']} points, {r['seconds']:.1f} s; "
              f"max |Δ| vs loop: error {r['max_abs_diff_error']:.2e}, loss {r['max_abs_diff_loss']:.2e})")
    record = {"seed": args.seed, "config": _config(args), "run": str(run.run_dir), "device": str(device),
              "threads": torch.get_num_threads(), "test_samples": len(data.x),
              "recal_samples": 0 if data.recal_x is None else len(data.recal_x), "modes": results}
    _print_written(write_record(_out_dir(args, args.run), args.name, record))
    return 0


# ------------------------------------------------------------------------------------------ parser
def _add_common(p: argparse.ArgumentParser, name: str, out_required: bool = False) -> None:
    p.add_argument("--out", required=out_required, default="",
                   help="output folder" + ("" if out_required else " (default: <run dir>/landscape)"))
    p.add_argument("--name", default=name, help=f"file name stem of the outputs (default {name})")
    p.add_argument("--seed", type=int, default=0, help="seed of noise draws and data subsets (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")


def _add_eval(p: argparse.ArgumentParser, group: str = "ALL") -> None:
    p.add_argument("--group", default=group,
                   help=f"parameters that get noise: {', '.join(GROUP_NAMES)} or a name regex (default {group})")
    p.add_argument("--clf", default="",
                   help="the classifier (CLF, and so FEAT): a module name or a parameter-name regex "
                        "(default: the last nn.Linear)")
    p.add_argument("--norm", default="ns", choices=NORMALIZATIONS,
                   help="ns: ||θ||·d/||d|| (default); filter: Filter-NS; none: raw")
    p.add_argument("--filter-1d", default="copy", choices=FILTER_1D,
                   help="Filter-NS on 1-D tensors: copy θ (default, Li et al.'s plot_surface.py), zero "
                        "(their ignore='biasbn'), element (sign(d)·|θ| per element)")
    p.add_argument("--bn", default="recalibrate", choices=BN_POLICIES, help="BN statistics at each point")
    p.add_argument("--test-samples", type=int, default=0, help="test images evaluated (0 = all)")
    p.add_argument("--recal-samples", type=int, default=2048, help="training images for BN recalibration")
    p.add_argument("--eval-batch", type=int, default=256, help="images per forward pass")
    p.add_argument("--chunk", type=int, default=8, help="points per vmapped call")
    p.add_argument("--mode", default="auto", choices=("auto", "vmap", "loop"),
                   help="vmap: points batched by torch.func.vmap; loop: point by point; auto (default): "
                        "vmap on a GPU, loop on a CPU (faster there; see the bench command)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast forward passes")


def _add_model_source(p: argparse.ArgumentParser, files: str = "run") -> None:
    """``--model package.module:callable`` (+ kwargs, weights, dataset) as an alternative to run folders."""
    p.add_argument("--model", default="", help="instead of a run directory: package.module:callable building the "
                                              "model, e.g. torchvision.models:resnet18")
    p.add_argument("--model-kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of --model (repeatable; values parsed as JSON), e.g. num_classes=10")
    if files == "run":
        p.add_argument("--weights", default="", help="with --model: a .safetensors or .pt weights file "
                                                     "(.pt read with torch.load(weights_only=True))")
    p.add_argument("--dataset", default="", help="with --model: the dataset to evaluate on (e.g. cifar10, mnist)")
    p.add_argument("--data-dir", default="", help="with --model: its ImageFolder / idx / tarball location")


def _add_training(p: argparse.ArgumentParser) -> None:

    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default="", help="dataset location (default: the dataset's default)")
    p.add_argument("--model", default="cnn", choices=MODEL_NAMES)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--bn-weight-init", default="ones", choices=BN_WEIGHT_INITS,
                   help="BN weight init: ones, uniform U(0,1), gaussian G(0,0.1)")
    p.add_argument("--train-samples", type=int, default=0, help="train on a seeded subset (0 = all)")


def add_landscape_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedsign landscape <command>`` to the ``fedsign`` parser's subcommands."""
    top = sub.add_parser("landscape", help="loss-landscape analyses (valleys, interpolation, soups, theory)",
                         description=__doc__.splitlines()[0])
    cmds = top.add_subparsers(dest="landscape_command", required=True)

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=_errors_as_cli(func))
        return p

    p = command("train", cmd_train, "train one model (BN-init / lr / bs / wd variant) into a run directory")
    _add_training(p)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")

    p = command("curves", cmd_curves, "valleys θf + λ·s·d along directions (Figs. 3, 5-7, 9)")
    p.add_argument("run", nargs="?", help="run directory or a .safetensors file in one (or use --model)")
    _add_model_source(p)
    p.add_argument("--directions", default="common,common-sc",
                   help=f"comma-separated names or sets ({', '.join(DIRECTION_SETS)}); default common,common-sc")
    p.add_argument("--scales", type=_floats, default=[0.2, 1.0, 2.0], help="scales s (default 0.2,1,2)")
    p.add_argument("--points", type=int, default=21, help="λ points in [-1, 1] (default 21)")
    _add_common(p, "valleys")
    _add_eval(p)

    p = command("ratio", cmd_ratio, "ratio-r sweep of sign-consistent elements (Fig. 4)")
    p.add_argument("run", nargs="?")
    _add_model_source(p)
    p.add_argument("--ratios", type=_floats, default=_floats("0:1:0.1"), help="ratios r (default 0:1:0.1)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--points", type=int, default=21)
    _add_common(p, "ratio")
    _add_eval(p)

    p = command("interpolate", cmd_interpolate, "(1-λ)θ1 + λθ2 with group statistics and SSR (Fig. 8)")
    p.add_argument("run1", help="run directory or model file; with --model a weights file")
    p.add_argument("run2")
    _add_model_source(p, files="positional")
    p.add_argument("--points", type=int, default=31, help="λ points in [-1, 2] (default 31)")
    _add_common(p, "interpolation")
    _add_eval(p)

    p = command("soups", cmd_soups, "model soups: two halves, one initialization, checkpoints (Fig. 11)")
    _add_training(p)
    p.add_argument("--epochs", type=_ints, default=[1, 2, 3, 5], help="checkpoint epochs (default 1,2,3,5)")
    p.add_argument("--init", default="", help="start both halves from this weights file (.safetensors / .pt), "
                                              "e.g. a model pre-trained elsewhere (default: the seeded init)")
    p.add_argument("--points", type=int, default=11, help="λ points in [0, 1] (default 11)")
    _add_common(p, "soups", out_required=True)
    _add_eval(p)

    p = command("fl", cmd_fl, "FL runs side by side: global-model valleys (7 raw + 7 sign-consistent noises), "
                              "initial-to-final interpolation, per-round client SSR")
    p.add_argument("runs", nargs="+", help="finished FL run directories (config.json, model.safetensors, metrics.csv)")
    p.add_argument("--scale", type=float, default=1.0, help="scale s of the valleys (default 1)")
    p.add_argument("--points", type=int, default=11, help="λ points in [-1, 1] (default 11)")
    p.add_argument("--interp-points", type=int, default=9, help="λ points in [-0.5, 1.5] (default 9)")
    _add_common(p, "fl_valleys", out_required=True)
    _add_eval(p)

    p = command("digits-demo", cmd_digits_demo, "Listing 2 / Fig. 29: softmax regression on sklearn digits")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=10, help="noise draws averaged (default 10)")
    p.add_argument("--points", type=int, default=21, help="λ points in [-1, 1] (default 21)")

    p = command("digits-pattern", cmd_digits_pattern, "Fig. 10: a digits softmax weight as w + λ·sign(w)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="recorded only: the fit is deterministic")
    p.add_argument("--cls", type=int, default=0, choices=range(10), help="the digit class (default 0)")
    p.add_argument("--lambdas", type=_floats, default=_floats("-1:1:0.5"), help="λ values (default -1:1:0.5)")

    p = command("relu-sim", cmd_relu_sim, "Listing 1 / Fig. 27: ReLU pre-activation simulation")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=10000)

    for name, func, help_text, group, lambdas, extra in (
            ("activations", cmd_activations, "activation confusion matrices along a direction (Fig. 28)",
             "ALL", "-1:1:0.2", ()),
            ("hessian", cmd_hessian, "Hutchinson Hessian trace along a direction", "CLF", "-1:1:0.5",
             (("--probes", 16, "Rademacher probes per point"),))):
        p = command(name, func, help_text)
        p.add_argument("run", nargs="?")
        _add_model_source(p)
        p.add_argument("--direction", default="sc-gauss", help="one direction name (default sc-gauss)")
        p.add_argument("--lambdas", type=_floats, default=_floats(lambdas), help=f"λ values (default {lambdas})")
        p.add_argument("--samples", type=int, default=256 if name == "activations" else 512,
                       help="evaluation images used")
        for flag, default, text in extra:
            p.add_argument(flag, type=int, default=default, help=text)
        _add_common(p, name)
        _add_eval(p, group)

    p = command("bench", cmd_bench, "points/second of vmap vs loop evaluation on the same points")
    p.add_argument("run", nargs="?")
    _add_model_source(p)
    p.add_argument("--direction", default="sc-gauss")
    p.add_argument("--points", type=int, default=16)
    _add_common(p, "bench")
    _add_eval(p)

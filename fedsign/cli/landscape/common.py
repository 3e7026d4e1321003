"""What the landscape commands share: loading a run or ``--model``, evaluation data, directions,
output folders and the common options."""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fedsign.cli.common import CLIError
from fedsign.config import ConfigError, RunConfig
from fedsign.data import DATASETS, DatasetSpec, load_dataset, make_batch_transform
from fedsign.landscape.directions import FILTER_1D, NORMALIZATIONS, make_directions
from fedsign.landscape.evaluate import BN_POLICIES, EvalData, has_batch_norm, prepare_data, split_state, subset_indices
from fedsign.landscape.groups import GROUP_NAMES, select_parameters
from fedsign.landscape.weights import WeightsError, fit_weights, load_weights
from fedsign.models import BN_WEIGHT_INITS, MODEL_NAMES
from fedsign.task import build_run_model
from fedsign.training import resolve_device

RUN_FILES = ("config.json", "model.safetensors")


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


def read_config(run_dir: Path) -> RunConfig:
    """The run's config.json, or a one-line CLIError for a broken one."""

    try:
        return RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CLIError(f"{run_dir / 'config.json'} is not valid JSON ({err}); restore it from the run") from None
    except (ConfigError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CLIError(f"{run_dir / 'config.json'} is not a valid run config ({first})") from None


def run_state(model: nn.Module, path: Path, built: str = "") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
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
    config = read_config(run_dir)
    model = build_run_model(config)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    built = f"{config.model} for {config.dataset} by {run_dir / 'config.json'}"
    if (run_dir / "init.safetensors").is_file():
        init, _ = run_state(model, run_dir / "init.safetensors", built)
    params, buffers = run_state(model, model_file, built)
    model.load_state_dict({**params, **buffers}, strict=False)
    place(model, device)
    data = load_dataset(config.dataset, config.data_dir or None)
    return LoadedRun(run_dir, f"{config.model} on {config.dataset} ({run_dir.name})", model,
                     to_device(params, device), to_device(buffers, device), to_device(init, device),
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
        params, buffers = run_state(model, Path(weights))
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
    place(model, device)
    name = Path(weights).name if weights else "its initialization"
    return LoadedRun(Path(weights).parent if weights else Path("."), f"{args.model} ({name}) on {args.dataset}",
                     model, to_device({n: t.detach() for n, t in params.items()}, device),
                     to_device({n: t.detach() for n, t in buffers.items()}, device), to_device(init, device),
                     spec, data.train_x, data.test_x, data.test_y)


def load_target(args: argparse.Namespace, path: str | None, device: torch.device) -> LoadedRun:
    """A run directory (or a model file in one), or with ``--model`` a weights file (``path`` or ``--weights``)."""
    if getattr(args, "model", ""):
        return load_callable(args, device, path or args.weights)
    if not path:
        raise CLIError("give a run directory, or --model package.module:callable with --weights and --dataset")
    return load_run(path, device)


def place(model: nn.Module, device: torch.device) -> None:
    """Move ``model`` to ``device``; on a CPU with its weights in channels_last, which ``evaluate_lines`` keeps
    for every point (convolutions ~1.1-1.6x faster there, the same values within float rounding)."""
    model.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.preserve_format)


def to_device(state: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {n: t.detach().to(device) for n, t in state.items()}


def eval_data(run: LoadedRun, args: argparse.Namespace, device: torch.device) -> EvalData:
    """The run's test split (and training images for BN recalibration where the model has BN)."""

    recal = run.train_x if args.bn == "recalibrate" and has_batch_norm(run.model) else None
    return prepare_data(run.test_x, run.test_y, make_batch_transform(run.spec, train=False), recal,
                        test_samples=args.test_samples, recal_samples=args.recal_samples,
                        batch_size=args.eval_batch, seed=args.seed, device=device)


def command_device(args: argparse.Namespace) -> torch.device:
    """The device (and, with ``--threads``, torch's intra-op thread count)."""

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except RuntimeError as err:
        raise CLIError(str(err)) from None


def output_folder(args: argparse.Namespace, run_path: str | Path | None) -> Path:
    """``--out``, else ``<run dir>/landscape`` (``<weights folder>/landscape`` with ``--model``);
    CLIError if it holds a ``<--name>.json`` or ``.npz`` that no ``fedsign landscape`` command wrote."""
    if args.out:
        out = Path(args.out)
    elif not run_path and not getattr(args, "weights", ""):
        raise CLIError("--model without a weights file: give --out")
    else:
        path = Path(run_path or args.weights)
        out = (path.parent if path.is_file() else path) / "landscape"
    name = getattr(args, "name", None)
    record, arrays = out / f"{name}.json", out / f"{name}.npz"
    if name and (not _ours(record) or arrays.exists() and not record.exists()):
        raise CLIError(f"{out} holds a {name}.json or {name}.npz that no fedsign landscape command wrote; "
                       "pick another --out or --name")
    return out


def _ours(record: Path) -> bool:
    """Whether ``record`` is absent or a record of a ``fedsign landscape`` command (its config says so)."""
    if record.is_symlink():
        return False
    if not record.exists():
        return True
    try:
        config = json.loads(record.read_text()).get("config")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
    return isinstance(config, dict) and config.get("command") == "landscape"


def floats(text: str) -> list[float]:
    """``0.2,1,2`` or ``start:stop:step`` (stop included)."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            return [round(v, 10) + 0.0 for v in np.arange(start, stop + step / 2, step)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.2,1,2 or 0:1:0.1, got {text!r}") from None


def ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2,5, got {text!r}") from None


def record_config(args: argparse.Namespace) -> dict:
    """The record's ``config``: the command's arguments (without the handler)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def evaluation_options(args: argparse.Namespace, device: torch.device) -> dict:
    """Evaluation options; ``--mode auto`` is vmap on a GPU and the loop on a CPU (where, for the
    small CNN on MNIST, the loop measured 2-3x more points per second than vmap)."""
    vectorize = args.mode == "vmap" or (args.mode == "auto" and device.type == "cuda")
    return {"bn": args.bn, "chunk": args.chunk, "vectorize": vectorize, "bf16": args.bf16}


def print_written(paths) -> None:
    print("wrote " + ", ".join(str(p) for p in paths))


def train_subset(x: Tensor, y: Tensor, limit: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random subset of ``limit`` examples (all when ``limit`` is 0 or too large)."""
    idx = subset_indices(len(x), limit, torch.Generator().manual_seed(seed))
    return x[idx], y[idx]


def title(run: LoadedRun, args: argparse.Namespace) -> str:
    bn = f"BN {args.bn}" if has_batch_norm(run.model) else "no BN"
    return f"{run.label}, group {args.group}, {args.norm.upper()} noise, {bn}"


def training_config(args: argparse.Namespace, out_dir: str, epochs: int) -> RunConfig:
    """The RunConfig written to a landscape training directory (so it loads like a platform run)."""
    return RunConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, num_clients=1,
                     clients_per_round=1, num_rounds=1, local_epochs=epochs, batch_size=args.batch_size,
                     lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                     out_dir=out_dir, device=args.device).validate().resolved()


def save_states(results, model: nn.Module, states: dict[str, dict[str, Tensor]]) -> list[Path]:
    """Save each ``{file name: state}`` through the run's results writer."""
    paths = []
    for name, state in states.items():
        model.load_state_dict(state, strict=False)
        paths.append(results.save_model(model, name))
    return paths


def analysis_target(args: argparse.Namespace) -> tuple[torch.device, LoadedRun, EvalData, list[str]]:
    """What an analysis of one model needs: the device, the model (run folder or --model), its evaluation
    data and the names of the parameter group the noise goes on."""
    device = command_device(args)
    run = load_target(args, args.run, device)
    return device, run, eval_data(run, args, device), select_parameters(run.model, args.group, args.clf)


def print_timing(t: dict) -> None:
    mode = "vmap" if t["vectorized"] else "loop"
    print(f"{t['points']} points in {t['seconds']:.1f} s: {t['points_per_second']:.2f} points/s "
          f"({mode}, chunk {t['chunk']})")


def add_common(p: argparse.ArgumentParser, name: str, out_required: bool = False) -> None:
    p.add_argument("--out", required=out_required, default="",
                   help="output folder" + ("" if out_required else " (default: <run dir>/landscape)"))
    p.add_argument("--name", default=name, help=f"file name stem of the outputs (default {name})")
    p.add_argument("--seed", type=int, default=0, help="seed of noise draws and data subsets (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")


def add_eval(p: argparse.ArgumentParser, group: str = "ALL") -> None:
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


def add_model_source(p: argparse.ArgumentParser, files: str = "run") -> None:
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


def add_training(p: argparse.ArgumentParser) -> None:

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


def directions(run: LoadedRun, names: list[str], group: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """The named directions over the parameters ``group`` of ``run`` (θ its trained values, θ0 its
    initialization, so ``init`` works everywhere), normalized as ``--norm`` / ``--filter-1d`` say."""
    return make_directions(names, {n: run.params[n] for n in group}, args.seed, normalization=args.norm,
                           filter_1d=args.filter_1d, theta0={n: run.init[n] for n in group})


def run_data_direction(args: argparse.Namespace):
    """The run, its evaluation data and ``args.direction`` over ``args.group`` (normalized)."""
    _, run, data, names = analysis_target(args)
    return run, data, directions(run, [args.direction], names, args)[args.direction]


def add_direction_analysis(p: argparse.ArgumentParser, name: str, *, group: str, lambdas: str, samples: int) -> None:
    """The options of an analysis along one direction (activations, hessian)."""
    p.add_argument("run", nargs="?")
    add_model_source(p)
    p.add_argument("--direction", default="sc-gauss", help="one direction name (default sc-gauss)")
    p.add_argument("--lambdas", type=floats, default=floats(lambdas), help=f"λ values (default {lambdas})")
    p.add_argument("--samples", type=int, default=samples, help="evaluation images used")
    add_common(p, name)
    add_eval(p, group)

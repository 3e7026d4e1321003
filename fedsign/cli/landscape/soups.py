"""fedsign landscape soups: model soups: two halves, one initialization, checkpoints (Fig. 11)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fedsign.cli.landscape.common import (add_common, add_eval, add_training, command_device, evaluation_options, ints,
                                          print_timing, print_written, record_config, run_state, save_states,
                                          train_subset, training_config)
from fedsign.data import load_dataset, make_batch_transform
from fedsign.landscape import plots
from fedsign.landscape.curves import lambda_grid
from fedsign.landscape.evaluate import has_batch_norm, prepare_data
from fedsign.landscape.groups import parameter_roles
from fedsign.landscape.records import write_record
from fedsign.landscape.soups import soup_record, split_halves
from fedsign.landscape.variants import build_variant_model, train_checkpoints
from fedsign.models import float_state
from fedsign.results import RunResults
from fedsign.training import TrainSettings, derive_seed

HELP = 'model soups: two halves, one initialization, checkpoints (Fig. 11)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_training(p)
    p.add_argument("--epochs", type=ints, default=[1, 2, 3, 5], help="checkpoint epochs (default 1,2,3,5)")
    p.add_argument("--init", default="", help="start both halves from this weights file (.safetensors / .pt), "
                                              "e.g. a model pre-trained elsewhere (default: the seeded init)")
    p.add_argument("--points", type=int, default=11, help="λ points in [0, 1] (default 11)")
    add_common(p, "soups", out_required=True)
    add_eval(p)


def run(args: argparse.Namespace) -> int:
    """Fig. 11: two models from one initialization on the two halves of the data, with checkpoints."""
    device = command_device(args)
    config = training_config(args, args.out, max(args.epochs))
    data = load_dataset(config.dataset, config.data_dir or None)
    model = build_variant_model(config.model, data.spec, args.bn_weight_init, seed=args.seed)
    if args.init:  # a given start (e.g. pre-trained) instead of the seeded initialization; checked before writing
        params, buffers = run_state(model, Path(args.init))
        model.load_state_dict({**params, **buffers}, strict=False)
    results = RunResults.create(config.out_dir)
    results.write_config(config.to_dict())
    x, y = train_subset(data.train_x, data.train_y, args.train_samples, args.seed)
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
    paths = save_states(results, model, {"init.safetensors": init, **{
        f"{side}-e{e}.safetensors": state for side, states in checkpoints.items() for e, state in states.items()}})
    recal = x if args.bn == "recalibrate" and has_batch_norm(model) else None
    evaluation = prepare_data(data.test_x, data.test_y, make_batch_transform(data.spec, train=False), recal,
                              test_samples=args.test_samples, recal_samples=args.recal_samples,
                              batch_size=args.eval_batch, seed=args.seed, device=device)
    record = soup_record(model, init, checkpoints["A"], checkpoints["B"], evaluation,
                         groups=parameter_roles(model, args.clf), lambdas=lambda_grid(args.points, 0.0, 1.0),
                         **evaluation_options(args, device))
    start_model = f"weights file {args.init}" if args.init else f"seeded initialization (seed {args.seed})"
    record = {"seed": args.seed, "config": record_config(args), "start": start_model, "train_seconds": seconds, **record}
    paths += write_record(config.out_dir, args.name, record)
    paths.append(plots.plot_soups(record, Path(config.out_dir) / f"{args.name}.png",
                                  f"{config.model} on {config.dataset}, two halves of {len(x)} images"))
    print("epoch  acc(A)  acc(B)  acc(soup)    gap   SSR-IA  SSR-IB  SSR-AB")
    for row in record["checkpoints"]:
        acc = row["accuracy"]
        soup = acc[int(np.argmin(np.abs(np.asarray(record["lambdas"]) - 0.5)))]
        print(f"{row['epoch']:5d}  {acc[0]:.4f}  {acc[-1]:.4f}  {soup:.4f}  {row['gap']:+.4f}  "
              f"{row['ssr_ia']['all']:.4f}  {row['ssr_ib']['all']:.4f}  {row['ssr_ab']['all']:.4f}")
    print_timing(record["timing"])
    print_written(paths)
    return 0

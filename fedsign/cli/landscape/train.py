"""fedsign landscape train: train one model (BN-init / lr / bs / wd variant) into a run directory."""

from __future__ import annotations

import argparse
import time

from fedsign.cli.landscape.common import (add_training, command_device, record_config, print_written, save_states,
                                          train_subset, training_config)
from fedsign.data import load_dataset, make_batch_transform
from fedsign.landscape.records import write_record
from fedsign.landscape.variants import build_variant_model, train_checkpoints
from fedsign.models import float_state
from fedsign.results import RunResults
from fedsign.training import TrainSettings, evaluate

HELP = 'train one model (BN-init / lr / bs / wd variant) into a run directory'


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_training(p)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")


def run(args: argparse.Namespace) -> int:
    """Train one model (a §4.2 variant) through train_local and save it as a run directory."""
    device = command_device(args)
    config = training_config(args, args.out, args.epochs)
    results = RunResults.create(config.out_dir)
    data = load_dataset(config.dataset, config.data_dir or None)
    x, y = train_subset(data.train_x, data.train_y, args.train_samples, args.seed)
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
    paths = save_states(results, model, {"init.safetensors": init, "model.safetensors": states[args.epochs]})
    record = {"seed": args.seed, "config": record_config(args), "train_samples": len(x), "train_ce": stats[-1].ce_loss,
              "test_accuracy": acc, "test_loss": loss, "seconds": seconds}
    paths += write_record(config.out_dir, "train", record)
    print(f"{config.model} on {config.dataset} ({len(x)} images, {args.epochs} epochs, lr {args.lr:g}, "
          f"bs {args.batch_size}, wd {args.weight_decay:g}, bn-weight-init {args.bn_weight_init}): "
          f"test accuracy {acc:.4f}, loss {loss:.4f}, {seconds:.1f} s")
    print_written(paths)
    return 0

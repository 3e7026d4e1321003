"""Per-round wall time of the engines against the raw compute of the same local steps.

For each client count it runs the same config four ways and prints one table:

- ``raw``: the same clients' ``train_local`` calls in a plain loop (one model object, no
  Flower messages, no array conversions, no evaluation) — the compute floor;
- ``inprocess``: ``fedsign run`` (Flower Messages through the in-process Grid);
- ``vectorized``: ``fedsign run`` with ``engine='vectorized'`` (a round's clients at once);
- ``ray``: ``fedsign simulate`` (``flwr run`` on the Ray simulation engine).

``--only mnist``: the MNIST configuration of issue #12 (``cnn``, 20 clients, 10 per round, 1 local
epoch, batch 32): per-round seconds of the sequential (``inprocess``) and ``vectorized`` engines, and
each engine's framework overhead (everything but forward, backward and the SGD step) as a fraction of
its round: round seconds minus the time inside the round's ``train_local`` calls (sequential) or its
``train_clients`` call (vectorized), over round seconds (medians over the rounds after the first,
without the evaluated last one).
Writes ``speed_mnist.csv`` / ``speed_mnist.md``. ``--only cpu-converged`` / ``--only cpu-full``: the same
figures for that Table-1 preset's cell round (α 0.5, seed 0) with FedAvg, FedSign, MOON and FedDyn
(``speed_cpu_converged.*`` / ``speed_cpu_full.*``), and a last row ``fedavg, plain loop``: FedAvg's
arithmetic in a plain loop without the platform (``plain_fedavg``), the floor of the overhead.

Then landscape points per second: one valley line (NS-normalized G(0,1) noise on ALL
parameters, ``--points`` coefficients) on the dataset's test split, evaluated by
``fedsign.landscape.evaluate_lines`` vmapped in chunks, point by point, and point by point with the
model in channels_last, for the ``cnn`` (no BN) and ``resnet20`` (BN statistics recalibrated on 512
training images at every point).

Overhead per round = engine round seconds (server-side, from metrics.csv, evaluation
excluded by eval-every > rounds except the last) − raw seconds per round. Peak RSS is
that of this process for raw/inprocess and the sampled sum over the Flower and Ray
processes for ray. Results go to ``benchmarks/results/speed.csv`` and ``speed.md``, and
``speed_landscape.csv`` / ``speed_landscape.md``.

    python benchmarks/speed.py                      # 10 and 100 clients, 3 rounds each, landscape
    python benchmarks/speed.py --clients 10 --rounds 5 --skip-ray
    python benchmarks/speed.py --only landscape
    python benchmarks/speed.py --only mnist --data-dir ../shared/data/mnist --rounds 4
    python benchmarks/speed.py --only cpu-converged --rounds 12
    python benchmarks/speed.py --only cpu-full --rounds 8
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsign.config import RunConfig, merge_overrides  # noqa: E402
from fedsign.data import DATASETS, make_batch_transform  # noqa: E402
from fedsign.engines import run_inprocess  # noqa: E402
from fedsign.landscape import (Line, evaluate_lines, lambda_grid, make_directions, model_state,  # noqa: E402
                               prepare_data)
from fedsign.results import read_metrics  # noqa: E402
from fedsign.data import loaded_dataset  # noqa: E402
from fedsign.models import float_state  # noqa: E402
from fedsign.task import build_run_model, client_data, load_tensors  # noqa: E402
from fedsign.client_app import train_settings  # noqa: E402
from fedsign.training import derive_seed, resolve_device, train_local  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def base_overrides(num_clients: int, rounds: int, extra: str) -> str:
    return (f"strategy='fedavg' dataset='digits' num-clients={num_clients} clients-per-round={num_clients} "
            f"num-rounds={rounds} local-epochs=1 partition-style='per-client' min-partition-size=5 "
            f"eval-every={rounds} seed=0 {extra}")


def print_row(row: dict) -> None:
    """One result row on stdout, floats to 3 decimals, as it is measured."""
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)


def raw_round_seconds(config: RunConfig) -> float:
    """Median seconds per round (first round excluded) of the clients' local steps in a plain loop."""
    device = resolve_device(config.device)
    model = build_run_model(config).to(device)
    start_arrays = float_state(model)
    transform = make_batch_transform(DATASETS[config.dataset], train=True)
    settings = train_settings(config)
    data = [client_data(config, pid, device) for pid in range(config.num_clients)]
    times = []
    for server_round in range(1, config.num_rounds + 1):
        start = time.perf_counter()
        for pid, (x, y) in enumerate(data):
            load_tensors(model, start_arrays)
            train_local(model, x, y, settings, seed=derive_seed(config.seed, server_round, pid), transform=transform)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:] or times)


def plain_fedavg(config: RunConfig) -> tuple[dict, dict[str, torch.Tensor]]:
    """Unweighted FedAvg without the platform: per round the clients the server's seeded sampling picks, each
    a ``train_local`` call in a plain loop after loading the global model, its client data and seed, and a copy
    of the trained model after it; then the mean (the stack the platform's mean needs). No messages, screening,
    state, metrics or threads: its overhead is the floor for this arithmetic. Returns the row (the keys of
    ``overhead_rows``' rows) and the final global model, which is the platform's (``weighted=false``) bit for bit."""
    device = resolve_device(config.device)
    model = build_run_model(config).to(device)
    arrays = float_state(model)
    transform = make_batch_transform(DATASETS[config.dataset], train=True)
    settings = train_settings(config)
    sampler = random.Random(config.seed)
    rounds, train, images = [], [], 0
    for server_round in range(1, config.num_rounds + 1):
        start, training, replies = time.perf_counter(), 0.0, []
        for pid in sorted(sampler.sample(range(config.num_clients), config.clients_per_round)):  # the mean's order
            load_tensors(model, arrays)
            x, y = client_data(config, pid, device)
            t0 = time.perf_counter()
            train_local(model, x, y, settings, seed=derive_seed(config.seed, server_round, pid), transform=transform)
            training += time.perf_counter() - t0
            images += len(x) * settings.epochs
            replies.append(float_state(model))
        arrays = {k: torch.stack([r[k] for r in replies]).mean(0) for k in arrays}
        rounds.append(time.perf_counter() - start)
        train.append(training)
    measured = range(1, len(rounds)) if len(rounds) > 1 else range(len(rounds))
    round_s = statistics.median(rounds[i] for i in measured)
    overhead = statistics.median(rounds[i] - train[i] for i in measured)
    return {"engine": "fedavg, plain loop", "round_s": round_s,
            "train_s": statistics.median(train[i] for i in measured), "overhead_s": overhead,
            "overhead_fraction": overhead / round_s, "train_images_per_s": images / sum(train),
            "eval_images_per_s": None}, arrays


def engine_round_seconds(out_dir: Path) -> float:
    """Median server-side seconds of the rounds after the first, without the evaluated last round."""
    rows = read_metrics(out_dir)
    seconds = [r["seconds"] for r in rows if r.get("accuracy") is None][1:] or [rows[-1]["seconds"]]
    return statistics.median(seconds)


def flower_rss_mb() -> float:
    """Sum of the resident memory of Ray and Flower processes, in MB."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if not any(tag in cmdline for tag in (b"ray", b"flower", b"flwr")):
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run_ray(overrides: str, out_dir: Path) -> tuple[float, float, float]:
    """(median round seconds, total wall seconds, peak sampled RSS MB) of one `fedsign simulate`."""
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], flower_rss_mb())
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedsign.cli", "simulate", "--run-config",
                           f"{overrides} out-dir='{out_dir}'"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"fedsign simulate failed:\n{proc.stderr[-3000:]}")
    return engine_round_seconds(out_dir), wall, peak[0]


def landscape_rows(config: RunConfig, points: int, chunk: int) -> list[dict]:
    """Points per second of one valley line, vmapped, point by point and point by point in channels_last
    (each after a 2-point warm-up), for a model without and with BN."""
    device = resolve_device(config.device)
    data = loaded_dataset(config.dataset, config.data_dir)
    rows = []
    for model_name, bn in (("cnn", "stale"), ("resnet20", "recalibrate")):
        model = build_run_model(config.replace(model=model_name)).to(device)
        params, buffers = model_state(model)
        recal = data.train_x if bn == "recalibrate" else None
        eval_data = prepare_data(data.test_x, data.test_y, make_batch_transform(DATASETS[config.dataset], train=False),
                                 recal, recal_samples=512, seed=config.seed, device=device)
        direction = make_directions(["gauss"], params, config.seed)["gauss"]
        line = [Line(params, direction, lambda_grid(points).tolist(), buffers)]
        for mode, vectorize in (("vmap", True), ("loop", False), ("loop, channels_last", False)):
            model = model.to(memory_format=torch.channels_last if mode.endswith("channels_last") else
                             torch.contiguous_format)
            warm_up = [Line(params, direction, [0.0, 0.5], buffers)]
            evaluate_lines(model, warm_up, eval_data, bn=bn, chunk=chunk, vectorize=vectorize)
            ev = evaluate_lines(model, line, eval_data, bn=bn, chunk=chunk, vectorize=vectorize)
            rows.append({"model": model_name, "bn": bn, "mode": mode, "points": ev.points,
                         "test_samples": len(eval_data.x), "seconds": ev.seconds,
                         "points_per_s": ev.points_per_second, "vectorized": ev.vectorized})
            print_row(rows[-1])
    return rows


def write_table(rows: list[dict], out: Path, header: str, cells, note: str) -> None:
    """``rows`` as ``out``.csv and a markdown table (``cells(row)`` gives a row's cells) in ``out``.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns] + ["| " + " | ".join(cells(r)) + " |" for r in rows]
    table = "\n".join(lines) + note
    out.with_suffix(".md").write_text(table)
    print(table)


def engine_rows(args: argparse.Namespace) -> list[dict]:
    """One row per (client count, engine): seconds per round, overhead, clients/s, wall, peak RSS."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.clients:
            overrides = base_overrides(n, args.rounds, args.extra)
            config = RunConfig.from_overrides(f"{overrides} out-dir='{tmp}/raw{n}'").resolved()
            raw = raw_round_seconds(config)
            rows.append({"clients": n, "engine": "raw", "round_s": raw, "overhead_s": 0.0,
                         "clients_per_s": n / raw, "wall_s": None,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            for engine in ("inprocess", "vectorized"):
                run_config = config.replace(engine=engine, out_dir=f"{tmp}/{engine}{n}")
                start = time.perf_counter()
                run_inprocess(run_config, progress=False)
                seconds = engine_round_seconds(Path(run_config.out_dir))
                rows.append({"clients": n, "engine": engine, "round_s": seconds, "overhead_s": seconds - raw,
                             "clients_per_s": n / seconds, "wall_s": time.perf_counter() - start,
                             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            if not args.skip_ray:
                ray, wall, rss = run_ray(overrides, Path(tmp) / f"ray{n}")
                rows.append({"clients": n, "engine": "ray", "round_s": ray, "overhead_s": ray - raw,
                             "clients_per_s": n / ray, "wall_s": wall, "peak_rss_mb": rss})
            for row in rows[-4 if not args.skip_ray else -3:]:
                print_row(row)
    return rows


def overhead_rows(overrides: str, runs: list[tuple[str, str]]) -> list[dict]:
    """Per-round seconds of each ``(label, extra overrides)`` run and its framework overhead.

    Training time is measured inside the run: every ``train_local`` call (sequential: one per
    client) or ``train_clients`` call (vectorized: one per round) is timed, and a round's share
    is its clients' calls; the overhead is the rest of the round (everything but forward, backward
    and the SGD step: messages, state, aggregation, sign tracking, term_grad_ratio's extra step)."""
    import fedsign.client_app
    import fedsign.engines.vectorized
    import fedsign.server
    from fedsign.engines import choose_engine

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in runs:
            config = RunConfig.from_overrides(f"{overrides} {extra} out-dir='{tmp}/{label}'").resolved()
            config = config.replace(engine=choose_engine(config))
            vectorized = config.engine == "vectorized"
            module, name = (fedsign.engines.vectorized, "train_clients") if vectorized else \
                (fedsign.client_app, "train_local")
            calls_per_round = 1 if vectorized else config.clients_per_round
            durations: list[float] = []
            images = {"train": 0, "eval": 0, "eval_s": 0.0}
            original, original_evaluate = getattr(module, name), fedsign.server.evaluate

            def timed(*a, _original=original, **kw):
                if not vectorized:  # train_local(model, images, ...): epochs x partition images
                    images["train"] += len(a[1]) * a[3].epochs
                t0 = time.perf_counter()
                try:
                    return _original(*a, **kw)
                finally:
                    durations.append(time.perf_counter() - t0)

            def timed_evaluate(model, x, *a, **kw):
                t0 = time.perf_counter()
                try:
                    return original_evaluate(model, x, *a, **kw)
                finally:
                    images["eval"] += len(x)
                    images["eval_s"] += time.perf_counter() - t0

            setattr(module, name, timed)
            fedsign.server.evaluate = timed_evaluate
            try:
                run_inprocess(config, progress=False)
            finally:
                setattr(module, name, original)
                fedsign.server.evaluate = original_evaluate
            history = read_metrics(Path(config.out_dir))
            train = [sum(durations[i:i + calls_per_round]) for i in range(0, len(durations), calls_per_round)]
            measured = range(1, len(history) - 1) if len(history) > 2 else range(len(history))  # not 1st, not eval
            round_s = statistics.median(history[i]["seconds"] for i in measured)
            train_s = statistics.median(train[i] for i in measured)
            overhead = statistics.median(history[i]["seconds"] - train[i] for i in measured)
            rows.append({"engine": label, "round_s": round_s, "train_s": train_s, "overhead_s": overhead,
                         "overhead_fraction": overhead / round_s,
                         "train_images_per_s": images["train"] / sum(durations) if images["train"] else None,
                         "eval_images_per_s": images["eval"] / images["eval_s"] if images["eval_s"] else None})
            print_row(rows[-1])
    return rows


def mnist_rows(args: argparse.Namespace) -> list[dict]:
    """Sequential and vectorized engine on MNIST (cnn, 20 clients, 10 per round): s/round and overhead."""
    overrides = (f"strategy='fedavg' dataset='mnist' data-dir='{args.data_dir}' model='cnn' num-clients=20 "
                 f"clients-per-round=10 num-rounds={args.rounds} local-epochs=1 eval-every={args.rounds} "
                 f"seed=0 {args.extra}")
    return overhead_rows(overrides, [("inprocess", "engine='inprocess'"), ("vectorized", "engine='vectorized'")])


def preset_rows(args: argparse.Namespace) -> tuple[list[dict], str]:
    """A Table-1 ``args.only`` preset cell's round (Fashion-MNIST, alpha 0.5) for each method, in-process engine;
    and the settings it ran (``--extra`` included) in words."""
    from table1_sweep.grid import PRESETS

    overrides = merge_overrides(PRESETS[args.only].common, "dataset='fmnist' dirichlet-alpha=0.5 seed=0 "
                                f"num-rounds={args.rounds} eval-every={args.rounds}", args.extra)
    c = RunConfig.from_overrides(overrides, validate=False)
    samples = f"{c.train_samples:,} samples" if c.train_samples else "the whole training split"
    note = (f"Table-1 preset {args.only} (Fashion-MNIST {samples}, {c.model}, {c.num_clients} "
            f"clients, {c.clients_per_round} per round, E = {c.local_epochs}, B = {c.batch_size}), "
            f"alpha {c.dirichlet_alpha:g}, in-process engine")
    methods = ("fedavg", "fedsign", "moon", "feddyn")
    rows = overhead_rows(overrides, [(name, f"strategy='{name}'") for name in methods])
    rows.append(plain_fedavg(RunConfig.from_overrides(f"{overrides} strategy='fedavg'").resolved())[0])
    print_row(rows[-1])
    return rows, note


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (>= 4 for --only mnist)")
    parser.add_argument("--extra", default="", help="more run-config overrides (e.g. \"device='cuda'\")")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--only", choices=("engines", "landscape", "mnist", "cpu-converged", "cpu-full"),
                        help="run one part")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist"), help="MNIST (--only mnist)")
    parser.add_argument("--points", type=int, default=21, help="landscape points on the line (default 21)")
    parser.add_argument("--chunk", type=int, default=8, help="landscape points per vmapped call (default 8)")
    parser.add_argument("--out", default=str(RESULTS / "speed"))
    args = parser.parse_args()

    config = RunConfig.from_overrides(base_overrides(args.clients[0], args.rounds, args.extra)).resolved()
    device = resolve_device(config.device)
    machine = f"Machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, device {device}, " \
              f"torch {torch.__version__}"
    out = Path(args.out)
    if args.only in ("cpu-converged", "cpu-full", "mnist"):
        if args.only == "mnist":
            rows, first = mnist_rows(args), "engine"
            note = "MNIST, cnn, 20 clients, 10 per round, 1 local epoch, batch 32"
        else:
            (rows, note), first = preset_rows(args), "method"
        write_table(rows, out.with_name(f"{out.name}_{args.only.replace('-', '_')}"),
                    f"| {first} | s/round | raw training s/round | overhead s/round | overhead / round "
                    "| training images/s | evaluation images/s |",
                    lambda r: [r["engine"], f"{r['round_s']:.3f}", f"{r['train_s']:.3f}", f"{r['overhead_s']:.3f}",
                               f"{100 * r['overhead_fraction']:.1f} %", _rate(r["train_images_per_s"]),
                               _rate(r["eval_images_per_s"])],
                    f"\n\n{machine}; {note}, {args.rounds} rounds (median of rounds 2.. without the evaluated "
                    "last one). Training images/s: images through forward + backward + step inside train_local "
                    "(sequential engine); evaluation images/s: images through the server's test/validation "
                    "evaluation (forward only).\n")
        return
    if args.only != "landscape":
        rows = engine_rows(args)
        write_table(rows, out, "| clients | engine | s/round | overhead s/round | clients/s | wall s | peak RSS MB |",
                    lambda r: [str(r["clients"]), r["engine"], f"{r['round_s']:.3f}", f"{r['overhead_s']:.3f}",
                               f"{r['clients_per_s']:.1f}", "" if r["wall_s"] is None else f"{r['wall_s']:.1f}",
                               f"{r['peak_rss_mb']:.0f}"],
                    f"\n\n{machine}; digits, cnn, local-epochs=1, batch 32, all clients every round, "
                    f"{args.rounds} rounds.\n")
    if args.only != "engines":
        rows = landscape_rows(config, args.points, args.chunk)
        write_table(rows, out.with_name(out.name + "_landscape"),
                    "| model | BN policy | mode | points | test images | seconds | points/s |",
                    lambda r: [r["model"], r["bn"], r["mode"] + ("" if r["vectorized"] or
                                                                 r["mode"].startswith("loop") else
                                                                 " (fell back to loop)"),
                               str(r["points"]), str(r["test_samples"]), f"{r['seconds']:.2f}",
                               f"{r['points_per_s']:.1f}"],
                    f"\n\n{machine}; {config.dataset} test split, one line of {args.points} points "
                    f"(NS-normalized G(0,1) noise on ALL parameters), chunk {args.chunk}; resnet20 "
                    f"recalibrates BN on 512 training images at every point.\n")


if __name__ == "__main__":
    main()

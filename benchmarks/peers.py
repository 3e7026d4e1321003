"""FedAvg side by side with FL-bench's FedAvg on one MNIST configuration, back to back on this machine.

The configuration (issue #21): real MNIST, 20 clients, Dirichlet(0.5) label partition, 10 clients per
round, 1 local epoch, batch 64, SGD lr 0.01 without momentum or weight decay, 20 rounds, the server's
test evaluation every round, seed 42; FL-bench's ``avgcnn`` in its serial mode against our ``cnn``.

FL-bench (https://github.com/KarhouTam/FL-bench) is run from a scratch checkout (``--flbench``) with
its own CLI (``main.py`` + Hydra overrides) in a subprocess; it is never copied into this project. Its
``generate_data.py`` pools MNIST's 60k training and 10k test images and splits every client's share
25 % test / 75 % train, so its own test split overlaps the official test set's images and its clients
train on 52.5k images. Two FL-bench data layouts are therefore run:

- ``official``: FL-bench trained on exactly our clients' data (our Dirichlet partition of the 60k
  official training images, written as its ``partition.pkl``); its centralized server test is then the
  union of the clients' test lists = the official 10k test images, the set our server tests on.
- ``own``: FL-bench's ``generate_data.py -d mnist -a 0.5 -cn 20 --seed 42`` as its README runs it;
  accuracy on its own test split (the union of the clients' 25 % test splits, 17.5k pooled images).

Both sides run in a subprocess with the same torch thread count (``OMP_NUM_THREADS`` and
``torch.set_num_threads``, each side prints what torch then uses). Seconds per round: ours = the mean of
metrics.csv ``seconds`` (training + the test evaluation, server side); FL-bench = its logged total
running time of the round loop / rounds (training + its server test; whole seconds), beside its logged
average time per round of training alone (its server test excluded). FL-bench's client-side evaluation
is switched off (``common.client_side_evaluation=false``) so it does the same work as ours per round.

    python benchmarks/peers.py --flbench /work/peers/FL-bench --pythonpath /work/peers/site \\
        --flbench-commit 06e658bca5af6ce732e25bb7c0f8be321e14a85e
    python benchmarks/peers.py ... --dry-run        # 2 rounds each, results under /tmp, nothing committed

Writes ``benchmarks/results/speed_peers.md`` / ``.csv`` (``--out``) with the exact commands.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsign.config import ConfigError, RunConfig, merge_overrides  # noqa: E402
from fedsign.results import read_metrics  # noqa: E402
from fedsign.task import run_partitions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
NUM_CLIENTS, CLIENTS_PER_ROUND, ALPHA, SEED = 20, 10, 0.5, 42
OUR_CONFIG = ("dataset='mnist' data-dir='{data_dir}' num-clients=20 clients-per-round=10 num-rounds={rounds} "
              "local-epochs=1 batch-size=64 lr=0.01 momentum=0.0 weight-decay=0.0 dirichlet-alpha=0.5 seed=42 "
              "model='cnn' eval-every=1")
FLBENCH_OVERRIDES = ("method=fedavg dataset.name=mnist model.name=avgcnn mode=serial common.seed=42 "
                     "common.join_ratio=0.5 common.global_epoch={rounds} common.local_epoch=1 common.batch_size=64 "
                     "optimizer.name=sgd optimizer.lr=0.01 optimizer.momentum=0 optimizer.weight_decay=0 "
                     "common.test.server.interval=1 common.test.server.test=true common.client_side_evaluation=false "
                     "common.test.client.interval=-1 common.test.client.test=false common.use_cuda=false "
                     "common.save_learning_curve_plot=false common.monitor=null")
GENERATE_ARGS = ["-d", "mnist", "-a", "0.5", "-cn", "20", "--seed", "42", "--use_cuda", "0",
                 "--plot_distribution", "0"]
# Each side's process sets torch's threads and prints them before its own entry point runs.
FLBENCH_ENTRY = ('import runpy, sys, torch; torch.set_num_threads({threads}); '
                 'print("torch_threads", torch.get_num_threads(), flush=True); '
                 'sys.argv = ["main.py"] + sys.argv[1:]; runpy.run_path("main.py", run_name="__main__")')
OUR_ENTRY = ('import sys, torch; torch.set_num_threads({threads}); '
             'print("torch_threads", torch.get_num_threads(), flush=True); '
             'from fedsign.cli import main; sys.exit(main(sys.argv[1:]))')


class PeerError(RuntimeError):
    """A side could not be run or its output not read."""


# ----------------------------------------------------------------------------------------- parsers
def parse_torch_threads(stdout: str) -> int:
    """The ``torch_threads N`` line a side's process printed first."""
    match = re.search(r"^torch_threads (\d+)$", stdout, re.MULTILINE)
    if match is None:
        raise PeerError("the side's output has no 'torch_threads N' line")
    return int(match.group(1))


def parse_flbench_log(text: str) -> dict:
    """FL-bench's main.log: seconds per round of training (its logged average), the round loop's total
    seconds, and the centralized (server) test accuracy in % per round."""
    per_round = re.search(r"average time taken by each global epoch: (\d+) min ([\d.]+) sec", text)
    total = re.search(r"total running time: (\d+) h (\d+) m (\d+) s", text)
    start = text.find("{", text.find("Experiment Results:"))
    if per_round is None or total is None or start < 0:
        raise PeerError("FL-bench's log lacks its timing lines or its results block (did the run finish?)")
    results, _ = json.JSONDecoder().raw_decode(text[start:])
    accuracy = {int(epoch): float(groups["centralized"]["test"]["accuracy"].split("%")[0])
                for epoch, groups in results.items() if "test" in groups.get("centralized", {})}
    if not accuracy:
        raise PeerError("FL-bench's results have no centralized test accuracy "
                        "(common.test.server.interval must be > 0)")
    hours, minutes, seconds = map(int, total.groups())
    return {"train_s_per_round": 60 * int(per_round.group(1)) + float(per_round.group(2)),
            "loop_s": 3600 * hours + 60 * minutes + seconds, "accuracy_by_round": accuracy}


def parse_ours(out_dir: Path) -> dict:
    """Our run folder: rounds, mean seconds per round (training + evaluation) and final test accuracy in %."""
    rows = read_metrics(out_dir)
    if not rows or rows[-1].get("accuracy") is None:
        raise PeerError(f"{out_dir}/metrics.csv has no evaluated final round")
    return {"rounds": len(rows), "s_per_round": sum(r["seconds"] for r in rows) / len(rows),
            "accuracy": 100 * rows[-1]["accuracy"]}


# ------------------------------------------------------------------------------------------- FL-bench
def check_flbench(flbench: Path, python: str, env: dict) -> None:
    """Clear errors before any run: the checkout's entry points and its Python dependencies."""
    missing = [p for p in ("main.py", "generate_data.py", "src/server/fedavg.py") if not (flbench / p).is_file()]
    if missing:
        raise PeerError(f"--flbench {flbench} is not an FL-bench checkout (no {', '.join(missing)})")
    probe = subprocess.run([python, "-c", "import hydra, omegaconf, pynvml, datasets, rich, torch"], cwd=flbench,
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise PeerError(f"FL-bench's Python cannot import its dependencies ({last}); install them with "
                        "`pip install --no-deps --target DIR hydra-core omegaconf antlr4-python3-runtime==4.9.3 "
                        "pynvml nvidia-ml-py datasets ...` and pass --pythonpath DIR")


def place_mnist(flbench: Path, data_dir: Path) -> None:
    """MNIST's idx files, decompressed, where torchvision (under FL-bench's data/mnist) finds them offline."""
    raw = flbench / "data" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        if not (raw / name).is_file():
            with gzip.open(data_dir / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def write_official_partition(flbench: Path, partitions: tuple, num_train: int, num_test: int) -> None:
    """FL-bench's partition.pkl with our clients' training indices (into its pooled 60k+10k images) and the
    official test images spread over the clients' test lists, whose union its server tests on."""
    import numpy as np

    tests = np.array_split(np.arange(num_train, num_train + num_test, dtype=np.int64), len(partitions))
    clients = list(range(len(partitions)))
    partition = {"separation": {"train": clients, "val": clients, "test": clients, "total": len(partitions)},
                 "data_indices": [{"train": np.asarray(p, dtype=np.int64), "val": np.array([], dtype=np.int64),
                                   "test": t} for p, t in zip(partitions, tests)]}
    folder = flbench / "data" / "mnist"
    with open(folder / "partition.pkl", "wb") as f:
        pickle.dump(partition, f)
    (folder / "partition_md5.txt").unlink(missing_ok=True)  # generate_data.py must redo its own layout


def run_logged(command: list[str], cwd: Path, env: dict, log: Path) -> tuple[str, float]:
    """Run ``command``, its output to ``log``; (output, wall seconds); PeerError naming the log on failure."""
    start = time.perf_counter()
    with log.open("w") as f:
        status = subprocess.run(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    output = log.read_text(errors="replace")
    if status != 0:
        raise PeerError(f"{shlex.join(command[:3])} ... exited {status}; see {log}:\n{output[-2000:]}")
    return output, wall


def run_flbench(args: argparse.Namespace, layout: str, partitions: tuple, env: dict, work: Path) -> dict:
    """One FL-bench FedAvg run in ``layout`` ('official' or 'own'); its figures and exact commands."""
    flbench = Path(args.flbench)
    generate = [args.python, "generate_data.py", *GENERATE_ARGS]
    run_logged(generate, flbench, env, work / f"flbench_{layout}_generate.log")
    if layout == "official":
        write_official_partition(flbench, partitions, 60000, 10000)
    runs = flbench / "out" / "fedavg" / "mnist"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    command = [args.python, "-c", FLBENCH_ENTRY.format(threads=args.threads),
               *FLBENCH_OVERRIDES.format(rounds=args.rounds).split()]
    stdout, wall = run_logged(command, flbench, env, work / f"flbench_{layout}.log")
    new = sorted(set(runs.iterdir()) - before)
    if len(new) != 1:
        raise PeerError(f"expected one new FL-bench run folder under {runs}, found {len(new)}")
    log = parse_flbench_log((new[0] / "main.log").read_text(errors="replace"))
    final_round = max(log["accuracy_by_round"])
    if final_round != args.rounds:
        raise PeerError(f"FL-bench's last evaluated round is {final_round}, not {args.rounds}")
    accuracy = log["accuracy_by_round"][final_round]
    steps = [f"cd {flbench}", f"{env_prefix(env)} {shell_join(generate)}"]
    if layout == "official":
        steps.append("<peers.py rewrites data/mnist/partition.pkl: our clients' train indices, the official "
                     "test images as the clients' test lists>")
    return {"side": "FL-bench FedAvg (avgcnn)", "layout": layout, "rounds": args.rounds,
            "s_per_round": log["loop_s"] / args.rounds, "s_per_round_from": "logged total running time / rounds",
            "train_s_per_round": log["train_s_per_round"], "wall_s": wall,
            "accuracy_official_test": accuracy if layout == "official" else None,
            "accuracy_own_split": accuracy if layout == "own" else None,
            "torch_threads": parse_torch_threads(stdout), "log": str(new[0] / "main.log"),
            "command": " && ".join(steps + [f"{env_prefix(env)} {shell_join(command)}"])}


# ---------------------------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace, config: RunConfig, overrides: str, work: Path) -> dict:
    """Our FedAvg (``fedsign run``, the in-process engine) in a subprocess; its figures and exact command."""
    out_dir = work / "ours"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", OUR_ENTRY.format(threads=args.threads), "run", "--quiet", "--run-config",
               f"{overrides} out-dir='{out_dir}'"]
    stdout, wall = run_logged(command, ROOT, env, work / "ours.log")
    figures = parse_ours(out_dir)
    if figures["rounds"] != config.num_rounds:
        raise PeerError(f"our run wrote {figures['rounds']} rounds, not {config.num_rounds}")
    return {"side": f"FedSign FedAvg ({config.model})", "layout": "official", "rounds": figures["rounds"],
            "s_per_round": figures["s_per_round"], "s_per_round_from": "mean of metrics.csv seconds",
            "train_s_per_round": None, "wall_s": wall, "accuracy_official_test": figures["accuracy"],
            "accuracy_own_split": None, "torch_threads": parse_torch_threads(stdout),
            "log": str(out_dir / "metrics.csv"), "command": f"cd {ROOT} && {env_prefix(env)} {shell_join(command)}"}


def shell_join(command: list[str]) -> str:
    """``command`` as a shell line; an argument holding single quotes but nothing double quotes would
    expand goes in double quotes (readable run-config strings)."""
    def quote(arg: str) -> str:
        if "'" in arg and not any(c in arg for c in '"$`\\!'):
            return f'"{arg}"'
        return shlex.quote(arg)
    return " ".join(quote(arg) for arg in command)


def env_prefix(env: dict) -> str:
    return " ".join(f"{k}={shlex.quote(env[k])}" for k in ("OMP_NUM_THREADS", "PYTHONPATH") if env.get(k))


# -------------------------------------------------------------------------------------------- report
def fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def write_report(rows: list[dict], out: Path, header_note: str) -> str:
    """The markdown table (+ notes and commands) in ``out``.md and the rows in ``out``.csv; the table text."""
    import csv

    lines = ["| side | data layout | s/round (train + test) | s/round, training only | wall s | "
             "acc. official 10k test (%) | acc. FL-bench's own split (%) | torch threads |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['side']} | {r['layout']} | {fmt(r['s_per_round'])} | {fmt(r['train_s_per_round'])} | "
              f"{fmt(r['wall_s'], 0)} | {fmt(r['accuracy_official_test'])} | {fmt(r['accuracy_own_split'])} | "
              f"{r['torch_threads']} |" for r in rows]
    commands = ["", "Commands (in the order run):", ""] + [f"- {r['side']}, {r['layout']}: `{r['command']}`"
                                                          for r in rows]
    text = "\n".join(lines + ["", header_note] + commands) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return "\n".join(lines)


def flbench_commit(args: argparse.Namespace) -> str:
    if args.flbench_commit:
        return args.flbench_commit
    probe = subprocess.run(["git", "-C", args.flbench, "rev-parse", "HEAD"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise PeerError(f"{args.flbench} has no git metadata; pass --flbench-commit HASH "
                        "(the commit it was checked out at)")
    return probe.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flbench", default="", help="scratch FL-bench checkout (outside this project)")
    parser.add_argument("--flbench-commit", default="", help="its commit, when the checkout has no .git")
    parser.add_argument("--python", default=sys.executable, help="Python that runs FL-bench (default: this one)")
    parser.add_argument("--pythonpath", default="", help="PYTHONPATH for FL-bench's extra dependencies")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist"), help="MNIST idx .gz files")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (default 2)")
    parser.add_argument("--extra", default="", help="more run-config overrides for our side (e.g. \"init='torch'\")")
    parser.add_argument("--layouts", default="official,own", help="FL-bench data layouts to run (official,own)")
    parser.add_argument("--sides", default="flbench,ours", help="which sides to run (flbench,ours)")
    parser.add_argument("--dry-run", action="store_true", help="2 rounds each; results under a temp folder")
    parser.add_argument("--out", default=str(RESULTS / "speed_peers"), help="report path without suffix")
    args = parser.parse_args(argv)
    args.rounds = 2 if args.dry_run else 20
    layouts = [x for x in args.layouts.split(",") if x]
    sides = [x for x in args.sides.split(",") if x]
    data_dir = Path(args.data_dir).resolve()
    try:
        if set(layouts) - {"official", "own"} or set(sides) - {"flbench", "ours"} or not sides:
            raise PeerError("--layouts takes official,own and --sides takes flbench,ours (comma-separated)")
        if "flbench" in sides and not args.flbench:
            raise PeerError("--flbench DIR (a scratch FL-bench checkout) is needed to run the FL-bench side")
        if args.threads < 1:
            raise PeerError("--threads must be >= 1")
        absent = [f"{n}.gz" for n in MNIST_FILES if not (data_dir / f"{n}.gz").is_file()]
        if absent:
            raise PeerError(f"--data-dir {data_dir} lacks {', '.join(absent)} (MNIST's idx .gz files)")
        overrides = merge_overrides(OUR_CONFIG.format(data_dir=data_dir, rounds=args.rounds), args.extra)
        try:
            config = RunConfig.from_overrides(overrides).resolved()
        except ConfigError as err:
            raise PeerError(f"our run config: {err}") from err
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        env.pop("PYTHONPATH", None)
        if args.pythonpath:
            env["PYTHONPATH"] = args.pythonpath
        commit = ""
        if "flbench" in sides:
            args.flbench = str(Path(args.flbench).resolve())
            commit = flbench_commit(args)
            check_flbench(Path(args.flbench), args.python, env)
            place_mnist(Path(args.flbench), data_dir)
        out = Path(args.out)
        if args.dry_run and out.resolve() == (RESULTS / "speed_peers").resolve():
            out = Path(tempfile.mkdtemp(prefix="speed_peers_dry_")) / "speed_peers"
        work = Path(tempfile.mkdtemp(prefix="peers_"))  # logs and our run folder, kept
        print(f"logs and run folders: {work}", flush=True)
        note = (f"{time.strftime('%Y-%m-%d')}, machine: {os.cpu_count()} CPUs; torch threads on both sides: {args.threads}; "
                f"{args.rounds} rounds{' (DRY RUN)' if args.dry_run else ''}. FL-bench commit: "
                f"{commit or '(not run)'}. Ours: commit {git_head()}, run config `{overrides}`. "
                "Our s/round is the mean of metrics.csv `seconds` (training + the server's 10k test every "
                "round); FL-bench's is its logged total running time of the round loop / rounds (training + "
                "its server test every round, whole seconds); its training-only column is its logged average "
                "time per round. `official`: FL-bench trained on our clients' partition of the 60k training "
                "images, tested on the official 10k; `own`: its generate_data.py layout (60k+10k pooled, "
                "25 % of each client's share held out as its test split).")
        runs = [(lambda layout=layout: run_flbench(args, layout, run_partitions(config), env, work))
                for layout in layouts if "flbench" in sides]
        if "ours" in sides:
            runs.append(lambda: run_ours(args, config, overrides, work))
        rows = []
        for run in runs:  # the report is rewritten after every side, so a later failure keeps the earlier rows
            rows.append(run())
            print(rows[-1], flush=True)
            table = write_report(rows, out, note)
        print(table)
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    except PeerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def git_head() -> str:
    probe = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return probe.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())

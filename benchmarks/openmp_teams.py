"""Training speed by thread arrangement with 2+ torch threads: why the in-process engine gives back OpenMP teams.

Each arrangement runs in a fresh process (OpenMP teams live as long as their thread): rounds of a plain PyTorch
loop (``fedavg_cnn``, McMahan et al.'s CNN, on random 28x28 images, SGD) alternating with a forward-only evaluation, as the
in-process engine alternates client training and the server's test:

- ``main``: training and evaluation on the main thread (one OpenMP team);
- ``client thread``: training on the engine's ``ClientThread``, evaluation on the main thread, with
  ``release_openmp_threads`` made a no-op (two teams, the engine before 26a7ddb);
- ``client thread, teams given back``: the same with the engine's release (one team at a time).

    .venv/bin/python benchmarks/openmp_teams.py [--threads 2] [--rounds 6] [--batches 100]
    .venv/bin/python benchmarks/openmp_teams.py --dry-run      # 2 rounds of 2 batches, report under /tmp

Prints and writes ``benchmarks/results/openmp_teams.md``: mean training and evaluation seconds per round
(the first round excluded)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARRANGEMENTS = {"main": "main", "client": "client thread", "released": "client thread, teams given back"}


def measure(arrangement: str, threads: int, rounds: int, batches: int) -> dict:
    """Mean training and evaluation seconds per round (after the first) of ``arrangement`` in this process,
    the client side on the engine's own ``ClientThread``."""
    import torch
    from torch import nn

    import fedsign.engines.inprocess as inprocess
    from fedsign.models import build_model

    torch.set_num_threads(threads)
    if arrangement == "client":  # the engine before 26a7ddb: no thread gives its team back
        inprocess.release_openmp_threads = lambda: None
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(64 * batches, 1, 28, 28, generator=generator), torch.randint(0, 10, (64 * batches,))
    test_images = torch.randn(50 * batches, 1, 28, 28, generator=generator)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return build_model("fedavg_cnn", 10, 1, 28, init="pytorch")

    def train() -> float:
        net = model()
        optimizer, loss = torch.optim.SGD(net.parameters(), lr=0.01), nn.CrossEntropyLoss()
        start = time.perf_counter()
        for i in range(0, len(images), 64):
            optimizer.zero_grad()
            loss(net(images[i:i + 64]), labels[i:i + 64]).backward()
            optimizer.step()
        return time.perf_counter() - start

    def evaluate() -> float:
        net = model()
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(test_images), 500):
                net(test_images[i:i + 500])
        return time.perf_counter() - start

    client = inprocess.ClientThread()

    def on_client_thread(fn) -> float:
        inprocess.release_openmp_threads()  # as InProcessGrid._deliver, before it queues the calls
        seconds: list[float] = []
        client.submit(lambda: seconds.append(fn())).done.wait()
        return seconds[0]

    train_s, eval_s = [], []
    for _ in range(rounds):
        train_s.append(train() if arrangement == "main" else on_client_thread(train))
        eval_s.append(evaluate())
    client.retire()
    client.thread.join()
    kept = slice(1, None) if rounds > 1 else slice(None)
    return {"arrangement": ARRANGEMENTS[arrangement], "train_s": sum(train_s[kept]) / len(train_s[kept]),
            "eval_s": sum(eval_s[kept]) / len(eval_s[kept]), "torch_threads": torch.get_num_threads()}


def run_arrangement(arrangement: str, args: argparse.Namespace) -> dict:
    """``measure`` in a fresh Python process."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"from openmp_teams import measure; "
            f"print(json.dumps(measure({arrangement!r}, {args.threads}, {args.rounds}, {args.batches})))")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"the {arrangement!r} process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=6, help="training + evaluation rounds per arrangement")
    parser.add_argument("--batches", type=int, default=100, help="training batches of 64 per round")
    parser.add_argument("--repeats", type=int, default=2, help="times the arrangements run, alternated")
    parser.add_argument("--dry-run", action="store_true", help="2 rounds of 2 batches, once; report under /tmp")
    parser.add_argument("--out", default=str(RESULTS / "openmp_teams"), help="report path without suffix")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.rounds, args.batches, args.repeats = 2, 2, 1
        args.out = str(Path(tempfile.mkdtemp()) / "openmp_teams")
    rows = []
    for _ in range(args.repeats):
        for arrangement in ARRANGEMENTS:
            rows.append(run_arrangement(arrangement, args))
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    lines = ["| arrangement | training s/round | evaluation s/round | torch threads |", "|---|---|---|---|"]
    lines += [f"| {r['arrangement']} | {r['train_s']:.2f} | {r['eval_s']:.2f} | {r['torch_threads']} |" for r in rows]
    lines += ["", f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.batches} training batches of 64 and "
              f"{50 * args.batches} evaluated images (batches of 500), mean over rounds 2..; the arrangements "
              f"alternated {args.repeats}x, each in a fresh process. Command: `.venv/bin/python "
              f"benchmarks/openmp_teams.py --threads {args.threads} --rounds {args.rounds} --batches {args.batches} "
              f"--repeats {args.repeats}`."]
    out = Path(args.out).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:len(rows) + 2]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fedsign run`` (in-process), ``fedsign simulate`` (flwr run on Ray) and ``fedsign validate``."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import tomli_w

from fedsign.algorithms import hyperparameter_table
from fedsign.cli.common import PROJECT_DIR, CLIError, add_run_config, load_config
from fedsign.config import refuse_crash_faults
from fedsign.deploy.federation import flower_env
from fedsign.deploy.processes import pids_with_cmdline, stop
from fedsign.engines import run_inprocess
from fedsign.results import RunResults, check_outcome, sigterm_interrupts


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.run_config)
    if not args.verbose:  # Flower's per-round INFO lines would break the progress bar
        logging.getLogger("flwr").setLevel(logging.WARNING)
    with sigterm_interrupts():  # a SIGTERM ends the run as Ctrl-C does: marked interrupted
        run_inprocess(config, progress=not args.quiet)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(args.run_config)
    RunResults.check_out_dir(config.out_dir, config.resume)
    print(f"ok: {config.strategy} on {config.dataset}, {config.num_clients} clients, "
          f"{config.num_rounds} rounds -> {config.out_dir}")
    return 0


def stop_local_superlink(flwr_home: Path) -> list[int]:
    """Stop the detached local SuperLink that ``flwr run`` left running under ``flwr_home``."""
    return stop(lambda: pids_with_cmdline("flower-superlink", str(flwr_home)), timeout=10.0)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Validate, then ``flwr run`` the app on Ray with num-supernodes = num-clients."""
    config = load_config(args.run_config)
    refuse_crash_faults(config, "Ray's actor pool")
    if not (PROJECT_DIR / "pyproject.toml").exists():
        raise CLIError(f"fedsign simulate needs the source checkout (no pyproject.toml in {PROJECT_DIR})")
    flwr_home = Path(args.flwr_home).resolve() if args.flwr_home else PROJECT_DIR / ".flwr"
    flwr_home.mkdir(parents=True, exist_ok=True)
    federation = [f"num-supernodes={config.num_clients}",
                  f"client-resources-num-cpus={args.client_cpus:g}",
                  f"client-resources-num-gpus={args.client_gpus:g}"]
    with tempfile.NamedTemporaryFile("wb", suffix=".toml", delete=False) as f:
        tomli_w.dump(config.to_dict(), f)
        overrides = f.name
    command = [str(Path(sys.executable).parent / "flwr"), "run", str(PROJECT_DIR), "--stream", "--run-config", overrides,
               "--federation-config", " ".join(federation)]
    print("$ " + shlex.join(command), flush=True)
    stop_local_superlink(flwr_home)
    try:
        env = flower_env(flwr_home)
        if args.ray_address:  # ray.init() inside the SuperLink attaches to this cluster
            env["RAY_ADDRESS"] = args.ray_address
        status = subprocess.call(command, env=env)
    finally:
        stopped = stop_local_superlink(flwr_home)
        os.unlink(overrides)
        if stopped:
            print(f"stopped local SuperLink (pid {', '.join(map(str, stopped))})", flush=True)
    check_outcome(config.out_dir)
    metrics = Path(config.out_dir) / "metrics.csv"
    if status == 0 and not (Path(config.out_dir) / "model.safetensors").exists():
        raise CLIError(f"flwr run ended but the run wrote no final model; see {flwr_home}/local-superlink/"
                       f"superlink.log and {metrics}")
    return status


def add_run_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``run``, ``simulate`` and ``validate`` to the CLI."""
    p = sub.add_parser("run", help="run in this process (no Ray)")
    add_run_config(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--verbose", action="store_true", help="show Flower's INFO log lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("simulate", help="run with flwr run on the Ray simulation engine")
    add_run_config(p)
    p.add_argument("--client-cpus", type=float, default=1.0, help="CPUs per client actor")
    p.add_argument("--client-gpus", type=float, default=0.0, help="GPUs (fraction) per client actor")
    p.add_argument("--ray-address", default="", help="attach to an existing Ray cluster (ray start --head)")
    p.add_argument("--flwr-home", default="", help="FLWR_HOME for the local SuperLink (default .flwr/)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="check a run config and exit")
    add_run_config(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("algorithms", help="print the registered algorithms' hyperparameters (markdown)")
    p.set_defaults(func=cmd_algorithms)


def cmd_algorithms(args: argparse.Namespace) -> int:
    print(hyperparameter_table(), end="")
    return 0

"""``fedsign federation``: a real Flower deployment with TLS and SuperNode authentication.

Flower 1.42 carries all SuperLink traffic over HTTP(S) with protobuf bodies, on one
port: SuperNode<->SuperLink (Fleet API), ``flwr`` CLI<->SuperLink (Control API) and
ServerApp<->SuperLink (Runtime API). Its gRPC Fleet API is legacy (internal flag, no
SuperNode client), so this is what a deployment uses. The commands here parse arguments
and report; the work is in ``fedsign.deploy`` (certificates, processes, the federation folder).
Every command reports a process "up" only once it checked it (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from fedsign.checkpoint import resume_point
from fedsign.cli.common import CLIError, load_config
from fedsign.deploy.certificates import check_node_key, make_certificates, make_node_key
from fedsign.deploy.federation import (CONNECTION, DEFAULT_PORT, Federation, register_node, run_app, serverapps,
                                       split_address, start_superlink, start_supernode, wait_connected,
                                       write_connection)
from fedsign.deploy.processes import LOOPBACK, free_port
from fedsign.results import RunInterrupted, RunResults, check_outcome, read_metrics

DEFAULT_DIR = ".federation"
KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a file name in keys/, never a path
__all__ = ["Federation", "add_federation_parser", "free_port", "make_certificates", "make_node_key",
           "write_connection"]


def print_rounds(out_dir: Path) -> None:
    """Per-round accuracy of a finished run."""
    print(f"{'round':>5}  {'accuracy':>8}  {'loss':>7}  {'replies':>7}  {'failures':>8}  {'seconds':>7}")
    for r in read_metrics(out_dir):
        print(f"{r['round']:>5}  {r['accuracy']:>8.4f}  {r['loss']:>7.4f}  {r['num_replies']:>7}  "
              f"{r['num_failures']:>8}  {r['seconds']:>7.2f}", flush=True)


def submit(fed: Federation, run_config: list[str] | None, wait_nodes: float) -> int:
    """Validate the run config and the out-dir (where the ServerApp runs on this machine; elsewhere
    the ServerApp refuses), then ``run_app``; a run that ends without a final model is an error."""
    config = load_config(run_config)
    RunResults.check_out_dir(config.out_dir, config.resume)
    resume_point(config.out_dir, config)
    try:
        status = run_app(fed, config.to_dict(), config.num_clients, wait_nodes)
    except KeyboardInterrupt:
        left = serverapps(fed)
        raise RunInterrupted("the run was stopped on the SuperLink" + (
            f", but ServerApp processes {left} still run; `fedsign federation down` stops them" if left else
            f"; resume=true with out-dir {config.out_dir} continues it")) from None
    check_outcome(config.out_dir)
    if status == 0 and not (Path(config.out_dir) / "model.safetensors").exists():
        raise CLIError(f"flwr run ended but the run wrote no final model; see {fed.logs}/ and {config.out_dir}")
    return status


# ------------------------------------------------------------------ commands
def _federation(args: argparse.Namespace) -> Federation:
    return Federation(args.dir)


def cmd_certs(args: argparse.Namespace) -> int:
    fed = _federation(args)
    if args.days < 1:
        raise CLIError(f"--days must be at least 1 (certificate validity), got {args.days}")
    if fed.ca_cert.exists() and not args.force:
        raise CLIError(f"{fed.certs} already holds certificates; pass --force to replace them "
                       "(every SuperNode then needs the new ca.crt)")
    make_certificates(fed.certs, args.san or [LOOPBACK], days=args.days)
    print(f"wrote {fed.certs}/ca.crt, server.crt, server.key (SANs: {', '.join(args.san or [LOOPBACK])})")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    fed = _federation(args)
    names = args.name or [f"supernode-{k}" for k in range(args.num_nodes)]
    bad = [n for n in names if not KEY_NAME.fullmatch(n)]
    if bad:
        raise CLIError(f"--name {bad[0]!r} is not a plain file name (letters, digits, '.', '_', '-'; no '/', "
                       f"not starting with '.'): keys are written into {fed.keys}")
    taken = [n for n in names if (fed.keys / n).exists()]
    if taken:
        raise CLIError(f"{fed.keys / taken[0]} already exists; remove it or pick another --name")
    for name in names:
        print(f"wrote {make_node_key(fed.keys, name)}")
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    fed = _federation(args)
    pid = start_superlink(fed, args.host, args.port, auth=not args.no_auth)
    print(f"SuperLink up (pid {pid}, listening, TLS verified) on {args.host}:{args.port} (TLS{', SuperNode auth' if not args.no_auth else ''}); "
          f"flwr connection '{CONNECTION}' in {fed.flwr_home}/config.toml")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    fed = _federation(args)
    keys = [Path(k) for k in args.public_key] or sorted(fed.keys.glob("*.pub"))
    if not keys:
        raise CLIError(f"no public keys in {fed.keys}; create them with `fedsign federation keys`")
    for key in keys:
        register_node(fed, key)
    return 0


def cmd_supernode(args: argparse.Namespace) -> int:
    fed = _federation(args)
    if args.num_partitions < 1:
        raise CLIError(f"--num-partitions must be at least 1 (the runs' num-clients), got {args.num_partitions}")
    ids = args.partition_id or list(range(args.num_partitions))
    bad = [p for p in ids if not 0 <= p < args.num_partitions]
    if bad:
        raise CLIError(f"partition-id {bad[0]} outside [0, {args.num_partitions}); pass --num-partitions")
    ca_cert = Path(args.ca_cert) if args.ca_cert else fed.ca_cert
    keys = [None if args.no_auth else Path(args.key) if args.key else fed.keys / f"supernode-{p}" for p in ids]
    for key in keys:  # check every key before starting any node
        if key is not None:
            check_node_key(key)
    started: list[tuple[str, subprocess.Popen, int]] = []
    try:
        for offset, (pid, key) in enumerate(zip(ids, keys, strict=True)):
            name = f"supernode-{pid}"
            log = fed.logs / f"{name}.log"
            size = log.stat().st_size if log.exists() else 0
            proc = start_supernode(fed, args.superlink, pid, args.num_partitions, key=key, ca_cert=ca_cert,
                                   runtime_port=args.runtime_port + offset, data_dir=args.data_dir)
            started.append((name, proc, size))
        for name, proc, size in started:
            node_id = wait_connected(fed, proc, name, size, args.connect_timeout)
            print(f"{name} up (pid {proc.pid}): the SuperLink accepted it as SuperNode {node_id}", flush=True)
    except BaseException:
        for _, proc, _ in started:
            fed.stop_session(proc.pid)
        raise
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    fed = _federation(args)
    if args.wait_nodes <= 0:
        raise CLIError(f"--wait-nodes must be > 0 seconds, got {args.wait_nodes}")
    status = submit(fed, args.run_config, args.wait_nodes)
    if status == 0:
        print_rounds(Path(load_config(args.run_config).out_dir))
    return status


def cmd_down(args: argparse.Namespace) -> int:
    fed = _federation(args)
    stopped = fed.stop()
    print(f"stopped {len(stopped)} process(es)" + (f": {', '.join(map(str, stopped))}" if stopped else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Loopback federation: certs, keys, SuperLink (TLS + node auth), N registered SuperNodes
    and one whose key is not registered (it must be refused), one run, stop all."""
    fed = Federation(args.dir or tempfile.mkdtemp(prefix="fedsign-federation-"))
    out_dir = fed.root / "run"
    overrides = [f"strategy='{args.strategy}' dataset='digits' num-clients={args.num_nodes} "
                 f"clients-per-round={args.num_nodes} num-rounds={args.rounds} local-epochs=1 seed=0 "
                 f"out-dir='{out_dir}' device='cpu'", *(args.run_config or [])]
    load_config(overrides)  # refuse a bad config before starting anything
    superlink = f"{LOOPBACK}:{free_port()}"
    status = 1
    try:
        make_certificates(fed.certs, [LOOPBACK])
        start_superlink(fed, *split_address(superlink))
        for k in range(args.num_nodes):
            register_node(fed, make_node_key(fed.keys, f"supernode-{k}"))
            start_supernode(fed, superlink, k, args.num_nodes, key=fed.keys / f"supernode-{k}",
                            ca_cert=fed.ca_cert, runtime_port=free_port())
        make_node_key(fed.keys, "unregistered")
        rogue = start_supernode(fed, superlink, 0, args.num_nodes, key=fed.keys / "unregistered",
                                ca_cert=fed.ca_cert, runtime_port=free_port(), name="unregistered",
                                max_retries=2)
        status = submit(fed, overrides, wait_nodes=120.0)
        refused = _refusal(fed, rogue)
    finally:
        stopped = fed.stop()
        print(f"stopped {len(stopped)} Flower process(es); logs in {fed.logs}", flush=True)
    left = fed.processes()
    if left:
        raise CLIError(f"Flower processes still running: {left}")
    if status == 0:
        print_rounds(out_dir)
        print(refused, flush=True)
    return status


def _refusal(fed: Federation, rogue: subprocess.Popen, timeout: float = 60.0) -> str:
    """One line proving the SuperLink refused the SuperNode with the unregistered key."""
    try:
        code = rogue.wait(timeout)
    except subprocess.TimeoutExpired:
        raise CLIError("the SuperNode with an unregistered key is still running: "
                       "the SuperLink did not refuse it") from None
    superlink_log = (fed.logs / "superlink.log").read_text(errors="replace")
    if code == 0 or "No SuperNode found with the given public key" not in superlink_log:
        raise CLIError(f"the SuperNode with an unregistered key was not refused (exit code {code})")
    return (f"unregistered SuperNode key refused: SuperLink answered 'No SuperNode found with the given "
            f"public key', the SuperNode exited with code {code}")


def add_federation_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedsign federation ...`` to the CLI."""
    parser = sub.add_parser("federation", help="real deployment: SuperLink + SuperNodes with TLS and node auth",
                            description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="federation_command", required=True)

    def command(name: str, func, help: str, directory: str = DEFAULT_DIR) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help)
        p.add_argument("--dir", default=directory,
                       help=f"federation directory (default {directory or 'a new temporary one'})")
        p.set_defaults(func=func)
        return p

    def add_run_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run-config", "-c", action="append",
                       help="key=value pairs (TOML values) or a .toml file, as for flwr run")

    p = command("certs", cmd_certs, "create a CA and a SuperLink TLS certificate")
    p.add_argument("--san", action="append", help="SuperLink host name or IP the nodes dial (repeat); "
                                                   "localhost and 127.0.0.1 are always added")
    p.add_argument("--days", type=int, default=365, help="validity in days")
    p.add_argument("--force", action="store_true", help="replace existing certificates")

    p = command("keys", cmd_keys, "create SuperNode ECDSA key pairs (keys/<name>, keys/<name>.pub)")
    p.add_argument("--num-nodes", type=int, default=2, help="keys supernode-0 .. supernode-(N-1)")
    p.add_argument("--name", action="append", help="key name instead (repeat)")

    p = command("superlink", cmd_superlink, "start flower-superlink with TLS and SuperNode authentication")
    p.add_argument("--host", default=LOOPBACK, help="bind address (0.0.0.0 for other machines)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the one port of all SuperLink APIs")
    p.add_argument("--no-auth", action="store_true", help="accept any SuperNode (not recommended)")

    p = command("register", cmd_register, "register SuperNode public keys with the running SuperLink")
    p.add_argument("public_key", nargs="*", help="public key files (default: keys/*.pub)")

    p = command("supernode", cmd_supernode, "start flower-supernodes, one per partition id")
    p.add_argument("--superlink", default=f"{LOOPBACK}:{DEFAULT_PORT}", help="SuperLink HOST:PORT")
    p.add_argument("--num-partitions", type=int, required=True, help="num-clients of the runs")
    p.add_argument("--partition-id", type=int, action="append",
                   help="partition to serve (repeat; default all of 0..num-partitions-1)")
    p.add_argument("--key", default="", help="private key (default keys/supernode-<partition-id>)")
    p.add_argument("--ca-cert", default="", help="CA certificate (default certs/ca.crt)")
    p.add_argument("--runtime-port", type=int, default=9094,
                   help="first local port for the nodes' ClientApp runtime API (one per node)")
    p.add_argument("--data-dir", default="", help="this machine's copy of the run's dataset (default: the "
                                                  "run's data-dir, which must then exist here too)")
    p.add_argument("--no-auth", action="store_true", help="connect without a key")
    p.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds to wait for the SuperLink to accept each node (default 60)")

    p = command("run", cmd_run, "flwr run this app on the federation's SuperLink and stream its logs")
    add_run_config(p)
    p.add_argument("--wait-nodes", type=float, default=600.0,
                   help="seconds to wait for num-clients SuperNodes to be online (default 600)")

    command("down", cmd_down, "stop every process this federation directory started")

    p = command("demo", cmd_demo, "loopback SuperLink + SuperNodes with TLS and node auth, one short run, stop all",
                directory="")
    p.add_argument("--num-nodes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--strategy", default="fedsign")
    add_run_config(p)

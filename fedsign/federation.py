"""``fedsign federation``: a real Flower deployment with TLS and SuperNode authentication.

Flower 1.42 carries all SuperLink traffic over HTTP(S) with protobuf bodies, on one
port: SuperNode<->SuperLink (Fleet API), ``flwr`` CLI<->SuperLink (Control API) and
ServerApp<->SuperLink (Runtime API). Its gRPC Fleet API is legacy (internal flag, no
SuperNode client), so this is what a deployment uses.

A federation directory (default ``.federation/``) holds everything one machine needs::

    certs/ca.crt ca.key server.crt server.key   CA and SuperLink certificate (SANs)
    keys/<name> <name>.pub                      SuperNode ECDSA keys (OpenSSH format)
    flwr-home/config.toml                       the ``fedsign`` SuperLink connection for flwr
    state/                                      SuperNodes' per-client state (node config state-dir)
    logs/                                       one log per started process

Every process started here carries ``FEDSIGN_FEDERATION=<dir>`` in its environment, and
so do their children (SuperExec, ServerApp, ClientApps); ``down`` finds them all in /proc
and stops them by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedsign.checkpoint import resume_point
from fedsign.cli import PROJECT_DIR, CLIError, flower_env, load_config
from fedsign.results import RunResults

MARKER = "FEDSIGN_FEDERATION"
CONNECTION = "fedsign"
DEFAULT_DIR = ".federation"
DEFAULT_PORT = 9093
LOOPBACK = "127.0.0.1"


class Federation:
    """Paths and processes of one federation directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()

    certs = property(lambda self: self.root / "certs")
    keys = property(lambda self: self.root / "keys")
    flwr_home = property(lambda self: self.root / "flwr-home")
    state = property(lambda self: self.root / "state")
    logs = property(lambda self: self.root / "logs")
    ca_cert = property(lambda self: self.certs / "ca.crt")

    def env(self) -> dict[str, str]:
        """flwr's environment (project FLWR_HOME, no dependency installs) plus the marker."""
        env = flower_env(self.flwr_home)
        env[MARKER] = str(self.root)
        return env

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        """Start ``command`` detached (own session), logging to logs/<name>.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env(), cwd=self.root, start_new_session=True)
        print(f"started {name} (pid {proc.pid}): {shlex.join(command)}", flush=True)
        return proc

    def processes(self) -> list[int]:
        """PIDs of every live process carrying this federation's marker."""
        marker = f"{MARKER}={self.root}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in environ and state != "Z":
                found.append(int(proc.name))
        return found

    def stop(self, timeout: float = 10.0) -> list[int]:
        """SIGTERM every process of this federation, SIGKILL what is left after ``timeout``."""
        stopped = self.processes()
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
        return stopped


# --------------------------------------------------------------- certificates
def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san_entry(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_certificates(certs: Path, names: list[str], days: int = 365) -> None:
    """Write a CA (ca.crt/ca.key) and a SuperLink certificate signed by it whose SANs are
    ``names`` plus localhost and 127.0.0.1 (the ServerApp reaches the SuperLink locally)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    sans = list(dict.fromkeys([*names, "localhost", LOOPBACK]))
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedSign federation CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san_entry(n) for n in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    private = {"encoding": pem, "format": serialization.PrivateFormat.PKCS8,
               "encryption_algorithm": serialization.NoEncryption()}
    _write_private(certs / "ca.key", ca_key.private_bytes(**private))
    _write_private(certs / "server.key", server_key.private_bytes(**private))
    (certs / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (certs / "server.crt").write_bytes(server_cert.public_bytes(pem))


def make_node_key(keys: Path, name: str) -> Path:
    """Write an ECDSA P-384 key pair in OpenSSH format (what SuperNodes and
    ``flwr supernode register`` read); return the public key's path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(keys / name, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
    public = keys / f"{name}.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return public


def check_file(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a file, else a one-line error naming it and how to make it."""
    if not path.is_file():
        raise CLIError(f"{what} {path} does not exist; {hint}")
    return path


def check_certificate(path: Path, what: str, hint: str) -> Path:
    """``path`` if it holds a PEM certificate, else a one-line error."""
    from cryptography import x509

    check_file(path, what, hint)
    try:
        x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise CLIError(f"{what} {path} is not a PEM certificate; {hint}") from None
    return path


def check_node_key(path: Path) -> Path:
    """``path`` if it holds an OpenSSH EC private key, else a one-line error."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    check_file(path, "SuperNode key", "create it with `fedsign federation keys`")
    try:
        key = load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CLIError(f"SuperNode key {path} is not an OpenSSH ECDSA private key; "
                       "create one with `fedsign federation keys`")
    return path


# ------------------------------------------------------------------ processes
def wait_for_tls(host: str, port: int, ca_cert: Path, timeout: float, pid: int | None = None) -> None:
    """Wait until ``host:port`` completes a TLS handshake verified by ``ca_cert``."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0) as sock:
                with context.wrap_socket(sock, server_hostname=host):
                    return
        except ssl.SSLCertVerificationError as err:
            raise CLIError(f"the SuperLink at {host}:{port} presented a certificate that {ca_cert} "
                           f"does not verify: {err.verify_message}") from None
        except OSError:
            if pid is not None and not _alive(pid):
                raise CLIError(f"the SuperLink (pid {pid}) exited during start-up") from None
            if time.monotonic() > deadline:
                raise CLIError(f"no TLS SuperLink answered at {host}:{port} within {timeout:.0f}s") from None
            time.sleep(0.3)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CLIError(f"address '{address}' must be HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def write_connection(fed: Federation, address: str) -> Path:
    """flwr-home/config.toml with the ``fedsign`` connection (TLS, verified by ca.crt) as default."""
    import tomli_w

    fed.flwr_home.mkdir(parents=True, exist_ok=True)
    path = fed.flwr_home / "config.toml"
    config = {"superlink": {"default": CONNECTION,
                            CONNECTION: {"address": address, "root-certificates": str(fed.ca_cert)}}}
    path.write_text(tomli_w.dumps(config))
    return path


def start_superlink(fed: Federation, host: str, port: int, auth: bool = True, timeout: float = 60.0) -> int:
    """flower-superlink with TLS (certs/) and, by default, SuperNode authentication."""
    hint = "create it with `fedsign federation certs`"
    command = [_bin("flower-superlink"),
               "--ssl-ca-certfile", str(check_certificate(fed.ca_cert, "CA certificate", hint)),
               "--ssl-certfile", str(check_certificate(fed.certs / "server.crt", "server certificate", hint)),
               "--ssl-keyfile", str(check_file(fed.certs / "server.key", "server key", hint)),
               "--host", host, "--port", str(port), "--disable-runtime-dependency-installation",
               "--database", str(fed.root / "superlink.db")]
    if auth:
        command.append("--enable-supernode-auth")
    local = LOOPBACK if host in ("0.0.0.0", "::") else host
    write_connection(fed, f"{local}:{port}")
    pid = fed.start("superlink", command).pid
    wait_for_tls(local, port, fed.ca_cert, timeout, pid)
    return pid


def register_node(fed: Federation, public_key: Path) -> None:
    """Register a SuperNode public key with the SuperLink (``flwr supernode register``)."""
    check_file(public_key, "SuperNode public key", "create it with `fedsign federation keys`")
    proc = subprocess.run([_bin("flwr"), "supernode", "register", str(public_key), CONNECTION],
                          env=fed.env(), capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise CLIError(f"could not register {public_key}: {last}")
    print(f"registered {public_key.name}", flush=True)


def start_supernode(fed: Federation, superlink: str, partition_id: int, num_partitions: int, *,
                    key: Path | None, ca_cert: Path, runtime_port: int, name: str | None = None,
                    max_retries: int | None = None, data_dir: str = "") -> subprocess.Popen:
    """flower-supernode for one partition, TLS verified by ``ca_cert``, authenticated by ``key``;
    its client state goes to state/ (node config ``state-dir``), its data comes from ``data_dir``
    (node config ``data-dir``) when given, else from the run's data-dir."""
    _split_address(superlink)
    check_certificate(ca_cert, "CA certificate", "copy ca.crt from the SuperLink machine")
    node_config = (f"partition-id={partition_id} num-partitions={num_partitions} "
                   f"state-dir={_toml_string(str(fed.state))}")
    if data_dir:
        if not Path(data_dir).exists():
            raise CLIError(f"data-dir {data_dir} does not exist on this machine")
        node_config += f" data-dir={_toml_string(str(Path(data_dir).resolve()))}"
    command = [_bin("flower-supernode"), "--superlink", superlink, "--root-certificates", str(ca_cert),
               "--node-config", node_config, "--port", str(runtime_port)]
    if key is not None:
        command += ["--auth-supernode-private-key", str(check_node_key(key))]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    return fed.start(name or f"supernode-{partition_id}", command)


def _toml_string(text: str) -> str:
    """``text`` as a TOML literal string for ``--node-config``."""
    if "'" in text:
        raise CLIError(f"path {text} contains a ' (not allowed in a SuperNode's node config)")
    return f"'{text}'"


def run_app(fed: Federation, run_config: list[str] | None) -> int:
    """``flwr run <project> fedsign --stream`` with the validated run config; return flwr's status."""
    import tomli_w

    if not (fed.flwr_home / "config.toml").is_file():
        raise CLIError(f"no SuperLink connection in {fed.flwr_home}; start one with `fedsign federation superlink`")
    config = load_config(run_config)
    RunResults.check_out_dir(config.out_dir, config.resume)  # checks that hold where the ServerApp
    resume_point(config.out_dir, config)  # runs on this machine; elsewhere the ServerApp refuses
    with tempfile.NamedTemporaryFile("wb", suffix=".toml", delete=False) as f:
        tomli_w.dump(config.to_dict(), f)
        overrides = f.name
    command = [_bin("flwr"), "run", str(PROJECT_DIR), CONNECTION, "--stream", "--run-config", overrides]
    print("$ " + shlex.join(command), flush=True)
    try:
        status = subprocess.call(command, env=fed.env())
    finally:
        os.unlink(overrides)
    if status == 0 and not (Path(config.out_dir) / "model.safetensors").exists():
        raise CLIError(f"flwr run ended but the run wrote no final model; see {fed.logs}/ and {config.out_dir}")
    return status


def print_rounds(out_dir: Path) -> None:
    """Per-round accuracy of a finished run."""
    from fedsign.results import read_metrics

    print(f"{'round':>5}  {'accuracy':>8}  {'loss':>7}  {'replies':>7}  {'failures':>8}  {'seconds':>7}")
    for r in read_metrics(out_dir):
        print(f"{r['round']:>5}  {r['accuracy']:>8.4f}  {r['loss']:>7.4f}  {r['num_replies']:>7}  "
              f"{r['num_failures']:>8}  {r['seconds']:>7.2f}", flush=True)


# ------------------------------------------------------------------ commands
def _federation(args: argparse.Namespace) -> Federation:
    return Federation(args.dir)


def cmd_certs(args: argparse.Namespace) -> int:
    fed = _federation(args)
    if fed.ca_cert.exists() and not args.force:
        raise CLIError(f"{fed.certs} already holds certificates; pass --force to replace them "
                       "(every SuperNode then needs the new ca.crt)")
    make_certificates(fed.certs, args.san or [LOOPBACK], days=args.days)
    print(f"wrote {fed.certs}/ca.crt, server.crt, server.key (SANs: {', '.join(args.san or [LOOPBACK])})")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    fed = _federation(args)
    names = args.name or [f"supernode-{k}" for k in range(args.num_nodes)]
    taken = [n for n in names if (fed.keys / n).exists()]
    if taken:
        raise CLIError(f"{fed.keys / taken[0]} already exists; remove it or pick another --name")
    for name in names:
        print(f"wrote {make_node_key(fed.keys, name)}")
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    fed = _federation(args)
    start_superlink(fed, args.host, args.port, auth=not args.no_auth)
    print(f"SuperLink up on {args.host}:{args.port} (TLS{', SuperNode auth' if not args.no_auth else ''}); "
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
    ids = args.partition_id or list(range(args.num_partitions))
    bad = [p for p in ids if not 0 <= p < args.num_partitions]
    if bad:
        raise CLIError(f"partition-id {bad[0]} outside [0, {args.num_partitions}); pass --num-partitions")
    ca_cert = Path(args.ca_cert) if args.ca_cert else fed.ca_cert
    keys = [None if args.no_auth else Path(args.key) if args.key else fed.keys / f"supernode-{p}" for p in ids]
    for key in keys:  # check every key before starting any node
        if key is not None:
            check_node_key(key)
    for offset, (pid, key) in enumerate(zip(ids, keys, strict=True)):
        start_supernode(fed, args.superlink, pid, args.num_partitions, key=key, ca_cert=ca_cert,
                        runtime_port=args.runtime_port + offset, data_dir=args.data_dir)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    fed = _federation(args)
    status = run_app(fed, args.run_config)
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
        start_superlink(fed, *_split_address(superlink))
        for k in range(args.num_nodes):
            register_node(fed, make_node_key(fed.keys, f"supernode-{k}"))
            start_supernode(fed, superlink, k, args.num_nodes, key=fed.keys / f"supernode-{k}",
                            ca_cert=fed.ca_cert, runtime_port=free_port())
        make_node_key(fed.keys, "unregistered")
        rogue = start_supernode(fed, superlink, 0, args.num_nodes, key=fed.keys / "unregistered",
                                ca_cert=fed.ca_cert, runtime_port=free_port(), name="unregistered",
                                max_retries=2)
        status = run_app(fed, overrides)
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

    p = command("run", cmd_run, "flwr run this app on the federation's SuperLink and stream its logs")
    add_run_config(p)

    command("down", cmd_down, "stop every process this federation directory started")

    p = command("demo", cmd_demo, "loopback SuperLink + SuperNodes with TLS and node auth, one short run, stop all",
                directory="")
    p.add_argument("--num-nodes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--strategy", default="fedsign")
    add_run_config(p)

"""A federation folder and the launchers that start its Flower processes and say truthfully
whether they came up.

A federation directory (default ``.federation/``) holds everything one machine needs::

    certs/ca.crt ca.key server.crt server.key   CA and SuperLink certificate (SANs)
    keys/<name> <name>.pub                      SuperNode ECDSA keys (OpenSSH format)
    flwr-home/config.toml                       the ``fedsign`` SuperLink connection for flwr
    state/                                      SuperNodes' per-client state (node config state-dir)
    logs/                                       one log per started process

Every process started here carries ``FEDSIGN_FEDERATION=<dir>`` in its environment, and
so do their children (SuperExec, ServerApp, ClientApps); ``stop`` finds them all in /proc
and stops them by PID. A launcher that fails stops what it started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedsign.deploy import DeployError
from fedsign.deploy import processes
from fedsign.deploy.certificates import check_certificate, check_file, check_node_key
from fedsign.deploy.processes import LOOPBACK

MARKER = "FEDSIGN_FEDERATION"
CONNECTION = "fedsign"
DEFAULT_PORT = 9093
PROJECT_DIR = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for flwr: project-local FLWR_HOME, no runtime dependency installs."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # flwr starts flower-superlink by name
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(FLWR_HOME=str(flwr_home), FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               FEDSIGN_WORKDIR=str(Path.cwd()), FLWR_DISABLE_UPDATE_CHECK="1")
    return env


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
        proc = processes.start_detached(command, self.logs / f"{name}.log", self.env(), self.root)
        print(f"started {name} (pid {proc.pid}): {shlex.join(command)}", flush=True)
        return proc

    def processes(self) -> list[int]:
        """PIDs of every live process carrying this federation's marker."""
        return processes.pids_with_env(MARKER, str(self.root))

    def stop(self, timeout: float = 10.0) -> list[int]:
        """SIGTERM every process of this federation, SIGKILL what is left after ``timeout``."""
        return processes.stop(self.processes, timeout)

    def stop_session(self, pid: int) -> None:
        """Stop the process ``start`` began as ``pid`` and every process of its session (a launcher's
        failure path: a SuperNode's SuperExec outlives it otherwise)."""
        processes.stop(lambda: processes.session(pid), timeout=5.0)


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
            raise DeployError(f"the SuperLink at {host}:{port} presented a certificate that {ca_cert} "
                              f"does not verify: {err.verify_message}") from None
        except OSError:
            if pid is not None and not processes.alive(pid):
                raise DeployError(f"the SuperLink (pid {pid}) exited during start-up") from None
            if time.monotonic() > deadline:
                raise DeployError(f"no TLS SuperLink answered at {host}:{port} within {timeout:.0f}s") from None
            time.sleep(0.3)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise DeployError(f"address '{address}' must be HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def write_connection(fed: Federation, address: str) -> Path:
    """flwr-home/config.toml with the ``fedsign`` connection (TLS, verified by ca.crt) as default."""
    import tomli_w

    fed.flwr_home.mkdir(parents=True, exist_ok=True)
    path = fed.flwr_home / "config.toml"
    config = {"superlink": {"default": CONNECTION,
                            CONNECTION: {"address": address, "root-certificates": str(fed.ca_cert)}}}
    path.write_text(tomli_w.dumps(config))
    return path


def _log_tail(log: Path, offset: int) -> str:
    """Flower's reason for an exit, from what ``log`` gained after ``offset``: the ``Exit Code``
    block, else the last ERROR line, else the last line, as one line."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "no log"
    lines = [ANSI.sub("", ln).strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "Exit Code:" in line:
            block = [re.sub(r"^.*Exit Code:", "Exit Code:", line), *lines[i + 1:i + 3]]
            return " ".join(b for b in block if not b.startswith("For more information"))
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    return (errors or lines or ["no output"])[-1]


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def check_local_address(host: str) -> None:
    """DeployError unless ``host`` resolves to an address this machine can listen on (probed by binding
    port 0 there, closed at once; nothing is sent)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise DeployError(f"--host {host} does not resolve ({err.strerror}); give an address of this machine, "
                          "or 0.0.0.0 to listen on all") from None
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            raise DeployError(f"--host {host} is not an address of this machine ({err.strerror}); give one of its "
                              "addresses, or 0.0.0.0 to listen on all") from None


def start_superlink(fed: Federation, host: str, port: int, auth: bool = True, timeout: float = 60.0) -> int:
    """flower-superlink with TLS (certs/) and, by default, SuperNode authentication. Returns once
    the process is alive, listens on ``port`` and completes a verified TLS handshake there;
    otherwise stops it and raises DeployError with Flower's reason."""
    check_local_address(host)
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
    if processes.port_answers(local, port, timeout=1.0):
        raise DeployError(f"port {port} on {local} is already in use (another SuperLink?); stop it with "
                          "`fedsign federation down` or pass another --port")
    write_connection(fed, f"{local}:{port}")
    log = fed.logs / "superlink.log"
    offset = _log_size(log)
    proc = fed.start("superlink", command)
    try:
        wait_for_tls(local, port, fed.ca_cert, timeout, proc.pid)
        if port not in processes.listening_ports(processes.descendants(proc.pid)):
            raise DeployError(f"port {port} answered, but not from the SuperLink (pid {proc.pid})")
    except DeployError as err:
        fed.stop_session(proc.pid)
        raise DeployError(f"{err}; its log says: {_log_tail(log, offset)}") from None
    return proc.pid


def register_node(fed: Federation, public_key: Path) -> None:
    """Register a SuperNode public key with the SuperLink (``flwr supernode register``)."""
    check_file(public_key, "SuperNode public key", "create it with `fedsign federation keys`")
    proc = subprocess.run([_bin("flwr"), "supernode", "register", str(public_key), CONNECTION],
                          env=fed.env(), capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise DeployError(f"could not register {public_key}: {last}")
    print(f"registered {public_key.name}", flush=True)


def start_supernode(fed: Federation, superlink: str, partition_id: int, num_partitions: int, *,
                    key: Path | None, ca_cert: Path, runtime_port: int, name: str | None = None,
                    max_retries: int | None = None, data_dir: str = "") -> subprocess.Popen:
    """flower-supernode for one partition, TLS verified by ``ca_cert``, authenticated by ``key``;
    its client state goes to state/ (node config ``state-dir``), its data comes from ``data_dir``
    (node config ``data-dir``) when given, else from the run's data-dir."""
    split_address(superlink)
    ca_cert = check_certificate(ca_cert, "CA certificate", "copy ca.crt from the SuperLink machine").resolve()
    node_config = (f"partition-id={partition_id} num-partitions={num_partitions} "
                   f"state-dir={_toml_string(str(fed.state))}")
    if data_dir:
        if not Path(data_dir).exists():
            raise DeployError(f"data-dir {data_dir} does not exist on this machine")
        node_config += f" data-dir={_toml_string(str(Path(data_dir).resolve()))}"
    command = [_bin("flower-supernode"), "--superlink", superlink, "--root-certificates", str(ca_cert),
               "--node-config", node_config, "--port", str(runtime_port)]
    if key is not None:
        command += ["--auth-supernode-private-key", str(check_node_key(key).resolve())]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    return fed.start(name or f"supernode-{partition_id}", command)


def wait_connected(fed: Federation, proc: subprocess.Popen, name: str, offset: int, timeout: float) -> str:
    """Wait until the SuperNode ``proc`` logged its SuperNode ID (the SuperLink accepted it).

    DeployError with Flower's reason if it exits or is not accepted within ``timeout``
    (then it is stopped); returns the node id."""
    log = fed.logs / f"{name}.log"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                found = re.search(rb"SuperNode ID: (\d+)", f.read())
        except OSError:
            found = None
        if found:
            return found[1].decode()
        if proc.poll() is not None:
            fed.stop_session(proc.pid)
            raise DeployError(f"{name} was refused (exit code {proc.returncode}): {_log_tail(log, offset)}")
        if time.monotonic() > deadline:
            fed.stop_session(proc.pid)
            raise DeployError(f"{name} did not connect within {timeout:.0f}s (stopped it): {_log_tail(log, offset)}")
        time.sleep(0.3)


def _toml_string(text: str) -> str:
    """``text`` as a TOML literal string for ``--node-config``."""
    if "'" in text:
        raise DeployError(f"path {text} contains a ' (not allowed in a SuperNode's node config)")
    return f"'{text}'"


def online_nodes(fed: Federation) -> int | str:
    """How many SuperNodes the SuperLink lists as online, or why it could not be asked."""
    proc = subprocess.run([_bin("flwr"), "supernode", "ls", CONNECTION, "--format", "json"], env=fed.env(),
                          capture_output=True, text=True)
    try:
        nodes = json.loads(proc.stdout)["nodes"]
    except (ValueError, KeyError, TypeError):
        lines = [ANSI.sub("", ln).strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return f"`flwr supernode ls` failed: {lines[-1] if lines else 'no output'}"
    return sum(1 for n in nodes if n.get("status") == "online")


def wait_for_nodes(fed: Federation, count: int, timeout: float, poll: float = 2.0) -> None:
    """Wait until ``count`` SuperNodes are online, printing how many are whenever that changes."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        online = online_nodes(fed)
        if online != last:
            shown = online if isinstance(online, int) else f"? ({online})"
            print(f"waiting for SuperNodes: {shown} of {count} connected", flush=True)
            last = online
        if isinstance(online, int) and online >= count:
            return
        if time.monotonic() > deadline:
            got = f"only {online} of {count} SuperNodes connected" if isinstance(online, int) else \
                f"could not count the SuperNodes ({online})"
            raise DeployError(f"{got} within {timeout:.0f}s (--wait-nodes); start the missing ones with "
                              "`fedsign federation supernode` and check their logs")
        time.sleep(poll)


def run_app(fed: Federation, run_config: dict, num_nodes: int, wait_nodes: float) -> int:
    """``flwr run <project> fedsign --stream`` with ``run_config`` once ``num_nodes`` SuperNodes are
    online; return flwr's status. If interrupted, the run is stopped on the SuperLink (``flwr stop``)."""
    import tomli_w

    if not (fed.flwr_home / "config.toml").is_file():
        raise DeployError(f"no SuperLink connection in {fed.flwr_home}; start one with "
                          "`fedsign federation superlink`")
    wait_for_nodes(fed, num_nodes, wait_nodes)
    with tempfile.NamedTemporaryFile("wb", suffix=".toml", delete=False) as f:
        tomli_w.dump(run_config, f)
        overrides = f.name
    command = [_bin("flwr"), "run", str(PROJECT_DIR), CONNECTION, "--stream", "--run-config", overrides]
    print("$ " + shlex.join(command), flush=True)
    run_id = None
    proc = subprocess.Popen(command, env=fed.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if run_id is None and (found := re.search(r"Successfully started run (\d+)", line)):
                run_id = found[1]
        return proc.wait()
    except KeyboardInterrupt:
        if run_id is not None:
            subprocess.run([_bin("flwr"), "stop", run_id, CONNECTION], env=fed.env(), capture_output=True,
                           timeout=60)
        raise
    finally:
        if proc.poll() is None:
            processes.stop(lambda: [proc.pid] if processes.alive(proc.pid) else [], timeout=5.0)
        proc.wait()
        os.unlink(overrides)


def serverapps(fed: Federation) -> list[int]:
    """ServerApp processes of this federation."""
    mine = set(fed.processes())
    return [p for p in processes.pids_with_cmdline("flwr-serverapp") if p in mine]

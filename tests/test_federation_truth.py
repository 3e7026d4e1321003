"""`fedsign federation` tells the truth: "up" only after the process is alive and its port
answers, a refused SuperNode is an error carrying Flower's reason, `run` shows how many
SuperNodes are connected and gives up after --wait-nodes, and no failure path leaves a
process running (checked by PID)."""

import datetime
import hashlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsign.cli import main
from fedsign.deploy import DeployError
from fedsign.deploy import federation as deploy
from fedsign.deploy import processes
from fedsign.deploy.certificates import check_certificate, make_certificates, make_node_key
from fedsign.deploy.federation import Federation, wait_connected, wait_for_nodes

RUN = ("strategy='fedavg' dataset='digits' num-clients=2 clients-per-round=2 num-rounds=1 local-epochs=1 "
       "seed=0 device='cpu'")


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def one_error(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def expire(certs: Path) -> None:
    """Re-issue server.crt, signed by ca.key, valid only until yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    old = x509.load_pem_x509_certificate((certs / "server.crt").read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
            .public_key(old.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3)).not_valid_after(now - datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA384()))
    (certs / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def fed(tmp_path) -> Federation:
    fed = Federation(tmp_path / "fed")
    make_certificates(fed.certs, ["127.0.0.1"])
    make_node_key(fed.keys, "supernode-0")
    return fed


# ------------------------------------------------------------- the process helper
def test_processes_found_by_marker_and_stopped_by_pid(fed):
    proc = fed.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert fed.processes() == [proc.pid] and processes.alive(proc.pid)
    finally:
        assert fed.stop(timeout=5) == [proc.pid]
    proc.wait()
    assert not processes.alive(proc.pid) and fed.processes() == []


def test_listening_ports_belong_to_the_process_tree(fed):
    port = processes.free_port()
    code = (f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
            "print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert port in processes.listening_ports(processes.descendants(proc.pid))
        assert processes.port_answers("127.0.0.1", port)
        assert port not in processes.listening_ports([])
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------- SuperLink
def test_superlink_on_a_taken_port_is_refused_before_anything_starts(fed, capfd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = snapshot(fed.root)
        assert main(["federation", "superlink", "--dir", str(fed.root), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in one_error(capfd)
    assert snapshot(fed.root) == before and fed.processes() == []


def test_expired_certificate_is_refused_before_the_superlink_starts(fed, capfd):
    expire(fed.certs)
    with pytest.raises(DeployError, match="expired on"):
        check_certificate(fed.certs / "server.crt", "server certificate", "renew it")
    before = snapshot(fed.root)
    assert main(["federation", "superlink", "--dir", str(fed.root), "--port", str(processes.free_port())]) == 2
    assert "server certificate" in one_error(capfd) and snapshot(fed.root) == before
    assert fed.processes() == []


# ------------------------------------------------------------- SuperNodes
def _fake_node(fed: Federation, name: str, script: str) -> tuple[subprocess.Popen, int]:
    log = fed.logs / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("an earlier run of this node\nSuperNode ID: 1\n")  # only what follows the offset counts
    offset = log.stat().st_size
    return fed.start(name, [sys.executable, "-c", script]), offset


def test_refused_supernode_reports_flowers_reason(fed):
    script = ("import sys; print('\\x1b[91mERROR \\x1b[0m: Exit Code: 305'); "
              "print('Failed to initialize the connection to the SuperLink.'); "
              "print('certificate verify failed'); print(); print('For more information, visit: x'); sys.exit(1)")
    proc, offset = _fake_node(fed, "supernode-0", script)
    with pytest.raises(DeployError) as err:
        wait_connected(fed, proc, "supernode-0", offset, timeout=30)
    assert str(err.value) == ("supernode-0 was refused (exit code 1): Exit Code: 305 Failed to initialize the "
                              "connection to the SuperLink. certificate verify failed")


def test_supernode_is_up_only_once_the_superlink_gave_it_an_id(fed):
    proc, offset = _fake_node(fed, "supernode-1", "import time; time.sleep(1); print('SuperNode ID: 77', "
                                                  "flush=True); time.sleep(60)")
    try:
        assert wait_connected(fed, proc, "supernode-1", offset, timeout=30) == "77"
    finally:
        fed.stop(timeout=5)


def test_supernode_that_never_connects_is_stopped(fed):
    proc, offset = _fake_node(fed, "supernode-2", "import time; print('retrying', flush=True); time.sleep(60)")
    with pytest.raises(DeployError, match="did not connect within 1s .stopped it.: retrying"):
        wait_connected(fed, proc, "supernode-2", offset, timeout=1)
    proc.wait(timeout=10)
    assert fed.processes() == []


# ------------------------------------------------------------- run
def test_run_shows_connected_nodes_and_gives_up_after_wait_nodes(fed, monkeypatch, capsys):
    counts = iter([0, 1, 1, 1, 1, 1, 1, 1])
    monkeypatch.setattr(deploy, "online_nodes", lambda _: next(counts))
    start = time.monotonic()
    with pytest.raises(DeployError, match=r"only 1 of 2 SuperNodes connected within 0s \(--wait-nodes\)"):
        wait_for_nodes(fed, 2, timeout=0.3, poll=0.1)
    assert time.monotonic() - start < 5
    assert capsys.readouterr().out.splitlines() == ["waiting for SuperNodes: 0 of 2 connected",
                                                   "waiting for SuperNodes: 1 of 2 connected"]


def test_interrupted_run_is_stopped_on_the_superlink(fed, tmp_path, monkeypatch):
    """Ctrl-C while `flwr run` streams: `flwr stop <run-id> fedsign` is called and `flwr run` is stopped."""
    import threading

    calls = tmp_path / "calls"
    fake = tmp_path / "flwr"
    fake.write_text(f"#!{sys.executable}\nimport sys, time\nopen({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    "if sys.argv[1] == 'run':\n    print('Successfully started run 42', flush=True)\n    time.sleep(60)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(deploy, "_bin", lambda name: str(fake))
    monkeypatch.setattr(deploy, "wait_for_nodes", lambda *a: None)
    deploy.write_connection(fed, "127.0.0.1:1")
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):  # the first Popen is `flwr run`: Ctrl-C a second after it started
        proc = real_popen(*args, **kwargs)
        if not started:
            main = threading.main_thread().ident  # a real SIGINT: it interrupts the blocking read
            threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT)).start()
        started.append(proc)
        return proc

    monkeypatch.setattr(deploy.subprocess, "Popen", popen)
    # Python leaves SIGINT ignored when it starts ignored (a background job of a non-interactive shell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            deploy.run_app(fed, {"num-rounds": 1}, 2, 10.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls.read_text().splitlines()[-1] == "stop 42 fedsign"
    assert started and not processes.alive(started[0].pid)


def test_run_rejects_a_non_positive_wait(fed, capfd):
    assert main(["federation", "run", "--dir", str(fed.root), "--wait-nodes", "0", "-c", RUN]) == 2
    assert "--wait-nodes must be > 0" in one_error(capfd)


# ------------------------------------------------------------- real Flower processes
@pytest.mark.flower
def test_real_superlink_and_supernodes_report_truthfully(fed, tmp_path, capfd):
    """A second SuperLink on a taken port, a SuperNode with a foreign CA, a SuperLink whose
    certificate its CA does not verify, a run missing a node: each is an error, nothing is left."""
    port = processes.free_port()
    assert main(["federation", "superlink", "--dir", str(fed.root), "--port", str(port)]) == 0
    first = capfd.readouterr().out
    pids = set(fed.processes())
    assert "SuperLink up (pid" in first and pids
    try:
        assert main(["federation", "superlink", "--dir", str(fed.root), "--port", str(port)]) == 2
        assert "already in use" in one_error(capfd) and set(fed.processes()) == pids  # the first one stays
        assert main(["federation", "register", "--dir", str(fed.root)]) == 0
        other = tmp_path / "other"
        make_certificates(other, ["127.0.0.1"])
        assert main(["federation", "supernode", "--dir", str(fed.root), "--superlink", f"127.0.0.1:{port}",
                     "--num-partitions", "2", "--partition-id", "0", "--ca-cert", str(other / "ca.crt"),
                     "--runtime-port", str(processes.free_port()), "--connect-timeout", "60"]) == 2
        line = one_error(capfd)
        assert "supernode-0 was refused" in line and "Exit Code: 305" in line, line
        assert set(fed.processes()) == pids
        assert main(["federation", "supernode", "--dir", str(fed.root), "--superlink", f"127.0.0.1:{port}",
                     "--num-partitions", "2", "--partition-id", "0",
                     "--runtime-port", str(processes.free_port())]) == 0
        assert "supernode-0 up (pid" in capfd.readouterr().out
        out = tmp_path / "run"
        assert main(["federation", "run", "--dir", str(fed.root), "--wait-nodes", "5",
                     "-c", f"{RUN} out-dir='{out}'"]) == 2
        captured = capfd.readouterr()
        assert captured.err.strip().splitlines() == [
            "error: only 1 of 2 SuperNodes connected within 5s (--wait-nodes); start the missing ones with "
            "`fedsign federation supernode` and check their logs"]
        assert "waiting for SuperNodes: 1 of 2 connected" in captured.out
        assert not out.exists()
    finally:
        started = set(fed.processes())
        fed.stop()
    assert not any(processes.alive(p) for p in started | pids)

    other_fed = Federation(tmp_path / "fed2")  # server.crt signed by a CA that ca.crt is not
    make_certificates(other_fed.certs, ["127.0.0.1"])
    (other_fed.certs / "ca.crt").write_bytes((tmp_path / "other" / "ca.crt").read_bytes())
    assert main(["federation", "superlink", "--dir", str(other_fed.root), "--port",
                 str(processes.free_port())]) == 2
    assert "does not verify" in one_error(capfd)
    assert other_fed.processes() == []

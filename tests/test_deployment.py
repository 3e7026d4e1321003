"""Deployment: certificates and SuperNode keys, client state on a SuperNode's disk, the loopback
federation demo (TLS + SuperNode authentication) and a simulation on a two-node Ray cluster.

Tests marked ``flower`` start real Flower / Ray processes and take a minute or two each;
``pytest -m "not flower"`` skips them.
"""

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedsign.algorithms import client_hyperparameters
from fedsign.client_app import app as client_app
from fedsign.config import RunConfig
from fedsign.deploy.certificates import make_certificates, make_node_key
from fedsign.deploy.federation import Federation
from fedsign.deploy.processes import free_port
from fedsign.engines import InProcessGrid
from fedsign.results import load_model_state, read_metrics
from fedsign.models import float_state
from fedsign.task import build_run_model
from fedsign.tensors import to_array_record

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_superlink_certificate_names_its_addresses_and_chains_to_the_ca(tmp_path):
    make_certificates(tmp_path, ["10.1.2.3", "link.example.org"])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1"}
    assert set(sans.get_values_for_type(x509.DNSName)) == {"link.example.org", "localhost"}
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, ec.ECDSA(server.signature_hash_algorithm))
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0 and (tmp_path / "ca.key").stat().st_mode & 0o077 == 0


def test_supernode_keys_are_what_flower_loads_and_registers(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    public = make_node_key(tmp_path, "supernode-0")
    private = load_ssh_private_key((tmp_path / "supernode-0").read_bytes(), None)  # as flower-supernode does
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert b"BEGIN PUBLIC KEY" in try_load_public_key(public)  # as `flwr supernode register` does


# ------------------------------------------------------ client state on disk
def _train(grid: InProcessGrid, arrays, server_round: int):
    config = RunConfig.from_mapping(grid.contexts[1].run_config)
    sent = {h.key: getattr(config, h.field) for h in client_hyperparameters(config.strategy, config.sign_gamma)}
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round,
                                                                     "state-key": "run-a", **sent})})
    message = Message(content, dst_node_id=1, message_type=MessageType.TRAIN)
    (reply,) = grid.send_and_receive([message])
    assert not reply.has_error(), reply.error.reason
    return reply.content["arrays"]


def _same(a, b) -> bool:
    return all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize("strategy", ["feddyn", "moon"])
def test_client_state_on_disk_survives_a_supernode_restart(tmp_path, strategy):
    config = RunConfig.from_overrides(f"strategy='{strategy}' num-clients=10 clients-per-round=10 local-epochs=1 "
                                      "moon-out-dim=16 device='cpu'").resolved()

    def supernode(state_dir: Path | None = None) -> InProcessGrid:
        """A freshly started node (empty context), keeping state on disk if ``state_dir``."""
        grid = InProcessGrid(client_app, 10, config.to_dict())
        if state_dir is not None:
            grid.contexts[1].node_config["state-dir"] = str(state_dir)
        return grid

    start = to_array_record(float_state(build_run_model(config)))
    in_memory = supernode()  # reference: one node process for both rounds
    round1 = _train(in_memory, start, 1)
    second = ArrayRecord({k: Array((a.numpy() + round1[k].numpy()) / 2) for k, a in start.items()})  # a new global
    reference = _train(in_memory, second, 2)

    assert _same(_train(supernode(tmp_path), start, 1), round1)
    assert (tmp_path / "run-a" / "partition-0.safetensors").is_file()
    assert _same(_train(supernode(tmp_path), second, 2), reference)  # restarted, state read from disk
    assert not _same(_train(supernode(), second, 2), reference)  # restarted without disk: state lost


# ------------------------------------------------------------- Flower processes
@pytest.mark.flower
def test_federation_demo_runs_fedsign_over_tls_with_node_auth_and_refuses_an_unknown_key(tmp_path):
    fed_dir = tmp_path / "fed"
    proc = subprocess.run([sys.executable, "-m", "fedsign.cli", "federation", "demo", "--dir", str(fed_dir)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "--enable-supernode-auth" in out and "--ssl-certfile" in out and "--root-certificates" in out
    assert "unregistered SuperNode key refused" in out
    rows = read_metrics(fed_dir / "run")
    assert [r["round"] for r in rows] == [1, 2] and all(r["num_replies"] == 2 for r in rows)
    assert all(re.search(rf"^\s+{r['round']}\s+{r['accuracy']:.4f}", out, re.M) for r in rows)
    assert '"strategy": "fedsign"' in (fed_dir / "run" / "config.json").read_text()
    assert Federation(fed_dir).processes() == []


def _kill_session(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _session_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _session_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


@pytest.mark.flower
def test_simulation_on_a_two_node_ray_cluster_with_injected_failures(tmp_path):
    """`ray start --head` + a second `ray start --address` node on loopback; `fedsign simulate
    --ray-address` runs on them (one 1-CPU actor per node); two of three clients fail."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
               FLWR_LOCAL_CONTROL_API_PORT=str(free_port()))
    temp = Path(tempfile.mkdtemp(prefix="fedsign-ray-", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp}",
              f"--dashboard-agent-listen-port={free_port()}"]
    head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
            f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}", *common]
    worker = [str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}", *common]
    sessions = []
    try:
        for command in (head, worker):
            proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            sessions.append(proc.pid)
            output, _ = proc.communicate(timeout=180)
            assert proc.returncode == 0, output[-2000:]
        out = tmp_path / "out"
        sim = subprocess.run(
            [sys.executable, "-m", "fedsign.cli", "simulate", "--ray-address", f"127.0.0.1:{port}",
             "--flwr-home", str(tmp_path / "flwr"), "--client-cpus", "1", "-c",
             "strategy='fedavg' num-clients=3 clients-per-round=3 num-rounds=1 local-epochs=1 device='cpu' "
             f"fail-partitions='1:raise 2:nan' out-dir='{out}'"],
            env=env, capture_output=True, text=True, timeout=600)
        assert sim.returncode == 0, sim.stdout[-3000:] + sim.stderr[-3000:]
        rows = read_metrics(out)
        assert [(r["num_replies"], r["num_failures"]) for r in rows] == [(1, 2)]
        model = load_model_state(out / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in model.values())
        # The run's actors (job 01000000) ran on both Ray nodes of this cluster.
        logs = next(temp.glob("session_*[0-9]")) / "logs"
        pids = {m[1] for f in logs.glob("worker-*-01000000-*.out") if (m := re.search(r"-(\d+)\.out$", f.name))}
        nodes = {m[1] for f in logs.glob("python-core-worker-*.log") if f.stem.rsplit("_", 1)[-1] in pids
                 for m in [re.search(r"node_id=([0-9a-f]+)", f.read_text(errors="replace"))] if m}
        assert len(nodes) == 2, nodes
    finally:
        for pgid in sessions:
            _kill_session(pgid)
        shutil.rmtree(temp, ignore_errors=True)
    assert not any(_session_alive(pgid) for pgid in sessions)

"""Bad input: each malformed input gets one clear line ``error: ...`` (exit status 2) and
changes nothing already written; the valid input they are made from passes the same checks.

The cases here come on top of the invalid run-config values of test_config.py: run-config
syntax and files, failure-injection specs, data directories with missing or corrupt files,
taken out-dirs, truncated / foreign / inconsistent checkpoints, resumes with a different
config, and certificates and keys that do not exist or are not what they claim.
"""

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from fedsign.checkpoint import CHECKPOINT_NAME, decode, encode
from fedsign.cli import main
from fedsign.config import RunConfig
from fedsign.engines import run_inprocess
from fedsign.deploy.certificates import make_certificates, make_node_key
from fedsign.deploy.federation import Federation, write_connection

RUN = ("strategy='fedavg' dataset='digits' num-clients=2 clients-per-round=2 num-rounds=2 local-epochs=1 "
       "checkpoint-every=1 seed=1 device='cpu'")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A finished run (with checkpoint) and broken copies of it, a federation directory with
    certificates, keys and a SuperLink connection, and broken data sources."""
    root = tmp_path_factory.mktemp("world")
    run = root / "run"
    run_inprocess(RunConfig.from_overrides(f"{RUN} out-dir='{run}'").resolved(), progress=False)
    checkpoint = (run / CHECKPOINT_NAME).read_bytes()
    for name, damage in {
        "run-truncated": lambda p: p.write_bytes(checkpoint[: len(checkpoint) // 2]),
        "run-garbage": lambda p: p.write_bytes(b"\x00not a checkpoint" * 64),
        "run-foreign": lambda p: p.write_bytes(save({"model": np.zeros(3, np.float32)})),
        "run-inconsistent": lambda p: p.write_bytes(encode(replace(decode(p.read_bytes(), ""), rows=[]))),
        "run-badjson": lambda p: (p.unlink(), (p.parent / "config.json").write_text("{not json")),
    }.items():
        shutil.copytree(run, root / name)
        damage(root / name / CHECKPOINT_NAME)

    fed = Federation(root / "fed")
    make_certificates(fed.certs, ["127.0.0.1"])
    make_node_key(fed.keys, "supernode-0")
    write_connection(fed, "127.0.0.1:1")
    (root / "fed-nokeys").mkdir()
    make_certificates(root / "fed-nokeys" / "certs", ["127.0.0.1"])

    (root / "mnist-empty").mkdir()
    corrupt = root / "mnist-corrupt"
    corrupt.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (corrupt / stem).write_bytes(b"\x00\x00\x08\x03garbage")
    (root / "cifar10-truncated.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    (root / "bad.toml").write_text("num-rounds = [\n")
    (root / "a-file").write_text("not a directory\n")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (directories: 'dir')."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def resume(out: str, config: str = RUN) -> list[str]:
    return ["run", "--quiet", "-c", f"{config} out-dir='{{root}}/{out}' resume=true"]


def supernode(*extra: str) -> list[str]:
    return ["federation", "supernode", "--dir", "{root}/fed", "--num-partitions", "1", *extra]


CASES = {
    # run-config syntax, files and failure-injection specs
    "missing run-config file": (["validate", "-c", "/nonexistent/run.toml"], "does not exist"),
    "malformed run-config file": (["validate", "-c", "{root}/bad.toml"], "valid .toml"),
    "key without value": (["validate", "-c", "num-rounds"], "near 'num-rounds'"),
    "unknown failure mode": (["validate", "-c", "fail-partitions='1:explode'"], "mode 'explode'"),
    "failure spec syntax": (["validate", "-c", "fail-partitions='raise@1'"], "PARTITION:MODE"),
    "failure partition out of range": (["validate", "-c", "num-clients=4 clients-per-round=4 "
                                                          "fail-partitions='9:raise'"], "partition 9"),
    "crash in the in-process engine": (["run", "-c", "fail-partitions='1:crash' out-dir='{root}/new'"], "crash"),
    "crash on Ray": (["simulate", "-c", "fail-partitions='1:crash' out-dir='{root}/new'"], "crash"),
    "zero round-timeout": (["validate", "-c", "round-timeout=0"], "round-timeout"),
    "negative checkpoint-every": (["validate", "-c", "checkpoint-every=-2"], "checkpoint-every"),
    # data sources
    "mnist dir without files": (["run", "-c", "dataset='mnist' data-dir='{root}/mnist-empty' "
                                              "out-dir='{root}/new'"], "data-dir"),
    "mnist files corrupt": (["run", "-c", "dataset='mnist' data-dir='{root}/mnist-corrupt' "
                                          "out-dir='{root}/new'"], "mnist: cannot read"),
    "cifar10 archive truncated": (["run", "-c", "dataset='cifar10' model='cnn' "
                                                "data-dir='{root}/cifar10-truncated.tar.gz' out-dir='{root}/new'"],
                                  "cifar10"),
    "mnist data-dir is a file": (["run", "-c", "dataset='mnist' data-dir='{root}/a-file' out-dir='{root}/new'"],
                                 "data-dir"),
    # out-dirs and checkpoints
    "out-dir taken without resume": (["run", "-c", f"{RUN} out-dir='{{root}}/run'"], "not empty"),
    "out-dir is a file": (["run", "-c", f"{RUN} out-dir='{{root}}/a-file'"], "is a file"),
    "truncated checkpoint": (resume("run-truncated"), "unreadable"),
    "garbage checkpoint": (resume("run-garbage"), "unreadable"),
    "foreign checkpoint": (resume("run-foreign"), "not a FedSign checkpoint"),
    "inconsistent checkpoint": (resume("run-inconsistent"), "inconsistent"),
    "resume with another lr": (resume("run", f"{RUN} lr=0.1"), "lr: 0.05 -> 0.1"),
    "resume with another strategy": (resume("run", RUN.replace("'fedavg'", "'fedprox'")), "strategy: 'fedavg' -> 'fedprox'"),
    "resume with corrupt config.json": (resume("run-badjson"), "not valid JSON"),
    # federation: certificates, keys, addresses
    "SuperLink without certificates": (["federation", "superlink", "--dir", "{root}/fed-missing"],
                                       "does not exist"),
    "CA certificate missing": (supernode("--ca-cert", "/nonexistent/ca.crt"), "does not exist"),
    "CA certificate not a certificate": (supernode("--ca-cert", "{root}/bad.toml"), "not a PEM certificate"),
    "SuperNode key missing": (supernode("--key", "/nonexistent/key"), "does not exist"),
    "SuperNode key not a key": (supernode("--key", "{root}/fed/certs/ca.crt"), "not an OpenSSH ECDSA"),
    "SuperLink address without port": (supernode("--superlink", "nohost"), "HOST:PORT"),
    "partition outside num-partitions": (supernode("--partition-id", "5"), "outside [0, 1)"),
    "one of the default keys missing": (["federation", "supernode", "--dir", "{root}/fed", "--num-partitions", "2"],
                                        "supernode-1 does not exist"),
    "register a missing public key": (["federation", "register", "--dir", "{root}/fed", "/nonexistent.pub"],
                                      "does not exist"),
    "certificates exist": (["federation", "certs", "--dir", "{root}/fed"], "--force"),
    "key exists": (["federation", "keys", "--dir", "{root}/fed", "--name", "supernode-0"], "already exists"),
    "run without a SuperLink connection": (["federation", "run", "--dir", "{root}/fed-nokeys", "-c", RUN],
                                           "no SuperLink connection"),
    "federation run resumes with another seed": (["federation", "run", "--dir", "{root}/fed", "-c",
                                                  RUN.replace("seed=1", "seed=9") + " out-dir='{root}/run' resume=true"],
                                                 "seed: 1 -> 9"),
}


@pytest.fixture
def sandbox(world, monkeypatch) -> Path:
    """Run from inside ``world`` with home and decode cache there too, so that the snapshot sees every
    write, relative paths and the cache included."""
    for name in ("cwd", "home"):
        (world / name).mkdir(exist_ok=True)
    monkeypatch.chdir(world / "cwd")
    monkeypatch.setenv("HOME", str(world / "home"))
    monkeypatch.setenv("FEDSIGN_CACHE", str(world / "home" / "cache"))
    return world


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_changes_nothing(sandbox, name, capfd):
    argv, expected = CASES[name]
    before = snapshot(sandbox)
    status = main([arg.replace("{root}", str(sandbox)) for arg in argv])
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert snapshot(sandbox) == before
    assert not Federation(sandbox / "fed").processes()


def test_good_input_passes_the_same_checks(sandbox, capfd):
    """The control: the run config every case starts from is accepted, silently on stderr."""
    before = snapshot(sandbox)
    assert main(["validate", "-c", RUN]) == 0
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out.startswith("ok: fedavg on digits")
    assert snapshot(sandbox) == before


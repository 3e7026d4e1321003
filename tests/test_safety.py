"""The results folder can be trusted: nothing in it runs code, nothing is lost, every outcome is named.

Each refused case asserts the exit status, the single ``error:`` line and that the out-dir is
byte-identical afterwards. Cases: pickle payloads (checkpoint, CIFAR batch), resume on a folder
no run wrote, a second writer (lock), a wrong-shaped checkpoint, values that used to pass
validation and crash later, archives (missing class, gzip bomb), diverged runs, Ctrl-C,
file modes and strict JSON.
"""

import gzip
import hashlib
import io
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsign.checkpoint import CHECKPOINT_NAME, LEGACY_NAME, decode, encode, load_checkpoint
from fedsign.cli import main
from fedsign.config import RunConfig
from fedsign.data import DataSourceError, load_dataset
from fedsign.engines import run_inprocess
from fedsign.results import LOCK_NAME, MARKER_NAME, RunLock, RunResults, read_marker

RUN = ("strategy='fedavg' dataset='digits' num-clients=2 clients-per-round=2 num-rounds=2 local-epochs=1 "
       "seed=3 device='cpu'")
ROOT = Path(__file__).resolve().parents[1]


def conf(overrides: str = "") -> str:
    """RUN with the keys ``overrides`` sets replaced by its values."""
    keys = {item.split("=")[0] for item in overrides.split()}
    return " ".join([item for item in RUN.split() if item.split("=")[0] not in keys] + [overrides])


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (directories: 'dir')."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


class Payload:
    """Unpickling this creates the file ``path`` (what an attacker's checkpoint would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-round run with a checkpoint every round (the default)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_inprocess(RunConfig.from_overrides(f"{RUN} out-dir='{out}'").resolved(), progress=False)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def refused(argv: list[str], capfd, folder: Path, expected: str, status: int = 2) -> list[str]:
    """Run the CLI; assert ``status``, one ``error:`` line containing ``expected``, ``folder`` unchanged."""
    before = snapshot(folder) if folder.exists() else None
    code = main(argv)
    err = capfd.readouterr().err.strip().splitlines()
    assert code == status, err
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert (snapshot(folder) if folder.exists() else None) == before
    return err


# ---------------------------------------------------------------- nothing executes
def test_pickle_checkpoint_is_refused_unread(finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    (out / CHECKPOINT_NAME).unlink()
    victim = tmp_path / "pwned"
    torch.save({"format": 1, "payload": Payload(victim)}, out / LEGACY_NAME)
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, "pickle checkpoint")
    assert not victim.exists()


def test_pickle_payload_named_like_a_checkpoint_is_unreadable(finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    victim = tmp_path / "pwned"
    (out / CHECKPOINT_NAME).write_bytes(pickle.dumps(Payload(victim)))
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, "unreadable")
    refused(["federation", "run", "--dir", str(tmp_path / "fed"), "-c", f"{RUN} out-dir='{out}' resume=true"],
            capfd, out, "unreadable")
    assert not victim.exists()


def test_cifar_batch_with_a_payload_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    victim = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Payload(victim), b"labels": [0]}, protocol=2))
    with pytest.raises(DataSourceError, match="refusing to unpickle"):
        load_dataset("cifar10", folder, cache_dir=tmp_path / "cache")
    assert not victim.exists()


def test_checkpoint_round_trips_strategy_state_and_order(finished):
    checkpoint = load_checkpoint(finished)
    again = decode(encode(checkpoint), "memory")
    assert list(again.arrays) == list(checkpoint.arrays)
    assert isinstance(again.strategy["rng"], tuple) and again.strategy["rng"] == checkpoint.strategy["rng"]
    import random

    random.Random().setstate(again.strategy["rng"])  # a valid RNG state, restored as tuples


# ---------------------------------------------------------------- out-dir contract
def test_resume_on_a_folder_no_run_wrote_is_refused(tmp_path, capfd):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.csv").write_text("my own numbers\n")
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{folder}' resume=true"], capfd, folder,
            "not a FedSign run folder")
    refused(["validate", "-c", f"{RUN} out-dir='{folder}' resume=true"], capfd, folder, "not a FedSign run folder")


def test_second_writer_is_refused_while_the_lock_is_held(finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    lock = RunLock(out).acquire()
    try:
        refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, "in use by another run")
    finally:
        lock.release()
    assert main(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"]) == 0  # free again


def test_lock_is_released_when_the_writer_is_killed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from fedsign.results import RunLock; RunLock(Path(sys.argv[1])).acquire().stamp(); "
                               "print('held', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=f"pid {holder.pid}"):
            RunLock.check_free(out)
    finally:
        holder.kill()
        holder.wait()
    RunLock.check_free(out)  # the kernel dropped the lock with the process
    assert (out / LOCK_NAME).is_file()


def test_resume_without_checkpoint_says_it_restarts(tmp_path, capfd):
    out = tmp_path / "run"
    assert main(["run", "--quiet", "-c", f"{RUN} checkpoint-every=0 out-dir='{out}'"]) == 0
    capfd.readouterr()
    assert main(["run", "--quiet", "-c", f"{RUN} checkpoint-every=0 out-dir='{out}' resume=true"]) == 0
    lines = capfd.readouterr().out.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("resume:")] == [
        f"resume: {out} has no checkpoint (checkpoint-every=0); starting again from round 1 and replacing its metrics"]


def test_checkpoint_every_defaults_to_every_round():
    assert RunConfig().checkpoint_every == 1


def test_wrong_shaped_checkpoint_is_refused_before_anything_is_written(finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    checkpoint = load_checkpoint(out)
    name = next(iter(checkpoint.arrays))
    arrays = {**checkpoint.arrays, name: np.zeros((3, 3), np.float32)}
    (out / CHECKPOINT_NAME).write_bytes(encode(replace(checkpoint, arrays=arrays)))
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out,
            f"'{name}' is [3, 3] float32")


def test_bad_strategy_state_in_checkpoint_is_refused(finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    checkpoint = load_checkpoint(out)
    (out / CHECKPOINT_NAME).write_bytes(encode(replace(checkpoint, strategy={"rng": [1, 2]})))
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, "strategy state")


# ---------------------------------------------------------------- validation
def _too_long(tmp: Path) -> str:
    return str(tmp / ("x" * 300))


VALIDATION = {
    "infinite round-timeout": ("round-timeout=inf", "round-timeout must be at most"),
    "nan round-timeout": ("round-timeout=nan", "round-timeout must be > 0"),
    "1000 clients on digits": ("num-clients=1000 clients-per-round=10", "partition: min_size=10 x 1000 clients"),
    "tiny dirichlet-alpha": ("num-clients=20 clients-per-round=5 dirichlet-alpha=1e-6", "partition: no per-class"),
    "out-dir name too long": ("out-dir='{long}'", "out-dir name too long"),
    "out-dir under a file": ("out-dir='{tmp}/a-file/run'", "lies under the file"),
    "out-dir in /proc": ("out-dir='/proc/fedsign-run'", "cannot be created"),
}


@pytest.mark.parametrize("name", list(VALIDATION))
def test_values_that_used_to_crash_are_refused_by_validate(name, tmp_path, capfd):
    overrides, expected = VALIDATION[name]
    (tmp_path / "a-file").write_text("x")
    overrides = overrides.format(tmp=tmp_path, long=_too_long(tmp_path))
    if "out-dir" not in overrides:
        overrides += f" out-dir='{tmp_path}/run'"
    config = conf(overrides)
    for argv in (["validate", "-c", config], ["run", "--quiet", "-c", config]):
        refused(argv, capfd, tmp_path, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_refused(tmp_path, capfd):
    refused(["run", "--quiet", "-c", conf(f"device='cuda' out-dir='{tmp_path}/run'")], capfd, tmp_path,
            "no CUDA GPU")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir_parent_is_refused(tmp_path, capfd):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    refused(["validate", "-c", f"{RUN} out-dir='{parent}/run'"], capfd, tmp_path, "cannot be created")


@pytest.mark.parametrize("days", ["0", "-1"])
def test_certificate_days_below_one_are_refused(days, tmp_path, capfd):
    refused(["federation", "certs", "--dir", str(tmp_path / "fed"), "--days", days], capfd, tmp_path, "--days")
    assert not (tmp_path / "fed").exists()


# ---------------------------------------------------------------- archives
def _image_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_cifar_tarball_missing_a_class_is_refused(tmp_path):
    from fedsign.data import CIFAR10_CLASSES

    image = _image_bytes()
    tar_path = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in CIFAR10_CLASSES:
                if split == "train" and cls == "ship":
                    continue
                info = tarfile.TarInfo(f"{split}/{cls}/0.png")
                info.size = len(image)
                tar.addfile(info, io.BytesIO(image))
    with pytest.raises(DataSourceError, match="train split has no images of class ship"):
        load_dataset("cifar10", tar_path, cache_dir=tmp_path / "cache")


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_gzip_bomb_is_refused_with_bounded_memory(tmp_path):
    bomb = tmp_path / "cifar10-jpeg.tar.gz"
    size = 200 << 20
    with gzip.open(bomb, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("train/padding.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataSourceError, match="unpacks to more than 64 MiB") as err:
            load_dataset("cifar10", bomb, cache_dir=tmp_path / "cache")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and peak < 32 << 20, peak


# ---------------------------------------------------------------- honest outcomes
def test_run_whose_rounds_all_fail_exits_non_zero_and_is_marked_diverged(tmp_path, capfd):
    out = tmp_path / "run"
    code = main(["run", "--quiet", "-c", f"{RUN} lr=1e6 out-dir='{out}'"])
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("error")]
    assert code == 1 and len(err) == 1 and "every round failed" in err[0], err
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_reject)
    assert summary["status"] == "diverged" and read_marker(out)["status"] == "diverged"
    assert not (out / "model.safetensors").exists()


def _reject(token: str):
    raise ValueError(f"non-strict JSON constant {token}")


def test_non_finite_global_model_stops_the_run(tmp_path, capfd, monkeypatch):
    from strategies import FedAvg

    real = FedAvg.aggregate_round

    def poisoned(self, server_round, replies):
        result = real(self, server_round, replies)
        if server_round == 2:
            result = dataclasses.replace(result, arrays={
                k: torch.full_like(a, float("nan")) if a.is_floating_point() else a for k, a in result.arrays.items()})
        return result

    monkeypatch.setattr(FedAvg, "aggregate_round", poisoned)
    out = tmp_path / "run"
    code = main(["run", "--quiet", "-c", conf(f"num-rounds=3 out-dir='{out}'")])
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("error")]
    assert code == 1 and len(err) == 1 and "diverged in round 2" in err[0], err
    assert read_marker(out)["status"] == "diverged" and load_checkpoint(out).round == 1
    json.loads((out / "summary.json").read_text(), parse_constant=_reject)
    assert not (out / "model.safetensors").exists()


def test_sigint_stops_cleanly_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    config = RUN.replace("num-rounds=2", "num-rounds=30").replace("local-epochs=1", "local-epochs=2")
    proc = subprocess.Popen([sys.executable, "-m", "fedsign.cli", "run", "--quiet", "-c", f"{config} out-dir='{out}'"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),  # SIGINT as in a terminal, even when
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # run in background
    deadline = time.monotonic() + 240
    while not ((out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # inside round 3
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted") and "Traceback" not in err, err
    marker = read_marker(out)
    saved = load_checkpoint(out).round
    assert marker["status"] == "interrupted" and saved == marker["rounds"] >= 2
    assert f"continues from round {saved + 1}" in lines[0]
    assert len((out / "metrics.csv").read_text().splitlines()) - 1 >= saved


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_files_follow_the_umask(finished, tmp_path, umask):
    from fedsign.results import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask
    current = os.umask(0)
    os.umask(current)
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished.iterdir()}
    assert set(modes.values()) == {0o666 & ~current}, modes  # the run wrote under this umask


def test_marker_and_summary_of_a_finished_run(finished):
    assert read_marker(finished)["status"] == "finished"
    summary = json.loads((finished / "summary.json").read_text(), parse_constant=_reject)
    assert summary["status"] == "finished" and summary["rounds"] == 2
    assert (finished / MARKER_NAME).is_file() and load_checkpoint(finished).round == 2


# ---------------------------------------------------------------- second pass (issue 26)
RUN_FILES_LINKED = [LOCK_NAME, MARKER_NAME, "metrics.csv", CHECKPOINT_NAME, "model.safetensors", "accuracy.png",
                    "partition.png", "summary.json"]


@pytest.mark.parametrize("name", RUN_FILES_LINKED)
def test_symlink_in_a_run_folder_is_refused_and_its_target_kept(name, finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"precious data\n")
    (out / name).unlink()
    (out / name).symlink_to(precious)
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, f"symlink {name}")
    assert precious.read_bytes() == b"precious data\n" and (out / name).is_symlink()


def test_lock_file_and_atomic_write_never_follow_a_symlink(tmp_path):
    from fedsign.results import OutDirError, atomic_write

    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"precious data\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(precious)
    with pytest.raises(OutDirError, match="is a symlink"):
        RunLock(out).acquire()
    (out / "metrics.csv").symlink_to(precious)
    atomic_write(out / "metrics.csv", "round\n")  # replaces the link, not its target
    assert not (out / "metrics.csv").is_symlink() and precious.read_bytes() == b"precious data\n"


def test_refused_resume_leaves_the_lock_file_byte_identical(finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    (out / LOCK_NAME).write_text("4242\n")
    checkpoint = load_checkpoint(out)
    (out / CHECKPOINT_NAME).write_bytes(encode(replace(checkpoint, strategy={"rng": [1, 2]})))
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, "strategy state")
    assert (out / LOCK_NAME).read_text() == "4242\n"


def _tampered(checkpoint, case: str):
    first = next(iter(checkpoint.arrays))
    if case == "nan model":
        return replace(checkpoint, arrays={k: np.full_like(v, np.nan) for k, v in checkpoint.arrays.items()})
    if case == "inf in one array":
        return replace(checkpoint, arrays={**checkpoint.arrays, first: np.full_like(checkpoint.arrays[first], np.inf)})
    if case == "round past num-rounds":
        return replace(checkpoint, round=50, rows=[{**checkpoint.rows[0], "round": r} for r in range(1, 51)])
    rows = [dict(r) for r in checkpoint.rows]
    if case == "newline in a value":
        rows[1]["accuracy"] = "0.5\n999,evil"
    elif case == "formula cell":
        rows[0]["loss"] = "=cmd|' /C calc'!A0"
    elif case == "comma in a column":
        rows[0]["a,b"] = 1.0
    elif case == "rounds out of order":
        rows[0]["round"], rows[1]["round"] = 2, 1
    return replace(checkpoint, rows=rows)


CONTENT_CASES = {"nan model": "NaN or Inf", "inf in one array": "NaN or Inf",
                 "round past num-rounds": "round 50 of a 2-round config", "newline in a value": "not a number",
                 "formula cell": "not a number", "comma in a column": "not a plain name",
                 "rounds out of order": "row 1 is not round 1"}


@pytest.mark.parametrize("case", list(CONTENT_CASES))
def test_checkpoint_content_is_checked_before_anything_is_written(case, finished, tmp_path, capfd):
    out = copy_run(finished, tmp_path / "run")
    (out / CHECKPOINT_NAME).write_bytes(encode(_tampered(load_checkpoint(out), case)))
    refused(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"], capfd, out, CONTENT_CASES[case])
    assert read_marker(out)["status"] == "finished"


def test_moon_client_state_of_the_wrong_shape_is_refused(tmp_path, capfd):
    from flwr.app import Array, ArrayRecord, RecordDict

    out = tmp_path / "moon"
    config = conf(f"strategy='moon' out-dir='{out}'")
    assert main(["run", "--quiet", "-c", config]) == 0
    assert main(["run", "--quiet", "-c", f"{config} resume=true"]) == 0  # an untouched one resumes
    checkpoint = load_checkpoint(out)
    states = dict(checkpoint.client_states)
    record_name, record = next(iter(states[1].array_records.items()))
    name = next(iter(record))
    broken = ArrayRecord({k: Array(np.zeros(7, np.float32)) if k == name else a for k, a in record.items()})
    states[1] = RecordDict({**states[1], record_name: broken})
    (out / CHECKPOINT_NAME).write_bytes(encode(replace(checkpoint, client_states=states)))
    capfd.readouterr()
    refused(["run", "--quiet", "-c", f"{config} resume=true"], capfd, out, f"holds '{name}' [7]")


def _fail_writes(monkeypatch, code: int, after_rounds: int, only: str = "") -> None:
    """Once metrics.csv was written ``after_rounds`` times, every results write whose file name contains
    ``only`` fails with OSError(``code``), as on a full disk or a folder made read-only mid-run."""
    import tempfile

    real = tempfile.mkstemp
    metrics_writes = [0]

    def mkstemp(*args, prefix="", **kwargs):
        if metrics_writes[0] >= after_rounds and only in prefix:
            raise OSError(code, os.strerror(code))
        metrics_writes[0] += prefix.startswith(".metrics.csv.")
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _one_error(capfd) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_disk_full_mid_run_is_one_line_and_resume_finishes(tmp_path, capfd, monkeypatch):
    import errno

    out = tmp_path / "run"
    config = conf(f"num-rounds=3 out-dir='{out}'")
    _fail_writes(monkeypatch, errno.ENOSPC, after_rounds=2, only=CHECKPOINT_NAME)
    assert main(["run", "--quiet", "-c", config]) == 1
    line = _one_error(capfd)
    assert f"cannot write {out / CHECKPOINT_NAME} (No space left on device, ENOSPC)" in line, line
    assert read_marker(out)["status"] == "failed" and load_checkpoint(out).round == 1
    monkeypatch.undo()
    assert main(["run", "--quiet", "-c", f"{config} resume=true"]) == 0
    assert read_marker(out)["status"] == "finished" and load_checkpoint(out).round == 3


@pytest.mark.parametrize("code", ["EROFS", "EPERM"])
def test_out_dir_made_read_only_or_immutable_mid_run(code, tmp_path, capfd, monkeypatch):
    import errno

    out = tmp_path / "run"
    config = conf(f"num-rounds=3 out-dir='{out}'")
    _fail_writes(monkeypatch, getattr(errno, code), after_rounds=2)  # from round 2 on nothing is written
    assert main(["run", "--quiet", "-c", config]) == 1
    assert f"{code}); free space or make {out} writable" in _one_error(capfd)
    marker = read_marker(out)  # could not be updated: "running", with the lock free (docs/results-folder.md)
    assert marker["status"] == "running" and load_checkpoint(out).round == 1
    RunLock.check_free(out)
    monkeypatch.undo()
    assert main(["run", "--quiet", "-c", f"{config} resume=true"]) == 0
    assert read_marker(out)["status"] == "finished"


def test_file_size_limit_is_one_line(tmp_path):
    import resource

    out = tmp_path / "run"
    limit = 64 << 10  # every small file fits, the checkpoint (~1 MB) does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "fedsign.cli", "run", "--quiet", "-c", f"{RUN} out-dir='{out}'"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          preexec_fn=small_files, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "File too large, EFBIG" in lines[0], proc.stderr
    assert read_marker(out)["status"] == "failed" and not (out / CHECKPOINT_NAME).exists()
    assert main(["run", "--quiet", "-c", f"{RUN} out-dir='{out}' resume=true"]) == 0


def test_sigterm_marks_the_run_interrupted(tmp_path):
    out = tmp_path / "run"
    config = RUN.replace("num-rounds=2", "num-rounds=30").replace("local-epochs=1", "local-epochs=2")
    proc = subprocess.Popen([sys.executable, "-m", "fedsign.cli", "run", "--quiet", "-c", f"{config} out-dir='{out}'"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 240
    while not ((out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 128 + signal.SIGTERM and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: interrupted: stopped by SIGTERM after"), lines
    marker = read_marker(out)
    assert marker["status"] == "interrupted" and "SIGTERM" in marker["reason"]


# ------------------------------------------------------------- hints and silent no-ops
@pytest.mark.parametrize("overrides, expected", [
    ("weight-decay=inf", "weight-decay must be a finite number, got inf"),
    ("strategy='fedsign' fedsign-gamma=inf", "fedsign-gamma must be a finite number, got inf"),
    ("lr=inf", "lr must be a finite number"),
    ("fail-partitions='1:raise 1:nan@2'", "overlaps another entry for partition 1"),
    ("fail-partitions='0:nan@2 0:raise@2'", "overlaps another entry for partition 0"),
    ("fail-partitions='1:hang@99'", "'1:hang@99' never fires: the run has num-rounds=2"),
    ("fail-partitions='\uff11:raise'", "is not PARTITION:MODE"),
])
def test_values_refused_with_the_right_hint(overrides, expected, tmp_path, capfd):
    refused(["validate", "-c", conf(f"{overrides} out-dir='{tmp_path}/run'")], capfd, tmp_path, expected)


def test_every_round_timing_out_names_round_timeout(tmp_path, capfd):
    out = tmp_path / "run"
    assert main(["run", "--quiet", "-c", conf(f"round-timeout=1e-6 out-dir='{out}'")]) == 1
    line = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(line) == 1 and "(4 failed replies in 2 rounds: 4 timeout); no reply within round-timeout=1e-06 s" in line[0], line
    assert "raise round-timeout" in line[0] and "lower lr" not in line[0]


def test_superlink_on_an_address_of_another_machine_is_named(tmp_path, capfd, monkeypatch):
    import socket

    def no_traffic(*args, **kwargs):
        raise AssertionError(f"tried to connect: {args}")

    monkeypatch.setattr(socket, "create_connection", no_traffic)
    refused(["federation", "superlink", "--dir", str(tmp_path / "fed"), "--host", "203.0.113.7"], capfd, tmp_path,
            "--host 203.0.113.7 is not an address of this machine (Cannot assign requested address)")


def test_supernode_with_no_partitions_is_refused(tmp_path, capfd):
    refused(["federation", "supernode", "--dir", str(tmp_path / "fed"), "--num-partitions", "0"], capfd, tmp_path,
            "--num-partitions must be at least 1")


@pytest.mark.parametrize("name", ["../../x", "{tmp}/absolute-key", ".hidden", "a/b"])
def test_key_names_stay_inside_keys(name, tmp_path, capfd):
    work = tmp_path / "work"
    work.mkdir()
    name = name.format(tmp=tmp_path)
    refused(["federation", "keys", "--dir", str(work / "fed"), "--name", name], capfd, tmp_path, "not a plain file name")
    assert not (tmp_path / "absolute-key").exists()


def test_landscape_curves_keeps_a_users_record(finished, tmp_path, capfd):
    mine = tmp_path / "analysis"
    mine.mkdir()
    (mine / "valleys.json").write_text('{"my": "numbers"}\n')
    refused(["landscape", "curves", str(finished), "--out", str(mine), "--points", "3", "--scales", "1",
             "--directions", "gaussian", "--device", "cpu"], capfd, mine, "no fedsign landscape command wrote")


def _huge_png(side: int) -> bytes:
    """A valid grayscale PNG of side x side zero pixels, compressed to a few tens of KB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + the row's pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_oversized_image_in_a_cifar_tarball_is_refused_undecoded(tmp_path, monkeypatch):
    from PIL import ImageFile

    from fedsign.data import CIFAR10_CLASSES

    big, small = _huge_png(9000), _image_bytes()
    assert len(big) < 200 << 10
    tar_path = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in CIFAR10_CLASSES:
                image = big if (split, cls) == ("train", "airplane") else small
                info = tarfile.TarInfo(f"{split}/{cls}/0.png")
                info.size = len(image)
                tar.addfile(info, io.BytesIO(image))
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(DataSourceError, match="is 9000x9000, expected 32x32"):
        load_dataset("cifar10", tar_path, cache_dir=tmp_path / "cache")
    assert (9000, 9000) not in decoded


def test_metrics_csv_appended_row_by_row_equals_the_whole_table_written_at_once(tmp_path):
    """append_round formats only the new row, except when a row brings a new column (then all rows)."""
    rows = [{"round": 1, "train_loss": 2.0, "num_replies": 3, "seconds": 0.5},
            {"round": 2, "train_loss": 1.5, "num_replies": 3, "seconds": 0.25, "accuracy": 0.5, "ssr": 0.99},
            {"round": 3, "train_loss": 1.25, "num_replies": 2, "num_failures": 1, "seconds": 0.125},
            {"round": 4, "train_loss": 1.0, "num_replies": 3, "seconds": 0.1, "weight_norm": 3.5}]
    appended, whole = RunResults(tmp_path / "a"), RunResults(tmp_path / "b")
    for i, row in enumerate(rows):
        appended.append_round(row)
        whole.set_rows(rows[:i + 1])
        assert appended.metrics_path.read_text() == whole.metrics_path.read_text()
    assert appended.metrics_path.read_text().splitlines()[-1].endswith(",3.5")

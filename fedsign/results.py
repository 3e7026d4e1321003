"""The one results writer: config.json, environment.json, metrics.csv, final model, accuracy curve, summary.

Every file is written by ``atomic_write`` (temp file + rename, mode 0666 less the umask), so
a crash keeps every finished round and never leaves a half-written file. A run folder carries
the marker ``fedsign-run.json`` (its status: running, finished, diverged, interrupted, failed)
and is held by an exclusive lock on ``fedsign-run.lock`` while a run writes to it
(see docs/results-folder.md). Nothing is written through a symlink: ``atomic_write`` replaces
a link rather than its target, the lock is opened with ``O_NOFOLLOW``, and resume refuses a
folder holding a symlink. A failed write (disk full, file-size limit, read-only folder) is a
one-line ``ResultsWriteError``.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import platform
import signal
import tempfile
import time
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors.torch import save
from torch import nn

from fedsign.tracking import Tracking

METRIC_COLUMNS = ("round", "accuracy", "loss", "train_loss", "num_replies", "num_failures", "seconds")
MARKER_NAME = "fedsign-run.json"
LOCK_NAME = "fedsign-run.lock"
MARKER_FORMAT = 1


class OutDirError(FileExistsError):
    """The output directory is not usable for this run."""


class RunFailed(RuntimeError):
    """The run ended without a usable model (diverged); its results are marked so."""


class RunInterrupted(RuntimeError):
    """The run was stopped by SIGINT or SIGTERM; its results are marked interrupted. ``exit_status``:
    130 for SIGINT, 143 for SIGTERM (128 + the signal number, as a shell reports it)."""

    def __init__(self, message: str, exit_status: int = 128 + signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by ``sigterm_interrupts`` so a run ends as on Ctrl-C."""

    exit_status = 128 + signal.SIGTERM


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` in the main thread (a run then marks its folder
    interrupted instead of leaving it "running")."""
    def terminate(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ResultsWriteError(OSError):
    """A results file could not be written (disk full, file-size limit, read-only folder); the
    files written before are intact."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename; the file gets
    mode 0666 less the umask, as ``open`` would give it (mkstemp alone gives 0600). The rename
    replaces a symlink at ``path`` itself, never its target. ResultsWriteError (one line) when
    the folder takes no more data; ``path`` then keeps its previous content."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, ResultsWriteError):
            code = errno.errorcode.get(err.errno or 0, "")
            error = ResultsWriteError(f"cannot write {path} ({err.strerror or err}{', ' + code if code else ''}); "
                                      f"free space or make {path.parent} writable: the files written before are kept")
            error.errno = err.errno
            raise error from None
        raise


def strict_json(value: Any, **kwargs: Any) -> str:
    """JSON that strict parsers accept: non-finite floats become null."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere ``platform.processor()``)."""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def read_marker(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run marker of ``out_dir`` (None when it has none or it is not a FedSign marker)."""
    try:
        marker = json.loads((Path(out_dir) / MARKER_NAME).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def check_outcome(out_dir: str | os.PathLike) -> None:
    """RunFailed if the run another process made in ``out_dir`` (Ray, a deployment) diverged."""
    marker = read_marker(out_dir) or {}
    if marker.get("status") == "diverged":
        raise RunFailed(marker.get("reason") or f"the run in {out_dir} diverged")


class RunLock:
    """An exclusive ``flock`` on ``<out-dir>/fedsign-run.lock``, held while a run writes the folder.

    The kernel drops it when the process ends, however it ends (kill -9 included). The file is
    opened with ``O_NOFOLLOW`` (a symlink there is refused) and gets the holder's PID only once the
    run starts writing (``stamp``): a refused run leaves it byte-identical."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self._fd = self._locked_fd(Path(self.path.parent))
        return self

    def stamp(self) -> None:
        """Write this process's PID into the held lock file."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    @staticmethod
    def _locked_fd(out_dir: Path) -> int:
        try:
            fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise OutDirError(f"out-dir {out_dir}: {LOCK_NAME} is a symlink, and a run writes through none; "
                                  "remove it or pick a new out-dir") from None
            raise OutDirError(f"out-dir {out_dir}: cannot open {LOCK_NAME} ({err.strerror}); make the folder "
                              "writable or pick a new out-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutDirError(f"out-dir {out_dir} is in use by another run (pid {holder}); wait for it "
                              "to end or pick another out-dir") from None
        return fd

    @staticmethod
    def check_free(out_dir: str | os.PathLike) -> None:
        """OutDirError if a run holds ``out_dir``'s lock now (nothing is written)."""
        if (Path(out_dir) / LOCK_NAME).is_file():
            os.close(RunLock._locked_fd(Path(out_dir)))


class RunResults:
    """Files of one run under ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike, rows: Iterable[dict[str, Any]] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = list(rows)
        self._columns: list[str] = []  # metrics.csv's header and each row's line as last written
        self._lines: list[str] = []
        self.lock: RunLock | None = None
        self.status = "running"
        self.tracking = Tracking()  # none until start_tracking

    @classmethod
    def create(cls, out_dir: str | os.PathLike, resume: bool = False) -> "RunResults":
        """Open ``out_dir`` for a new run; a non-empty one is refused unless resuming."""
        path = cls.check_out_dir(out_dir, resume)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open_run(cls, out_dir: str | os.PathLike, resume: bool = False) -> "RunResults":
        """Open ``out_dir`` for a federated run: checked as ``check_out_dir`` does, created, locked
        (OutDirError if another run holds it). Nothing but the lock file is written yet."""
        path = cls.check_out_dir(out_dir, resume)
        path.mkdir(parents=True, exist_ok=True)
        results = cls(path)
        results.lock = RunLock(path).acquire()
        return results

    @staticmethod
    def check_out_dir(out_dir: str | os.PathLike, resume: bool = False) -> Path:
        """``out_dir`` as a Path if a run may write there; OutDirError otherwise: a file, a
        non-empty folder without resume, and with resume a non-empty folder no run wrote."""
        path = Path(out_dir)
        if path.exists() and not path.is_dir():
            raise OutDirError(f"out-dir {path} is a file; choose a directory")
        if path.exists() and any(path.iterdir()):
            if not resume:
                raise OutDirError(
                    f"out-dir {path} is not empty; pick a new out-dir or pass resume=true to continue it"
                )
            links = sorted(p.name for p in path.iterdir() if p.is_symlink())
            if links:
                raise OutDirError(f"out-dir {path} holds the symlink {links[0]} (-> {os.readlink(path / links[0])}); "
                                  "a run writes only regular files in its folder: remove the link or pick a new out-dir")
            if read_marker(path) is None:
                raise OutDirError(f"out-dir {path} is not a FedSign run folder (no {MARKER_NAME}); resume=true "
                                  "continues only a folder a run wrote: pick a new or empty out-dir")
            RunLock.check_free(path)
        return path

    def mark(self, status: str, reason: str = "") -> None:
        """Record the run's status in the marker and, once it ended, in summary.json ("running" also
        puts this process's PID in the lock file). A run that failed, diverged or was interrupted is
        marked so if the folder still takes the write; else (disk full, read-only) the marker keeps
        saying "running" and the error already on its way is the one reported."""
        self.status = status
        marker = {"format": MARKER_FORMAT, "status": status, "rounds": len(self.rows), "pid": os.getpid(),
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if reason:
            marker["reason"] = reason
        if status == "running" and self.lock is not None:
            self.lock.stamp()
        try:
            if status != "running":
                atomic_write(self.out_dir / "summary.json", strict_json(
                    {"status": status, "reason": reason or None, **self.summary()}, indent=2) + "\n")
            atomic_write(self.out_dir / MARKER_NAME, strict_json(marker, indent=2) + "\n")
        except ResultsWriteError:
            if status in ("running", "finished"):
                raise
        if status != "running":
            self.tracking.finish(status)

    def start_tracking(self, config: dict[str, Any]) -> None:
        """Open the trackers of ``config['tracking']`` (fedsign.tracking); every row written from now on,
        and the run's end (``mark``), goes to them too."""
        self.tracking = Tracking.start(self.out_dir, config)

    def close(self) -> None:
        """Finish any tracker still open and release the out-dir's lock."""
        self.tracking.finish(self.status)
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ------------------------------------------------------------------ files
    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.csv"

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.out_dir / "config.json", strict_json(config, indent=2, sort_keys=True) + "\n")

    def write_environment(self, device: torch.device) -> None:
        """Versions (CUDA and cuDNN: those torch was built with, None on a CPU build), device (and
        the GPU's name), torch's thread count of this process and the CPU kernels torch dispatches to
        (``cpu_capability``, e.g. AVX2 or AVX512): CPU results are bitwise reproducible for one config and
        seed only at the same thread count and kernel level (float reduction order)."""
        environment = {"python": platform.python_version(), "torch": torch.__version__, "flwr": version("flwr"),
                       "device": str(device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                       "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_model(),
                       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        if device.type == "cuda":
            environment["gpu"] = torch.cuda.get_device_name(device)
        atomic_write(self.out_dir / "environment.json", json.dumps(environment, indent=2) + "\n")

    def append_round(self, row: dict[str, Any]) -> None:
        """Add one round's metrics, rewrite metrics.csv and log the row to the trackers. Only the new
        row is formatted unless it brings a new column (a round costs the same at round 1 and 1,000)."""
        if not self._lines or any(k not in self._columns for k in row):
            self._write_rows([*self.rows, row])
        else:
            self.rows.append(dict(row))
            self._lines.append(self._csv_line(self.rows[-1]))
            self._write_lines()
        self.tracking.log_rows(self.rows[-1:])

    def set_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace every round's metrics (a resumed run's rows so far, checked by
        ``fedsign.checkpoint.decode``: names and numbers only), rewrite metrics.csv and log them."""
        self._write_rows(rows)
        self.tracking.log_rows(self.rows)

    def _write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows = [dict(r) for r in rows]
        self._columns = list(METRIC_COLUMNS)
        for r in self.rows:
            self._columns.extend(k for k in r if k not in self._columns)
        self._lines = [self._csv_line(r) for r in self.rows]
        self._write_lines()

    def _csv_line(self, row: dict[str, Any]) -> str:
        return ",".join(_csv_cell(row.get(c)) for c in self._columns)

    def _write_lines(self) -> None:
        atomic_write(self.metrics_path, "\n".join([",".join(self._columns), *self._lines]) + "\n")

    def save_model(self, model: nn.Module, name: str = "model.safetensors") -> Path:
        """Save the floating-point state dict as safetensors."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                 if v.is_floating_point()}
        path = self.out_dir / name
        atomic_write(path, save(state))
        return path

    def write_files(self, files: dict[str, bytes]) -> None:
        """Write each named file's bytes into the out-dir."""
        for name, data in files.items():
            atomic_write(self.out_dir / name, data)

    def plot_accuracy(self) -> Path | None:
        """accuracy.png: test accuracy per evaluated round."""
        points = [(r["round"], r["accuracy"]) for r in self.rows if r.get("accuracy") not in (None, "")]
        if not points:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(*zip(*points), marker="o", ms=3)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out_dir / "accuracy.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
        plt.close(fig)
        atomic_write(path, buffer.getvalue())
        return path

    # ---------------------------------------------------------------- summary
    def summary(self) -> dict[str, Any]:
        evaluated = [r for r in self.rows if r.get("accuracy") not in (None, "")]
        last = evaluated[-1] if evaluated else {}
        seconds = [float(r["seconds"]) for r in self.rows if r.get("seconds") not in (None, "")]
        return {
            "rounds": len(self.rows),
            "final_accuracy": last.get("accuracy"),
            "final_loss": last.get("loss"),
            "best_accuracy": max((r["accuracy"] for r in evaluated), default=None),
            "seconds_per_round": sum(seconds) / len(seconds) if seconds else None,
            "out_dir": str(self.out_dir),
        }

    def summary_table(self) -> str:
        s = self.summary()
        fmt = {"final_accuracy": "{:.4f}", "final_loss": "{:.4f}", "best_accuracy": "{:.4f}",
               "seconds_per_round": "{:.3f}"}
        width = max(len(k) for k in s)
        lines = ["-" * (width + 40)]
        for k, v in s.items():
            text = fmt[k].format(v) if k in fmt and v is not None else str(v)
            lines.append(f"{k.ljust(width)}  {text}")
        lines.append("-" * (width + 40))
        return "\n".join(lines)


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """metrics.csv rows with numbers parsed (empty cells become None)."""
    path = Path(out_dir) / "metrics.csv"
    with path.open() as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_model_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a saved model (safetensors) as a state dict."""
    from safetensors.torch import load_file

    return load_file(str(path))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse(text: str) -> Any:
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text

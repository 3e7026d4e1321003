"""Experiment tracking (run-config ``tracking``): a run's rounds, config and plots in TensorBoard and MLflow.

Trackers follow the results writer (``fedsign.results.RunResults``): they open once the run folder holds its
config and partition plot, get every metrics.csv row as it is written, and finish with the run's status.
They only read what the run produced, so tracking never changes results; a tracker that raises (disk full,
store locked) warns once on stderr, is dropped, and the run goes on. Both packages are optional
(``pip install -e '.[tracking]'``) and imported only when a run names them.

- ``tensorboard``: event files in ``<out-dir>/tensorboard/`` (``torch.utils.tensorboard``): every metrics.csv
  column as a scalar per round, the config as text and as hparams, the partition plot as an image.
- ``mlflow``: one MLflow run in the store ``mlflow-uri`` (default: the SQLite store ``mlflow.db`` beside the
  run folder, e.g. ``runs/mlflow.db``, artifacts in ``mlartifacts/`` beside it; no server, offline): params =
  the run config, metrics per round (step = round), artifacts = the run folder's plots, metrics.csv,
  config.json and summary.json.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

TRACKERS = ("tensorboard", "mlflow")
INSTALL_LINE = "pip install -e '.[tracking]'"
MLFLOW_EXPERIMENT = "fedsign"
MLFLOW_SCHEMES = ("sqlite", "http", "https")
# Files of the run folder an MLflow run gets as artifacts (besides every *.png).
MLFLOW_ARTIFACTS = ("summary.json", "metrics.csv", "config.json", "partition_counts.csv")
# RunResults status -> MLflow run status.
MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "interrupted": "KILLED",
                 "running": "KILLED"}


def tracker_names(tracking: str) -> tuple[str, ...]:
    """The trackers a ``tracking`` value names: '' none, else comma-separated names (ValueError otherwise)."""
    names = tuple(part.strip() for part in tracking.split(",")) if tracking.strip() else ()
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"tracking names {name!r}; use '' or a comma-separated list of {', '.join(TRACKERS)}, "
                             "e.g. tracking='tensorboard,mlflow'")
    if len(set(names)) < len(names):
        raise ValueError(f"tracking names a tracker twice ({tracking!r}); name each once")
    return names


def tracking_problem(tracking: str, mlflow_uri: str) -> str | None:
    """Why ``tracking`` / ``mlflow-uri`` cannot run here (one line naming the fix), or None."""
    try:
        names = tracker_names(tracking)
    except ValueError as err:
        return str(err)
    for name in names:
        if importlib.util.find_spec(name) is None:
            return f"tracking='{tracking}' needs the {name} package, which is not installed: {INSTALL_LINE}"
    if mlflow_uri and "mlflow" not in names:
        return "mlflow-uri is set but tracking does not include mlflow; add it (tracking='mlflow') or drop mlflow-uri"
    if mlflow_uri and mlflow_uri.partition(":")[0] not in MLFLOW_SCHEMES:
        return (f"mlflow-uri '{mlflow_uri}' is not an SQLite store or MLflow server (MLflow refuses plain folders); "
                "use sqlite:///<path>.db or http(s)://<host>:<port>, or '' for runs/mlflow.db")
    return None


def absolute_store(mlflow_uri: str, base: Path) -> str:
    """``mlflow-uri`` with a relative ``sqlite:///`` path made absolute against ``base``."""
    if mlflow_uri.startswith("sqlite:///") and not mlflow_uri.startswith("sqlite:////"):
        return "sqlite:///" + str((base / mlflow_uri.removeprefix("sqlite:///")).resolve())
    return mlflow_uri


def mlflow_store(mlflow_uri: str, out_dir: Path) -> tuple[str, str | None]:
    """The MLflow tracking URI of a run and where a new experiment keeps artifacts (None: the server's
    choice): ``mlflow-uri``, or when empty ``sqlite:///<folder above out-dir>/mlflow.db``; a SQLite store
    keeps artifacts in ``mlartifacts/`` beside its database file."""
    uri = mlflow_uri or f"sqlite:///{out_dir.parent / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        return uri, str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return uri, None


class Tracking:
    """The trackers of one run; a tracker that raises is reported once and dropped."""

    def __init__(self, trackers: Iterable[Any] = ()) -> None:
        self.trackers = list(trackers)

    @classmethod
    def start(cls, out_dir: Path, config: Mapping[str, Any]) -> "Tracking":
        """Open the trackers ``config['tracking']`` names for the run in ``out_dir`` (a resumed run,
        ``config['resume']``, replaces what its trackers logged before: its rows are logged again)."""
        tracking = cls()
        for name in tracker_names(config.get("tracking", "")):
            opener = TensorBoardTracker if name == "tensorboard" else MLflowTracker
            tracker = tracking._guard(name, opener, out_dir, config)
            if tracker is not _FAILED:
                tracking.trackers.append(tracker)
        return tracking

    def log_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Log metrics.csv rows (each at step = its round)."""
        rows = list(rows)
        for tracker in list(self.trackers):
            if self._guard(tracker.name, tracker.log_rows, rows) is _FAILED:
                self._drop(tracker)

    def finish(self, status: str) -> None:
        """Log the run's final files, record ``status`` and close every tracker."""
        for tracker in list(self.trackers):
            if self._guard(tracker.name, tracker.finish, status) is _FAILED:
                self._drop(tracker)
        self.trackers = []

    def _drop(self, tracker: Any) -> None:
        self.trackers.remove(tracker)
        try:
            tracker.abort()
        except Exception:  # the tracker already failed and was reported; closing it is best effort
            pass

    @staticmethod
    def _guard(name: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            print(f"warning: {name} tracking failed ({reason}); the run goes on without it", file=sys.stderr,
                  flush=True)
            return _FAILED


_FAILED = object()


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number (bools too), else None."""
    return float(value) if isinstance(value, (int, float)) else None


def _config_markdown(config: Mapping[str, Any]) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | `{v}` |" for k, v in sorted(config.items()))


class TensorBoardTracker:
    """Event files in ``<out-dir>/tensorboard/`` through ``torch.utils.tensorboard``."""

    name = "tensorboard"

    def __init__(self, out_dir: Path, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.out_dir = out_dir
        # purge_step=0: a resumed run logs its rows again, and TensorBoard drops the earlier files' steps
        self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=0 if config.get("resume") else None)
        self.writer.add_text("config", _config_markdown(config), global_step=0)
        values = {k: str(v) if isinstance(v, bool) else v for k, v in config.items()}
        for summary in hparams(values, {"accuracy": 0.0, "loss": 0.0}):
            self.writer.file_writer.add_summary(summary)
        partition = out_dir / "partition.png"
        if partition.is_file():
            import numpy as np
            from PIL import Image

            with Image.open(partition) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image("partition", pixels, global_step=0, dataformats="HWC")
        self.writer.flush()

    def log_rows(self, rows: list[Mapping[str, Any]]) -> None:
        for row in rows:
            for key, value in row.items():
                if key != "round" and (number := _number(value)) is not None:
                    self.writer.add_scalar(key, number, global_step=int(row["round"]))
        self.writer.flush()

    def finish(self, status: str) -> None:
        summary = self.out_dir / "summary.json"
        if summary.is_file():
            self.writer.add_text("summary", f"```\n{summary.read_text()}```", global_step=0)
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive flock on ``<database>.lock`` beside a SQLite store (nothing for a server)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


class MLflowTracker:
    """One MLflow run (experiment ``fedsign``) through ``MlflowClient``: no global MLflow state, no server."""

    name = "mlflow"

    def __init__(self, out_dir: Path, config: Mapping[str, Any]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.out_dir = out_dir
        uri, self.artifact_location = mlflow_store(config.get("mlflow-uri", ""), out_dir)
        with _store_lock(uri):  # runs starting together (a sweep's workers) would each create the database
            self.client = MlflowClient(tracking_uri=uri)
            experiment_id = self._experiment_id()
        tags = {"fedsign.out_dir": str(out_dir)}
        if config.get("resume"):
            tags["fedsign.resumed"] = "true"
        self.run_id = self.client.create_run(experiment_id, run_name=out_dir.name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, json.dumps(v) if not isinstance(v, str) else v)
                                                   for k, v in sorted(config.items())])

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=self.artifact_location)
        except Exception:  # another process created it meanwhile (a server store, not locked here)
            experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_rows(self, rows: list[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, number, now, int(row["round"])) for row in rows for key, value in row.items()
                   if key != "round" and (number := _number(value)) is not None]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, status: str) -> None:
        for path in sorted(self.out_dir.iterdir()):
            if path.is_file() and (path.suffix == ".png" or path.name in MLFLOW_ARTIFACTS):
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_tag(self.run_id, "fedsign.status", status)
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))

    def abort(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")

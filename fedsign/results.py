"""The one results writer: config.json, environment.json, metrics.csv, final model, accuracy curve, summary.

``metrics.csv`` is rewritten atomically after every round (temp file + rename), so a
crash keeps every finished round and never leaves a half-written file.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import save_file
from torch import nn

METRIC_COLUMNS = ("round", "accuracy", "loss", "train_loss", "num_replies", "num_failures", "seconds")


class OutDirError(FileExistsError):
    """The output directory is not usable for this run."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunResults:
    """Files of one run under ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike, rows: Iterable[dict[str, Any]] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = list(rows)

    @classmethod
    def create(cls, out_dir: str | os.PathLike, resume: bool = False) -> "RunResults":
        """Open ``out_dir`` for a new run; a non-empty one is refused unless resuming."""
        path = cls.check_out_dir(out_dir, resume)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @staticmethod
    def check_out_dir(out_dir: str | os.PathLike, resume: bool = False) -> Path:
        """``out_dir`` as a Path if a run may write there; OutDirError otherwise."""
        path = Path(out_dir)
        if path.exists() and not path.is_dir():
            raise OutDirError(f"out-dir {path} is a file; choose a directory")
        if not resume and path.exists() and any(path.iterdir()):
            raise OutDirError(
                f"out-dir {path} is not empty; pick a new out-dir or pass resume=true to continue it"
            )
        return path

    # ------------------------------------------------------------------ files
    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.csv"

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")

    def write_environment(self, device: torch.device) -> None:
        """Versions (CUDA and cuDNN: those torch was built with, None on a CPU build), device (and
        the GPU's name), and torch's thread count of this process: CPU results are bitwise
        reproducible for one config and seed only at the same thread count (float reduction order)."""
        environment = {"python": platform.python_version(), "torch": torch.__version__, "flwr": version("flwr"),
                       "device": str(device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        if device.type == "cuda":
            environment["gpu"] = torch.cuda.get_device_name(device)
        atomic_write(self.out_dir / "environment.json", json.dumps(environment, indent=2) + "\n")

    def append_round(self, row: dict[str, Any]) -> None:
        """Add one round's metrics and rewrite metrics.csv."""
        self.set_rows([*self.rows, row])

    def set_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace every round's metrics (a resumed run's rows so far) and rewrite metrics.csv."""
        self.rows = [dict(r) for r in rows]
        columns = list(METRIC_COLUMNS)
        for r in self.rows:
            columns.extend(k for k in r if k not in columns)
        lines = [",".join(columns)]
        for r in self.rows:
            lines.append(",".join(_csv_cell(r.get(c)) for c in columns))
        atomic_write(self.metrics_path, "\n".join(lines) + "\n")

    def save_model(self, model: nn.Module, name: str = "model.safetensors") -> Path:
        """Save the floating-point state dict as safetensors."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                 if v.is_floating_point()}
        path = self.out_dir / name
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(state, str(tmp))
        os.replace(tmp, path)
        return path

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
        fig.savefig(path, dpi=120)
        plt.close(fig)
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

"""Running a sweep's cells: cell locks shared by worker processes, the time budget, archiving finished cells."""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fedsign.config import ConfigError, RunConfig
from fedsign.results import read_metrics
from table1_sweep.analysis import cell_done, cell_summary, finished_cells, select_values
from table1_sweep.grid import RUN_ORDER, Cell, Preset, seed_cells, tuning_cells


class CellLock:
    """``<cell>.lock`` created exclusively, holding the owner's PID; a lock whose PID is gone is stale."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._owner_alive():
                    return False
                self.path.unlink(missing_ok=True)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return True
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def _owner_alive(self) -> bool:
        try:
            pid = int(self.path.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            return False
        except PermissionError:
            return True
        return pid > 0


def run_cell(overrides: str, engine: str) -> None:
    if engine == "ray":
        subprocess.run([sys.executable, "-m", "fedsign.cli", "simulate", "--run-config", overrides], check=True,
                       stdout=subprocess.DEVNULL)
        return
    from fedsign.engines import run_inprocess

    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_inprocess(RunConfig.from_overrides(f"{overrides} engine='{engine}'").resolved(), progress=False)


def validate_cells(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], data_dirs: dict[str, str],
                   runs: Path, extra: str) -> None:
    """Validate one cell per dataset x method x grid value before anything runs (bad config or data: exit 2)."""
    for cell in tuning_cells(preset, methods, datasets):
        try:
            RunConfig.from_overrides(cell.overrides(preset, data_dirs, runs / cell.name, extra))
        except ConfigError as err:
            hint = f" (or leave it out: --datasets {' '.join(d for d in datasets if d != cell.dataset)})" \
                if len(datasets) > 1 else ""
            sys.exit(f"error: cell {cell.name}: {err}{hint}")


def next_cell(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], runs: Path
              ) -> tuple[Cell | None, CellLock | None, bool]:
    """(cell, its lock) to run next; (None, None, waiting) when none is free, ``waiting`` if some cells
    are still running elsewhere or wait for a tuning that runs elsewhere."""
    tuning = tuning_cells(preset, methods, datasets)
    tuned = finished_cells(runs, tuning)
    seeds = seed_cells(preset, methods, datasets, select_values(tuned, preset, methods, datasets))
    candidates = sorted(tuning + seeds, key=lambda c: (c.rounds_factor, RUN_ORDER.index(c.method)))  # checks last
    waiting = len(select_values(tuned, preset, methods, datasets)) < len(preset.groups(methods, datasets))
    for cell in candidates:
        if cell_done(runs / cell.name):
            continue
        lock = CellLock(runs / f"{cell.name}.lock")
        if lock.acquire():
            return cell, lock, waiting
        waiting = True
    return None, None, waiting


def work(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], data_dirs: dict[str, str],
         runs: Path, extra: str, engine: str, time_budget: float) -> int:
    """Run cells until none is left; with a ``time_budget`` (seconds), start no cell that would end past it
    at the mean duration of the cells this process ran so far. Return how many ran."""
    start, durations = time.perf_counter(), []
    while time_budget <= 0 or time.perf_counter() - start + (statistics.mean(durations) if durations else 0) \
            < time_budget:
        cell, lock, waiting = next_cell(preset, methods, datasets, runs)
        if cell is None:
            if not waiting:
                break
            time.sleep(10)  # another process holds the remaining cells or the tunings they wait for
            continue
        try:
            cell_dir = runs / cell.name
            if cell_dir.exists():  # an interrupted cell (its lock was stale) restarts from scratch
                shutil.rmtree(cell_dir)
            began = time.perf_counter()
            run_cell(cell.overrides(preset, data_dirs, cell_dir, extra), engine)
            summary = cell_summary(cell, read_metrics(cell_dir))
            durations.append(time.perf_counter() - began)
            print(f"[pid {os.getpid()}] {cell.name}: test {summary['test']:.4f} val {summary['val'] or 0:.4f} "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)
        finally:
            lock.release()
    return len(durations)


def run_sweep(preset: Preset, methods: tuple[str, ...], datasets: tuple[str, ...], data_dirs: dict[str, str],
              runs: Path, extra: str, engine: str, time_budget: float, workers: int, worker_command: list[str]) -> None:
    """``work`` in this process and in ``workers - 1`` more started as ``worker_command`` (the same sweep with one
    worker), each claiming cells by lock; exit with an error when one of them failed."""
    others = [subprocess.Popen(worker_command) for _ in range(workers - 1)]
    work(preset, methods, datasets, data_dirs, runs, extra, engine, time_budget)
    if any(other.wait() for other in others):
        sys.exit("error: a worker process failed; rerun the same command to resume")


ARCHIVED_FILES = ("metrics.csv", "config.json", "summary.json")


def archive_cells(runs: Path, archive: Path) -> int:
    """Copy the ``ARCHIVED_FILES`` of every finished cell folder under ``runs`` into ``archive``; return how many."""
    done = [folder for folder in sorted(runs.iterdir()) if folder.is_dir() and cell_done(folder)]
    for folder in done:
        (archive / folder.name).mkdir(parents=True, exist_ok=True)
        for name in ARCHIVED_FILES:
            shutil.copyfile(folder / name, archive / folder.name / name)
    print(f"archived {len(done)} finished cells in {archive}")
    return len(done)

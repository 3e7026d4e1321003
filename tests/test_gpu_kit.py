"""benchmarks/gpu/run.sh --dry-run: the device kit's path on the CPU with a tiny config."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_sh_dry_run_writes_checks_round_timings_and_summary(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "FEDSIGN_SITE": str(tmp_path / "site"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/run.sh"), "--dry-run", "--budget", "150"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    log = proc.stdout + proc.stderr
    assert "skipping pip install" in log or "installed into" in log, log
    assert json.loads((out / "check.json").read_text())["torch"]
    for name in ("round_equal", "round_uneven"):
        timings = json.loads((out / f"{name}.json").read_text())["s_per_round"]
        assert timings["sequential"] > 0 and timings["vectorized"] > 0
    summary = (out / "summary.md").read_text()
    assert "round_uneven" in summary and "Traceback" not in log
    assert proc.returncode == 0, log
    assert any(line.startswith("| cifar10-") for line in summary.splitlines()), summary  # a paper cell ran

#!/usr/bin/env bash
# The device kit: run on the GPU machine from the repo root, with benchmarks/gpu/kit carried
# (made by prepare.sh). Installs the kit's wheels the machine lacks into a private site dir,
# checks torch/CUDA (the machine's own torch, whatever its version), times one paper-sized
# VGG8 round on both engines (benchmarks/vgg8_round.py: equal clients, uneven clients, bf16),
# then runs as many Table-1 `paper` cells (CIFAR-10, vectorized engine) as fit the time budget
# and prints a summary. Everything goes under $OUT (a temp dir when unset); cells already
# finished under $RUNS (default $OUT/table1_runs, e.g. a carried earlier $OUT) are skipped.
#
#   benchmarks/gpu/run.sh [--budget SECONDS]   # default 540: one 10-minute device command
#   benchmarks/gpu/run.sh --dry-run            # the same path on the CPU with a tiny config
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DRY=0
BUDGET=540
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --budget) BUDGET=${2:?--budget needs SECONDS}; shift ;;
        *) echo "error: unknown argument '$1'; use [--dry-run] [--budget SECONDS]" >&2; exit 2 ;;
    esac
    shift
done
START=$(date +%s)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
RUNS=${RUNS:-$OUT/table1_runs}
KIT=$ROOT/benchmarks/gpu/kit
PYTHON=${PYTHON:-python3}
SITE=${FEDSIGN_SITE:-${TMPDIR:-/tmp}/fedsign-site}
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_DISABLE_UPDATE_CHECK=1
export FEDSIGN_CACHE=${FEDSIGN_CACHE:-${TMPDIR:-/tmp}/fedsign-cache}   # decoded datasets stay out of $OUT
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
echo "device kit: results under $OUT (budget ${BUDGET} s$([ $DRY = 1 ] && echo ', dry run on the CPU'))"

echo "[1/4] packages"
if ! ls "$KIT"/wheels/*.whl >/dev/null 2>&1; then
    echo "skipping pip install: no wheels in benchmarks/gpu/kit/wheels (run benchmarks/gpu/prepare.sh where the registry is)"
elif [ "$("$PYTHON" -c 'import sys; print(sys.version_info[:2] == (3, 12))')" != True ]; then
    echo "skipping pip install: the kit's wheels are for Python 3.12, this is $("$PYTHON" -V)"
else
    MISSING=$("$PYTHON" - "$KIT/wheels" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    try:
        version(wheel.name.split("-")[0])
    except PackageNotFoundError:
        print(wheel)
PY
)
    if [ -n "$MISSING" ]; then
        mkdir -p "$SITE"
        # shellcheck disable=SC2086
        "$PYTHON" -m pip install --quiet --no-deps --no-index --target "$SITE" $MISSING
    fi
    echo "installed into $SITE: $(echo "$MISSING" | grep -c . || true) wheels the machine lacked"
fi

echo "[2/4] torch / CUDA"
"$PYTHON" - "$OUT/check.json" "$DRY" <<'PY'
import json
import sys

import flwr  # noqa: F401  (the kit's packages import)
import torch

import fedsign.engines  # noqa: F401  (the project imports under this torch)

cuda = torch.cuda.is_available()
check = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
         "gpu": torch.cuda.get_device_name(0) if cuda else None, "flwr": flwr.__version__ if hasattr(flwr, "__version__") else None}
print(json.dumps(check))
open(sys.argv[1], "w").write(json.dumps(check, indent=2) + "\n")
if not cuda and sys.argv[2] != "1":
    sys.exit("error: torch sees no CUDA device; run on the GPU machine, or use --dry-run on a CPU")
PY

echo "[3/4] one VGG8 round, sequential and vectorized"
if [ $DRY = 1 ]; then
    ROUND=(--device cpu --dataset digits --model cnn --clients 2 --samples 48 --epochs 1 --repeats 1)
else
    ROUND=(--device cuda --data-dir "$KIT/data/cifar10-jpeg.tar.gz")
fi
"$PYTHON" benchmarks/vgg8_round.py "${ROUND[@]}" --json "$OUT/round_equal.json"
"$PYTHON" benchmarks/vgg8_round.py "${ROUND[@]}" --uneven --json "$OUT/round_uneven.json"
[ $DRY = 1 ] || "$PYTHON" benchmarks/vgg8_round.py "${ROUND[@]}" --mixed-precision --json "$OUT/round_bf16.json"

echo "[4/4] Table-1 paper cells (CIFAR-10, vectorized engine)"
LEFT=$(( BUDGET - ($(date +%s) - START) - 30 ))
if [ "$LEFT" -lt 20 ]; then
    echo "no time left for cells (${LEFT} s)"
else
    if [ $DRY = 1 ]; then  # the paper grid on a tiny run config
        CELLS=(--methods fedavg --extra "device='cpu' dataset='digits' model='cnn' num-clients=4 clients-per-round=2 num-rounds=2 local-epochs=1 eval-every=1")
    else
        CELLS=(--data-dir "cifar10=$KIT/data/cifar10-jpeg.tar.gz" --extra "device='cuda'")
    fi
    # The budget is table1's: it starts no cell it cannot finish; the timeout only guards a stuck run.
    timeout $(( LEFT + 60 )) "$PYTHON" benchmarks/table1.py --preset paper --engine vectorized --datasets cifar10 \
        --time-budget "$LEFT" --out "$OUT/table1" --runs "$RUNS" "${CELLS[@]}" || echo "table1.py ended with status $?"
fi
"$PYTHON" benchmarks/gpu/summary.py "$OUT" "$RUNS"

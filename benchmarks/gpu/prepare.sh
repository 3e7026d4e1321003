#!/usr/bin/env bash
# Prepare the device kit on a CPU machine with the package registry (run from the repo root):
# the cp312 manylinux wheels of what the GPU machine's image (Python 3.12, torch 2.11) lacks
# (flwr 1.42 and its dependencies at the versions of this machine's venv, each downloaded
# --no-deps), plus the CIFAR-10 tarball,
# into benchmarks/gpu/kit/ (git-ignored). Carry that folder to the GPU machine and run
# benchmarks/gpu/run.sh there. The kit must stay <= 64 MiB (the device tool's carry limit).
#
#   benchmarks/gpu/prepare.sh [CIFAR10_TARBALL]      # default ../shared/data/cifar10-jpeg.tar.gz
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KIT=$ROOT/benchmarks/gpu/kit
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
TARBALL=${1:-$ROOT/../shared/data/cifar10-jpeg.tar.gz}
LIMIT_MIB=64
[ -f "$TARBALL" ] || { echo "error: no CIFAR-10 tarball at $TARBALL; pass its path as the first argument" >&2; exit 2; }

# name==version of flwr's dependency closure in this venv, less what the GPU machine's image already
# holds among the large binary ones (/work/.library/device/KINDS.md lists the image: numpy, grpcio,
# protobuf, PyYAML, pillow, matplotlib, safetensors, tqdm ... are there; flwr, pydantic, cryptography,
# SQLAlchemy are not), torch's CUDA libraries, and uv (a 17 MB binary flwr only uses to install app
# dependencies, which FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION turns off). run.sh installs only the
# wheels whose package the machine lacks.
PINS=$("$PYTHON" - <<'PY'
import re
from importlib.metadata import PackageNotFoundError, distribution

ROOTS = ["flwr"]
SKIP = {"torch", "triton", "uv", "numpy", "grpcio", "protobuf", "pyyaml", "markupsafe", "charset-normalizer",
        "setuptools", "pip", "wheel"}
seen, todo = {}, list(ROOTS)
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop().lower())
    if name in seen or name in SKIP or name.startswith("nvidia-"):
        continue
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue  # a dependency for another Python version or platform
    seen[name] = dist.version
    for req in dist.requires or []:
        if "extra ==" not in req:
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PY
)
rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/data"
echo "downloading $(echo "$PINS" | wc -l) wheels (cp312, manylinux x86_64, --no-deps) into $KIT/wheels"
# shellcheck disable=SC2086
"$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any --no-deps -d "$KIT/wheels" $PINS
cp "$TARBALL" "$KIT/data/cifar10-jpeg.tar.gz"
echo "$PINS" > "$KIT/wheels/pins.txt"
du -sh "$KIT/wheels" "$KIT/data"
SIZE_MIB=$(du -sm "$KIT" | cut -f1)
if [ "$SIZE_MIB" -gt "$LIMIT_MIB" ]; then
    echo "error: the kit is $SIZE_MIB MiB, over the $LIMIT_MIB MiB carry limit; add large packages the GPU image holds to SKIP in $0" >&2
    exit 1
fi
echo "kit ready: $SIZE_MIB MiB (limit $LIMIT_MIB). On the GPU machine: carry benchmarks/gpu/kit, run benchmarks/gpu/run.sh"

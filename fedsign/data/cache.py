"""On-disk cache of decoded datasets (uint8 images + int64 labels as an uncompressed .npz).

The key hashes the dataset name, the decoder version, and the resolved path, size and mtime of every
source file, so a changed or moved source is decoded again. Files are written atomically (temp + os.replace).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CACHE_VERSION = 1  # bump when a decoder's output changes
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def default_cache_dir() -> Path:
    """``$FEDSIGN_CACHE`` if set, else ``~/.cache/fedsign``."""
    env = os.environ.get("FEDSIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedsign"


def cache_key(name: str, source_files: list[Path]) -> str:
    """Hex digest for ``name`` decoded from exactly these (absolute, resolved) files in their current state."""
    h = hashlib.sha256(f"{name}|v{CACHE_VERSION}".encode())
    for f in sorted(Path(p) for p in source_files):
        st = f.stat()
        h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def cache_path(cache_dir: Path, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{name}-{key}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if the file is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: arrays[k] for k in _ARRAYS})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Dataset loaders: find a source (cheap), decode it once into uint8 [N,C,H,W] + int64 labels, cache it.

Accepted sources (``data_dir``; a relative default dir is taken from the project root, else the cwd):
  digits   scikit-learn's bundled copy; no data_dir. Fixed stratified split: 1,437 train / 360 test
           (train_test_split(test_size=0.2, stratify=y, random_state=0)); pixels 0..16 -> x*255//16.
  mnist,   the four idx files (``.gz`` or uncompressed), in data_dir itself or in
  fmnist   data_dir/MNIST/raw resp. data_dir/FashionMNIST/raw (torchvision's layout).
  cifar10  ``cifar-10-batches-py`` pickles (data_dir is that folder or its parent); an ImageFolder tree
           data_dir/{train,test}/<class>/*; or a tarball (.tar.gz/.tgz/.tar, or data_dir holding
           cifar10-jpeg.tar.gz) containing that tree. Classes are mapped by the CIFAR-10 class list.
  cinic10  ImageFolder data_dir/{train,test}/<class>/*; the ``valid`` split is not used.
  cifar100 ``cifar-100-python/{train,test}`` pickles (data_dir is that folder or its parent); fine labels.
  svhn     train_32x32.mat and test_32x32.mat (``extra`` is not used); label 10 means digit 0.
Image-folder and tarball images (PNG or JPEG, already 32x32) are ordered by (class, file name); an
image of another size is refused from its header, before it is decoded.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .cache import cache_key, cache_path, default_cache_dir, read_cache, write_cache
from .specs import CIFAR10_CLASSES, DataSourceError, DatasetSpec, get_spec

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_IDX_STEMS = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
              "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
_TORCHVISION_RAW = {"mnist": "MNIST", "fmnist": "FashionMNIST"}
_CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_IMAGE_EXTS = {".png", ".jpg", ".jpeg"}
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_SPLITS = ("train", "test")


@dataclass
class ImageData:
    """Decoded dataset: uint8 images [N,C,H,W] and int64 labels [N] for both splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    spec: DatasetSpec

    def padded(self, size: int) -> "ImageData":
        """Both splits zero-padded, centred, to ``size`` x ``size`` (the spec's ``image_size`` with them): e.g.
        28x28 Fashion-MNIST at 32x32 for a network whose max-pools need it. ``size`` = the images' own: self."""
        pad = size - self.spec.image_size
        if pad < 0:
            raise ValueError(f"{self.spec.name}: cannot pad {self.spec.image_size}x{self.spec.image_size} images "
                             f"to the smaller {size}x{size}")
        if pad == 0:
            return self
        sides = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)
        return ImageData(torch.nn.functional.pad(self.train_x, sides), self.train_y,
                         torch.nn.functional.pad(self.test_x, sides), self.test_y,
                         replace(self.spec, image_size=size))


@dataclass(frozen=True)
class _Source:
    kind: str  # key of _DECODERS
    path: Path | None


# ---------------------------------------------------------------- locating (cheap, no decoding)

def _fail(spec: DatasetSpec, path: Path | None, why: str) -> DataSourceError:
    where = "no data-dir given" if path is None else f"{why} at {path}"
    return DataSourceError(f"{spec.name}: {where}; {spec.source_hint}")


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _locate(spec: DatasetSpec, data_dir) -> _Source:
    if spec.name == "digits":
        return _Source("digits", None)
    if data_dir in (None, ""):
        if spec.default_data_dir is None:
            raise _fail(spec, None, "")
        default = Path(spec.default_data_dir).expanduser()
        tries = [(base / default).resolve() for base in (PROJECT_ROOT, Path.cwd())]  # same if absolute
        root = next((t for t in tries if t.exists()), tries[0])
    else:
        root = Path(data_dir).expanduser().resolve()
    if not root.exists():
        raise _fail(spec, root, "nothing exists")
    name = spec.name
    if root.is_file():
        if name == "cifar10" and root.name.endswith(_TAR_SUFFIXES):
            return _Source("tar", root)
        raise _fail(spec, root, "a file, not a recognised source,")
    if name in _TORCHVISION_RAW:
        for folder in (root, root / _TORCHVISION_RAW[name] / "raw"):
            if all(_idx_file(folder, s) for s in _IDX_STEMS.values()):
                return _Source("idx", folder)
    elif name == "cifar10":
        for folder in (root, root / "cifar-10-batches-py"):
            if all((folder / f).is_file() for f in _CIFAR10_FILES):
                return _Source("cifar10-pickle", folder)
        if all((root / s).is_dir() for s in _SPLITS):
            return _Source("imagefolder", root)
        if (root / "cifar10-jpeg.tar.gz").is_file():
            return _Source("tar", root / "cifar10-jpeg.tar.gz")
    elif name == "cinic10":
        if all((root / s).is_dir() for s in _SPLITS):
            return _Source("imagefolder", root)
    elif name == "cifar100":
        for folder in (root, root / "cifar-100-python"):
            if all((folder / s).is_file() for s in _SPLITS):
                return _Source("cifar100-pickle", folder)
    elif name == "svhn":
        if all((root / f"{s}_32x32.mat").is_file() for s in _SPLITS):
            return _Source("svhn-mat", root)
    raise _fail(spec, root, f"no {name} files found")


def check_data_source(name: str, data_dir=None) -> Path | None:
    """Cheaply check that ``name``'s expected files exist (nothing is decoded); return the source path
    (None for digits). Raises DataSourceError saying where to get the data, ValueError for unknown names."""
    return _locate(get_spec(name), data_dir).path


# ---------------------------------------------------------------- decoders: path -> dict of numpy arrays

def _image_folder_files(root: Path, classes: tuple[str, ...]) -> list[tuple[str, int, str, Path]]:
    """(split, class index, name, file) for every image under root/{train,test}/<class>/, in that order."""
    out = []
    for split in _SPLITS:
        dirs = sorted(e.name for e in os.scandir(root / split) if e.is_dir())
        if dirs != sorted(classes):
            raise ValueError(f"{root / split} has class folders {dirs}, expected {list(classes)}")
        for c, name in enumerate(classes):
            files = sorted(e.name for e in os.scandir(root / split / name)
                           if e.is_file() and Path(e.name).suffix.lower() in _IMAGE_EXTS)
            if not files:
                raise ValueError(f"{root / split / name} holds no images; every split needs every class")
            out += [(split, c, f"{split}/{name}/{f}", root / split / name / f) for f in files]
    return out


def _decode_images(items: list[tuple[str, bytes | Path]], size: int) -> np.ndarray:
    """Decode (name, bytes or file) PNG/JPEG images into RGB uint8 [N,3,size,size]."""
    from PIL import Image

    out = np.empty((len(items), size, size, 3), np.uint8)
    for i, (name, payload) in enumerate(items):
        try:
            with Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload) as im:
                width, height = im.size  # from the header: an image of the wrong size is refused undecoded
                if (width, height) == (size, size):
                    out[i] = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for unreadable images
            raise ValueError(f"cannot decode image {name}: {e}") from e
        if (width, height) != (size, size):
            raise ValueError(f"image {name} is {width}x{height}, expected {size}x{size}")
    return out.transpose(0, 3, 1, 2)


def _split_arrays(items: list[tuple[str, int, str, bytes | Path]], size: int) -> dict[str, np.ndarray]:
    """Decode ordered (split, class index, name, bytes or file) items into the four arrays."""
    arrays = {}
    for split in _SPLITS:
        part = [t for t in items if t[0] == split]
        arrays[f"{split}_x"] = _decode_images([(t[2], t[3]) for t in part], size)
        arrays[f"{split}_y"] = np.array([t[1] for t in part], np.int64)
    return arrays


def _decode_imagefolder(root: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    return _split_arrays(_image_folder_files(root, CIFAR10_CLASSES), spec.image_size)


class _CappedReader(io.RawIOBase):
    """A file object over ``f`` that refuses to yield more than ``cap`` bytes (a decompression bomb)."""

    def __init__(self, f, cap: int) -> None:
        self.f, self.cap, self.count = f, cap, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.f.read(len(buffer))
        self.count += len(data)
        if self.count > self.cap:
            raise ValueError(f"the archive unpacks to more than {self.cap >> 20} MiB (more than "
                             f"{_TAR_RATIO}x its size); it is not a CIFAR-10 image tarball")
        buffer[:len(data)] = data
        return len(data)


_TAR_RATIO = 32  # the CIFAR-10 JPEG tarball unpacks to ~5x its size
_TAR_MIN_CAP = 64 << 20
_MAX_IMAGE_BYTES = 1 << 20  # a 32x32 PNG/JPEG is a few KB


def _decode_tar(path: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Stream the (optionally gzipped) tarball: memory stays at one member, and an archive that
    unpacks to more than ``_TAR_RATIO`` times its size is refused."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
        capped = io.BufferedReader(_CappedReader(stream, max(_TAR_MIN_CAP, _TAR_RATIO * path.stat().st_size)))
        members = []
        with tarfile.open(fileobj=capped, mode="r|") as tar:
            for m in tar:
                parts = [p for p in PurePosixPath(m.name).parts if p != "."]
                if not m.isfile() or len(parts) < 3 or PurePosixPath(parts[-1]).suffix.lower() not in _IMAGE_EXTS:
                    continue
                split, cls = parts[-3:-1]
                if split not in _SPLITS:
                    continue
                if cls not in CIFAR10_CLASSES:
                    raise ValueError(f"unknown class folder {cls!r} in member {m.name}")
                if m.size > _MAX_IMAGE_BYTES:
                    raise ValueError(f"member {m.name} is {m.size >> 20} MiB, too large for a 32x32 image")
                members.append((split, CIFAR10_CLASSES.index(cls), m.name, tar.extractfile(m).read()))
    if not members:
        raise ValueError("no train/<class>/<image> members")
    for split in _SPLITS:
        missing = sorted(set(CIFAR10_CLASSES) - {CIFAR10_CLASSES[c] for s, c, *_ in members if s == split})
        if missing:
            raise ValueError(f"the {split} split has no images of class {', '.join(missing)}; "
                             f"every split needs every class")
    members.sort(key=lambda t: t[:3])
    return _split_arrays(members, spec.image_size)


def _read_idx(path: Path) -> np.ndarray:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path.name} holds {arr.size} bytes of data, header says {dims}")
    return arr.reshape(dims)


def _decode_idx(folder: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    a = {k: _read_idx(_idx_file(folder, stem)) for k, stem in _IDX_STEMS.items()}
    return {"train_x": a["train_x"][:, None], "train_y": a["train_y"].astype(np.int64),
            "test_x": a["test_x"][:, None], "test_y": a["test_y"].astype(np.int64)}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, lists, dicts and scalars: a CIFAR batch
    file that names any other callable is refused instead of run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # bytes in protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (not a CIFAR batch)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = _ArraysOnly(f, encoding="bytes").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    return (np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32),
            np.asarray(d[label_key], np.int64))


def _decode_cifar10_pickle(folder: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    train = [_cifar_batch(folder / f, "labels") for f in _CIFAR10_FILES[:5]]
    test_x, test_y = _cifar_batch(folder / "test_batch", "labels")
    return {"train_x": np.concatenate([x for x, _ in train]), "train_y": np.concatenate([y for _, y in train]),
            "test_x": test_x, "test_y": test_y}


def _decode_cifar100_pickle(folder: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    arrays = {}
    for split in _SPLITS:
        arrays[f"{split}_x"], arrays[f"{split}_y"] = _cifar_batch(folder / split, "fine_labels")
    return arrays


def _decode_svhn(folder: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    arrays = {}
    for split in _SPLITS:
        m = loadmat(folder / f"{split}_32x32.mat")
        y = np.asarray(m["y"], np.int64).reshape(-1)
        arrays[f"{split}_x"] = np.asarray(m["X"], np.uint8).transpose(3, 2, 0, 1)
        arrays[f"{split}_y"] = np.where(y == 10, 0, y)
    return arrays


def _decode_digits(_: None, spec: DatasetSpec) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.int64) * 255 // 16).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return {"train_x": x[tr], "train_y": y[tr], "test_x": x[te], "test_y": y[te]}


_DECODERS = {"digits": _decode_digits, "idx": _decode_idx, "cifar10-pickle": _decode_cifar10_pickle,
             "cifar100-pickle": _decode_cifar100_pickle, "imagefolder": _decode_imagefolder,
             "tar": _decode_tar, "svhn-mat": _decode_svhn}


def _source_files(src: _Source) -> tuple[str, list[Path]]:
    """(key prefix, files whose size/mtime identify the source) for the cache key."""
    if src.kind == "digits":  # located without importing scikit-learn (seconds per process)
        from importlib.metadata import version
        from importlib.util import find_spec

        package = Path(find_spec("sklearn").origin).parent
        return f"sklearn{version('scikit-learn')}", [package / "datasets" / "data" / "digits.csv.gz"]
    p = src.path
    files = {"idx": lambda: [_idx_file(p, s) for s in _IDX_STEMS.values()],
             "cifar10-pickle": lambda: [p / f for f in _CIFAR10_FILES[:6]],
             "cifar100-pickle": lambda: [p / s for s in _SPLITS],
             "svhn-mat": lambda: [p / f"{s}_32x32.mat" for s in _SPLITS],
             "tar": lambda: [p],
             "imagefolder": lambda: [f for *_, f in _image_folder_files(p, CIFAR10_CLASSES)]}[src.kind]()
    return src.kind, files


def _problem(spec: DatasetSpec, arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with decoded arrays (shape, dtype, label range), or None."""
    shape = (spec.channels, spec.image_size, spec.image_size)
    for split in _SPLITS:
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != shape:
            return f"{split} images are {x.dtype} {list(x.shape)}, expected uint8 [N,{','.join(map(str, shape))}]"
        if len(x) == 0 or len(x) != len(y):
            return f"{split} split has {len(x)} images and {len(y)} labels"
        if y.min() < 0 or y.max() >= spec.num_classes:
            return f"{split} labels span {y.min()}..{y.max()}, expected 0..{spec.num_classes - 1}"
    return None


_READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, struct.error, zlib.error,
                pickle.UnpicklingError, tarfile.TarError)


def load_dataset(name: str, data_dir=None, cache_dir=None) -> ImageData:
    """Load ``name`` (see module docstring for accepted sources), decoding once and caching the result in
    ``cache_dir`` (default: ``$FEDSIGN_CACHE`` or ``~/.cache/fedsign``). Raises DataSourceError if the
    source is missing or unreadable."""
    spec = get_spec(name)
    src = _locate(spec, data_dir)
    try:
        prefix, files = _source_files(src)
        path = cache_path(Path(cache_dir) if cache_dir not in (None, "") else default_cache_dir(), name,
                          cache_key(f"{name}|{prefix}", files))
        arrays = read_cache(path)
        if arrays is not None and _problem(spec, arrays):
            arrays = None  # a stale or damaged cache entry: decode again
        if arrays is None:
            arrays = _DECODERS[src.kind](src.path, spec)
            if problem := _problem(spec, arrays):
                raise ValueError(problem)
            arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
            try:
                write_cache(path, arrays)
            except OSError as e:
                warnings.warn(f"{name}: could not write cache {path}: {e}", stacklevel=2)
    except DataSourceError:
        raise
    except _READ_ERRORS as e:
        raise DataSourceError(f"{name}: cannot read {src.path}: {e}; {spec.source_hint}") from e
    t = {k: torch.from_numpy(np.require(v, requirements=["C", "W"])) for k, v in arrays.items()}
    return ImageData(t["train_x"], t["train_y"], t["test_x"], t["test_y"], spec)

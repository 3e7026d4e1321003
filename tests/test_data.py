"""Loaders (every source format), the decode cache, source errors and batch transforms."""
import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedsign.data import (CIFAR10_CLASSES, DATASETS, DataSourceError, check_data_source, default_cache_dir,
                          load_dataset, make_batch_transform, random_crop_flip)
from fedsign.data import loaders

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
CIFAR_TAR = SHARED / "cifar10-jpeg.tar.gz"


def _rand_images(n, c=3, s=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, s, s), dtype=np.uint8)


def _png_bytes(img_chw, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img_chw.transpose(1, 2, 0))).save(buf, format=fmt)
    return buf.getvalue()


def _image_tree(per_split=2, seed=0):
    """{(split, class index, file name): image [3,32,32]} with per_split images per class."""
    imgs = _rand_images(2 * 10 * per_split, seed=seed)
    tree, i = {}, 0
    for split in ("train", "test"):
        for c in range(10):
            for j in range(per_split):
                tree[(split, c, f"{j:04d}.png")] = imgs[i]
                i += 1
    return tree


def _write_tree(root, tree, extra_splits=()):
    for (split, c, fname), img in tree.items():
        for s in (split, *extra_splits) if split == "train" else (split,):
            d = root / s / CIFAR10_CLASSES[c]
            d.mkdir(parents=True, exist_ok=True)
            (d / fname).write_bytes(_png_bytes(img))


def _expected(tree, split):
    keys = sorted(k for k in tree if k[0] == split)
    return np.stack([tree[k] for k in keys]), np.array([k[1] for k in keys])


def _assert_data(data, train_x, train_y, test_x, test_y):
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    np.testing.assert_array_equal(data.train_x.numpy(), train_x)
    np.testing.assert_array_equal(data.train_y.numpy(), train_y)
    np.testing.assert_array_equal(data.test_x.numpy(), test_x)
    np.testing.assert_array_equal(data.test_y.numpy(), test_y)


# ---------------------------------------------------------------- real data

def test_digits_real_stratified_split(tmp_path):
    d = load_dataset("digits", cache_dir=tmp_path)
    assert d.train_x.shape == (1437, 1, 8, 8) and d.test_x.shape == (360, 1, 8, 8)
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0
    counts = np.bincount(d.test_y.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert check_data_source("digits", None) is None
    d2 = load_dataset("digits", cache_dir=tmp_path)  # from cache, identical
    assert torch.equal(d.train_x, d2.train_x) and torch.equal(d.test_y, d2.test_y)


@pytest.mark.requires_dataset("mnist")
def test_mnist_real(tmp_path):
    d = load_dataset("mnist", MNIST_DIR, cache_dir=tmp_path)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_y[:5].tolist() == [5, 0, 4, 1, 9] and d.test_y[:3].tolist() == [7, 2, 1]
    assert abs(d.train_x.float().mean().item() / 255 - DATASETS["mnist"].mean[0]) < 1e-3
    assert check_data_source("mnist") == MNIST_DIR.resolve()  # default dir: ../shared/data/mnist
    assert check_data_source("mnist", "") == MNIST_DIR.resolve()  # empty config value = default


@pytest.mark.requires_dataset("cifar10")
def test_cifar10_real_tarball(tmp_path):
    t0 = time.perf_counter()
    d = load_dataset("cifar10", CIFAR_TAR, cache_dir=tmp_path)
    decode_s = time.perf_counter() - t0
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(d.train_y.numpy()).tolist() == [5000] * 10
    assert np.bincount(d.test_y.numpy()).tolist() == [1000] * 10
    mean = d.train_x[::10].float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(DATASETS["cifar10"].mean), atol=0.01)
    assert decode_s < 120, f"decoding took {decode_s:.0f}s"
    print(f"cifar10 tarball decode: {decode_s:.1f}s")


# ---------------------------------------------------------------- formats written here

def test_fmnist_idx_files_and_torchvision_layout(tmp_path, write_fmnist):
    a = write_fmnist(tmp_path / "flat")
    d = load_dataset("fmnist", tmp_path / "flat", cache_dir=tmp_path / "cache")
    _assert_data(d, a["train_x"][:, None], a["train_y"], a["test_x"][:, None], a["test_y"])
    b = write_fmnist(tmp_path / "root" / "FashionMNIST" / "raw", seed=1)
    assert check_data_source("fmnist", tmp_path / "root") == (tmp_path / "root" / "FashionMNIST" / "raw").resolve()
    d = load_dataset("fmnist", tmp_path / "root", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(d.test_x.numpy()[:, 0], b["test_x"])


def _write_cifar_pickle(path, data, labels, label_key):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", label_key: labels.tolist(), b"data": data.reshape(len(data), -1),
                     b"filenames": [b"f.png"] * len(data)}, f, protocol=2)


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x, y = _rand_images(30), np.arange(30) % 10
    for i in range(5):
        _write_cifar_pickle(folder / f"data_batch_{i + 1}", x[4 * i:4 * i + 4], y[4 * i:4 * i + 4], b"labels")
    _write_cifar_pickle(folder / "test_batch", x[20:], y[20:], b"labels")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f, protocol=2)
    for where in (folder, tmp_path):  # the folder itself or its parent
        d = load_dataset("cifar10", where, cache_dir=tmp_path / "cache")
        _assert_data(d, x[:20], y[:20], x[20:], y[20:])


def test_cifar100_pickles_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x, fine = _rand_images(15), np.array([0, 99, 42, 7, 50] * 3)
    for split, sl in (("train", slice(0, 10)), ("test", slice(10, 15))):
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": x[sl].reshape(-1, 3072), b"fine_labels": fine[sl].tolist(),
                         b"coarse_labels": (fine[sl] // 5).tolist()}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [b"c"] * 100}, f, protocol=2)
    d = load_dataset("cifar100", tmp_path, cache_dir=tmp_path / "cache")
    _assert_data(d, x[:10], fine[:10], x[10:], fine[10:])


def test_svhn_mat_label_10_is_zero(tmp_path):
    from scipy.io import savemat

    x = _rand_images(12)
    y = np.array([10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3], np.uint8)
    for split, sl in (("train", slice(0, 8)), ("test", slice(8, 12))):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x[sl].transpose(2, 3, 1, 0), "y": y[sl, None]})
    d = load_dataset("svhn", tmp_path, cache_dir=tmp_path / "cache")
    y0 = np.where(y == 10, 0, y)
    _assert_data(d, x[:8], y0[:8], x[8:], y0[8:])


def test_cinic10_image_folder_ignores_valid(tmp_path):
    tree = _image_tree()
    _write_tree(tmp_path / "cinic", tree, extra_splits=("valid",))
    d = load_dataset("cinic10", tmp_path / "cinic", cache_dir=tmp_path / "cache")
    _assert_data(d, *_expected(tree, "train"), *_expected(tree, "test"))


def test_cifar10_image_folder_png_and_jpeg(tmp_path):
    tree = _image_tree(seed=3)
    _write_tree(tmp_path / "tree", tree)
    d = load_dataset("cifar10", tmp_path / "tree", cache_dir=tmp_path / "cache")
    _assert_data(d, *_expected(tree, "train"), *_expected(tree, "test"))
    smooth = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, None, :] * 8, (3, 32, 32))
    (tmp_path / "tree" / "train" / "cat" / "zzzz.jpg").write_bytes(_png_bytes(smooth, "JPEG"))
    d = load_dataset("cifar10", tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert d.train_x.shape[0] == 21 and d.train_y[8].item() == CIFAR10_CLASSES.index("cat")
    assert np.abs(d.train_x[8].numpy().astype(int) - smooth).mean() < 4  # lossy but close


def test_cifar10_tarball_format(tmp_path):
    tree = _image_tree(seed=5)
    tar_path = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for (split, c, fname), img in reversed(tree.items()):  # member order must not matter
            data = _png_bytes(img)
            info = tarfile.TarInfo(f"{split}/{CIFAR10_CLASSES[c]}/{fname}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for where in (tar_path, tmp_path):  # the tarball or the folder holding it
        assert check_data_source("cifar10", where) == tar_path.resolve()
        d = load_dataset("cifar10", where, cache_dir=tmp_path / "cache")
        _assert_data(d, *_expected(tree, "train"), *_expected(tree, "test"))


# ---------------------------------------------------------------- cache

def test_cache_hit_and_invalidation(tmp_path, monkeypatch, write_fmnist):
    calls = []
    real = loaders._DECODERS["idx"]
    monkeypatch.setitem(loaders._DECODERS, "idx", lambda *a: calls.append(1) or real(*a))
    src, cache = tmp_path / "src", tmp_path / "cache"
    write_fmnist(src)
    first = load_dataset("fmnist", src, cache_dir=cache)
    second = load_dataset("fmnist", src, cache_dir=cache)
    assert len(calls) == 1 and torch.equal(first.train_x, second.train_x)
    entries = list(cache.iterdir())
    assert [p.suffix for p in entries] == [".npz"]  # no temp files left behind
    entries[0].write_bytes(b"damaged")
    assert torch.equal(load_dataset("fmnist", src, cache_dir=cache).train_x, first.train_x)
    assert len(calls) == 2
    new = write_fmnist(src, seed=9)
    f = src / "train-images-idx3-ubyte.gz"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    third = load_dataset("fmnist", src, cache_dir=cache)
    assert len(calls) == 3
    np.testing.assert_array_equal(third.train_x.numpy()[:, 0], new["train_x"])


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSIGN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEDSIGN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fedsign"


# ---------------------------------------------------------------- errors

def test_missing_sources_raise_helpful_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataSourceError, match=r"cifar10: .*nope.*cifar-10-batches-py.*cifar10-jpeg\.tar\.gz") as e:
        check_data_source("cifar10", missing)
    assert isinstance(e.value, FileNotFoundError) and "\n" not in str(e.value)
    with pytest.raises(DataSourceError, match=r"cifar100: no data-dir given; .*cifar-100-python"):
        load_dataset("cifar100", None, cache_dir=tmp_path)
    with pytest.raises(DataSourceError, match=r"svhn: no svhn files found at .*train_32x32\.mat"):
        check_data_source("svhn", tmp_path)
    with pytest.raises(DataSourceError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fmnist", missing, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        check_data_source("imagenet", tmp_path)


def test_corrupt_sources_raise_data_source_error(tmp_path, write_fmnist, write_idx):
    write_fmnist(tmp_path / "f")
    (tmp_path / "f" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataSourceError, match="fmnist: cannot read"):
        load_dataset("fmnist", tmp_path / "f", cache_dir=tmp_path / "cache")
    write_idx(tmp_path / "f" / "t10k-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with pytest.raises(DataSourceError, match=r"test labels span 10\.\.10, expected 0\.\.9"):
        load_dataset("fmnist", tmp_path / "f", cache_dir=tmp_path / "cache")
    tree = _image_tree()
    _write_tree(tmp_path / "t", tree)
    (tmp_path / "t" / "test" / "dog" / "0000.png").write_bytes(b"garbage")
    with pytest.raises(DataSourceError, match="cannot decode image test/dog/0000.png"):
        load_dataset("cinic10", tmp_path / "t", cache_dir=tmp_path / "cache")
    (tmp_path / "t" / "train" / "dragon").mkdir()
    with pytest.raises(DataSourceError, match="class folders"):
        load_dataset("cinic10", tmp_path / "t", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- transforms

def test_eval_transform_is_plain_normalization():
    spec = DATASETS["cifar10"]
    x = torch.from_numpy(_rand_images(6))
    out = make_batch_transform(spec, train=False)(x, torch.Generator().manual_seed(1))
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(out, make_batch_transform(spec, train=False)(x, None))
    gray = torch.from_numpy(_rand_images(4, c=1, s=28))  # mnist: no augmentation even when training
    torch.testing.assert_close(make_batch_transform(DATASETS["mnist"], True)(gray, torch.Generator()),
                               make_batch_transform(DATASETS["mnist"], False)(gray, None))
    with pytest.raises(ValueError, match="expects uint8"):
        make_batch_transform(spec, train=False)(x.float(), None)
    assert make_batch_transform(spec, train=False) is make_batch_transform(spec, False)  # built once, not per client
    assert make_batch_transform(spec, train=True) is not make_batch_transform(spec, train=False)


def _match_crop(out, img, pad=4):
    """(dy, dx, flipped) such that out is that crop of zero-padded img, or None."""
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    h, w = img.shape[1:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flipped, cand in ((False, crop), (True, crop[:, :, ::-1])):
                if np.array_equal(out, cand):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_train_augmentation_crops_flips_and_is_seeded(name):
    spec = DATASETS[name]
    x = torch.from_numpy(_rand_images(32, seed=4))
    fn = make_batch_transform(spec, train=True)
    a = fn(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.float32
    torch.testing.assert_close(a, fn(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, fn(x, torch.Generator().manual_seed(1)))
    plain = make_batch_transform(spec, train=False)(x, None)
    assert (a - plain).abs().amax(dim=(1, 2, 3)).gt(0).sum() > 20  # most images moved
    raw = random_crop_flip(x, torch.Generator().manual_seed(0), flip=spec.hflip)
    matches = [_match_crop(raw[i].numpy(), x[i].numpy()) for i in range(len(x))]
    assert all(m is not None for m in matches)  # every output is a padded crop (maybe mirrored)
    flips = sum(m[2] for m in matches)
    assert (flips > 0) if spec.hflip else (flips == 0)  # SVHN is never mirrored
    assert len({m[:2] for m in matches}) > 5


def test_padded_images_keep_the_picture_centred_and_say_their_size():
    spec = DATASETS["fmnist"]
    x = torch.randint(1, 256, (3, 1, 28, 28), dtype=torch.uint8)
    data = loaders.ImageData(x, torch.arange(3), x[:2], torch.arange(2), spec)
    padded = data.padded(32)
    assert padded.train_x.shape == (3, 1, 32, 32) and padded.test_x.shape == (2, 1, 32, 32)
    assert padded.spec.image_size == 32 and padded.spec.name == "fmnist" and spec.image_size == 28
    assert torch.equal(padded.train_x[:, :, 2:30, 2:30], x) and int(padded.train_x.sum()) == int(x.sum())
    assert data.padded(28) is data
    with pytest.raises(ValueError, match="smaller 16x16"):
        data.padded(16)

"""The trained suite: Figs. 3, 4, 5, 7, 8 and 11 on networks trained to convergence (``--suite trained``).

resnet20, vgg8_bn and their BN-free twins (resnet20-nobn, vgg8) on the full Fashion-MNIST training split (zero-padded
to 32x32, as vgg8's five max-pools need), two seeds each, and resnet20 on the full CIFAR-10 training split, one seed (:data:`TRAINED`); every network is
trained through ``train_local`` with the paper's A.3 optimizer (SGD, momentum 0.9, lr 0.03 with a cosine
schedule over the epochs, weight decay 5e-4, batch 256). Weights are cached as safetensors in ``cache``
(outside git, default :data:`CACHE`) with a JSON of the network's test accuracy and training time beside
each; a cached network is loaded, not trained again, and a training stopped part-way resumes from its last
whole epoch (``<job>.progress.safetensors`` beside the weights, :meth:`Cache.train`). The analysis of each
network is written to ``out/<dataset>-seed<k>/numbers.json`` as soon as it is done (the BN suite's layout),
and a network whose
numbers are there is skipped: the suite resumes where it stopped. Within an analysis each finished part (a
Fig. 3 draw, Fig. 4, 5, 7, 8, a Fig. 11 arm) is kept in ``steps_<net>.json`` beside it (:class:`Steps`), so an
analysis stopped part-way resumes from its last finished part. ``time_budget``: no training or analysis
starts after that many seconds. A ``train_only`` process trains networks beside an analysing one (each training
holds a lock on its job, which the other process waits for instead of training it twice).
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fedsign.data import DATASETS, DatasetSpec, load_dataset, make_batch_transform
from fedsign.landscape import prepare_data, split_state
from fedsign.landscape.records import to_json, write_record
from fedsign.landscape.soups import split_halves
from fedsign.landscape.variants import float_state
from fedsign.landscape.weights import apply_weights
from fedsign.training import TrainProgress, TrainSettings, evaluate

from .bn_suite import net_figures
from .common import (FIG7_FILTER_1D, FIG7_SCALES, NETS, OUT, ROOT, Trained, bn_init_figure, build_net, run_header,
                     train_halves, train_model)

CACHE = ROOT / "runs" / "landscape-trained"  # git-ignored
TRAINED_OUT = OUT / "trained"
DATASET_TITLES = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "mnist": "MNIST", "digits": "digits"}
PAPER_SGD = TrainSettings(epochs=1, batch_size=256, lr=0.03, momentum=0.9, weight_decay=5e-4, lr_schedule="cosine")


@dataclass(frozen=True)
class Group:
    """Networks trained alike: ``nets`` (keys of NETS) on ``dataset``'s full training split, each for every
    seed of ``seeds``, ``epochs`` epochs; the first ``extra_seeds`` seeds also get Fig. 8's θ1 and, for the
    scale's ``fig7_nets``, Fig. 7's BN-weight inits (each one more network to train)."""

    dataset: str
    nets: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    extra_seeds: int = 1
    image_size: int | None = None  # zero-pad both splits to this size (None: the dataset's own)

    @property
    def spec(self) -> DatasetSpec:
        """The dataset's spec at the size the group trains on."""
        spec = DATASETS[self.dataset]
        return replace(spec, image_size=self.image_size or spec.image_size)


@dataclass(frozen=True)
class TrainedScale:
    """What the trained suite trains and how finely it evaluates (the BN suite's field names)."""

    groups: tuple[Group, ...]
    sgd: TrainSettings = PAPER_SGD  # its epochs: each group's
    test_samples: int = 2000  # seeded test images per evaluated point
    recal_samples: int = 1000  # training images for BN recalibration at every point
    noise_seeds: int = 5  # noise draws per model (Fig. 3)
    points: int = 9  # λ points in [-1, 1]
    interp_points: int = 9  # λ points in [-0.5, 1.5] (Fig. 8)
    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # Fig. 4
    small_batch: int = 64  # Fig. 8's θ1 (θ2: sgd.batch_size)
    # Fig. 11: each half of the training split trained from θ0 with sgd's lr (the random-init arm) and from θf
    # with soup_lr (the pre-trained arm), checkpoints at these epochs in both arms (the paper: E in {1, 2, 3, 5,
    # ..., 50}). One epoch at lr 0.01 left a BN-free vgg8's random-init halves at 17-22 % test accuracy and
    # SSR-AB 0.9998, i.e. at their start, which tests nothing (benchmarks/README.md, the trained suite).
    soup_epochs: tuple[int, ...] = (1, 3)
    soup_lr: float = 0.01
    fig7_nets: tuple[str, ...] = ("resnet20",)
    # PyTorch's default init: under FedRepo's (the FL presets') the BN-free vgg8 and resnet20 stay at chance on
    # Fashion-MNIST (240 SGD steps at lr 0.03: 9.8 % against 62-67 %), and vgg8_bn reaches 42 % after 60 steps
    # against 83 % (benchmarks/README.md, the trained suite).
    init: str = "pytorch"
    # Weights in channels_last (training and every evaluated point): on one core, a resnet20 SGD step of batch
    # 256 on 32x32 Fashion-MNIST 1.40 -> 0.93 s, a valley line 1.5x faster (vgg8 1.2x / 1.4x); values
    # equal to the contiguous layout's within float rounding (benchmarks/README.md, the trained suite).
    channels_last: bool = True


FMNIST_NETS = ("resnet20", "resnet20-nobn", "vgg8_bn", "vgg8")
# Fashion-MNIST padded to 32x32: vgg8's five max-pools need it; every network of the group sees the same images.
TRAINED = TrainedScale(groups=(Group("fmnist", FMNIST_NETS, (0, 1), 10, image_size=32),
                               Group("cifar10", ("resnet20",), (0,), 30, extra_seeds=0)))


@dataclass(frozen=True)
class Job:
    """One network to train: ``net`` from ``seed`` on ``dataset`` with ``settings`` (their epochs included)."""

    dataset: str
    net: str
    seed: int
    settings: TrainSettings
    bn_weight_init: str = "ones"

    def name(self, scale: TrainedScale) -> str:
        batch = "" if self.settings.batch_size == scale.sgd.batch_size else f"-bs{self.settings.batch_size}"
        init = "" if self.bn_weight_init == "ones" else f"-bn{self.bn_weight_init}"
        return f"{self.net}-seed{self.seed}{batch}{init}"


class SuiteError(ValueError):
    """A suite that cannot start: its options or the folders it would write to."""


def check_scale(scale: TrainedScale) -> None:
    unknown = [n for g in scale.groups for n in g.nets if n not in NETS]
    if unknown:
        raise SuiteError(f"unknown network {unknown[0]!r}; use one of {', '.join(NETS)}")
    for group in scale.groups:  # a network that cannot take the group's images fails here, not hours in
        spec = group.spec
        for net in group.nets:
            try:
                build_net(net, spec, 0, init=scale.init)
            except ValueError as err:
                raise SuiteError(f"{net} on {group.dataset} at {spec.image_size}x{spec.image_size}: {err}") from None
    if scale.test_samples < 1 or scale.recal_samples < 1 or scale.noise_seeds < 1 or scale.points < 3:
        raise SuiteError("the trained suite needs ≥ 1 test and recalibration image, ≥ 1 noise draw and "
                         "≥ 3 λ points")


def check_out(out: Path, scale: TrainedScale) -> None:
    """Refuse, before any work, an ``out`` holding numbers (or parts of an analysis) of another scale (they
    would be mixed or lost)."""
    wanted = json.loads(to_json(asdict(scale)))
    for path in sorted(out.glob("*/numbers.json")) + sorted(out.glob("*/steps_*.json")):
        stored = json.loads(path.read_text())
        if stored.get("scale", stored.get("key", {}).get("scale")) != wanted:
            raise SuiteError(f"{path} holds numbers of another scale; pass another --out (or move that folder)")


class Steps:
    """The finished parts of one network's analysis (the ``step`` of :func:`~.bn_suite.net_figures`), kept in
    ``path`` after each part with ``key`` (the scale and the analysed networks' JSON) and its wall seconds: a
    part stored there is read back, not computed again. A file of another key is refused (it would mix two
    analyses)."""

    def __init__(self, path: Path, key: dict):
        self.path, self.key, self.done, self.seconds = path, json.loads(to_json(key)), {}, {}
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored["key"] != self.key:
                raise SuiteError(f"{path} holds parts of an analysis of other networks (another cache?); "
                                 "delete it or pass another --out")
            self.done, self.seconds = stored["steps"], stored["seconds"]
        self.resumed_seconds = sum(self.seconds.values())  # spent by earlier calls on the parts read back

    def __call__(self, name: str, compute):
        if name in self.done:
            return self.done[name]
        start = time.perf_counter()
        value = compute()
        self.seconds[name] = time.perf_counter() - start
        self.done[name] = json.loads(to_json(value))
        partial = self.path.with_suffix(".partial")
        partial.write_text(to_json({"key": self.key, "steps": self.done, "seconds": self.seconds}) + "\n")
        partial.replace(self.path)
        return value


class Cache:
    """Trained weights ``<cache>/<dataset>/<job>.safetensors`` and their ``.json`` (accuracy, training time)."""

    def __init__(self, root: Path, scale: TrainedScale):
        self.root, self.scale = Path(root), scale

    def paths(self, job: Job) -> tuple[Path, Path]:
        stem = self.root / job.dataset / job.name(self.scale)
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def has(self, job: Job) -> bool:
        return all(p.is_file() for p in self.paths(job))

    def check(self, job: Job) -> None:
        """Refuse a cached ``job`` (or the progress of its training) of other settings: it would be reused as if
        it were this one."""
        key, meta_path = self.train_key(job), self.paths(job)[1]
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if {k: meta.get(k) for k in key} != key:
                raise SuiteError(f"{meta_path} was trained with other settings ({meta.get('settings')}, init "
                                 f"{meta.get('init')}, image size {meta.get('image_size')}, channels_last "
                                 f"{meta.get('channels_last')}); pass another --cache-dir (or move that file)")
        progress_path = self.progress_path(job)
        if progress_path.is_file() and self.progress_info(progress_path)["key"] != key:
            raise SuiteError(f"{progress_path} holds the progress of a training with other settings; delete it "
                             "or pass another --cache-dir")

    @staticmethod
    def progress_info(path: Path) -> dict:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["progress"])

    def group(self, job: Job) -> Group:
        return next(g for g in self.scale.groups if g.dataset == job.dataset)

    def load(self, job: Job, spec) -> tuple[Trained, dict]:
        weights, meta_path = self.paths(job)
        model = build_net(job.net, spec, job.seed, job.bn_weight_init, self.scale.init, self.scale.channels_last)
        init = split_state(model, float_state(model))[0]
        apply_weights(model, weights)
        meta = json.loads(meta_path.read_text())
        params, buffers = split_state(model, float_state(model))
        return Trained(model, params, buffers, init, meta["train_seconds"]), meta

    def progress_path(self, job: Job) -> Path:
        return self.paths(job)[0].with_suffix(".progress.safetensors")

    @contextmanager
    def training_lock(self, job: Job, log=print, wait: bool = True) -> Iterator[bool]:
        """Hold ``<job>.lock`` (an advisory ``flock``, released when its process ends, however it ends) while
        ``job`` trains: a process reaching a job another process is training waits for it, then loads it; with
        ``wait=False`` it does not wait and gets ``False`` (``True`` when it holds the lock)."""
        path = self.paths(job)[0].with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log(f"waiting for another process training {job.dataset}/{job.name(self.scale)}")
                fcntl.flock(held, fcntl.LOCK_EX)
            yield True

    def train_key(self, job: Job) -> dict:
        """What a cached network (and a training's progress) must match: its settings and layout."""
        return {"settings": json.loads(to_json(asdict(job.settings))), "init": self.scale.init,
                "image_size": self.group(job).spec.image_size, "channels_last": self.scale.channels_last}

    def train(self, job: Job, dataset, log=print) -> dict:
        """Train ``job`` through ``train_local``, write its weights, then its JSON (the JSON marks it done).
        After each epoch the training's progress is kept in ``<job>.progress.safetensors``: a training stopped
        part-way resumes from its last whole epoch (bitwise the uninterrupted one), then the file is removed."""
        spec, progress_path, key = dataset.spec, self.progress_path(job), self.train_key(job)
        resume, earlier = None, 0.0
        if progress_path.is_file():
            self.check(job)
            stored = self.progress_info(progress_path)
            resume = TrainProgress.from_tensors(load_file(str(progress_path)), stored["numbers"])
            earlier = stored["seconds"]
            log(f"resuming the training of {job.dataset}/{job.name(self.scale)} after epoch {resume.epochs_done}")
        begin = time.perf_counter()

        def keep(progress: TrainProgress) -> None:
            tensors, numbers = progress.to_tensors()
            seconds = earlier + time.perf_counter() - begin
            partial = progress_path.with_suffix(".partial")
            save_file(tensors, str(partial), metadata={"progress": to_json(
                {"key": key, "numbers": numbers, "seconds": seconds})})
            partial.replace(progress_path)
            log(f"  {job.dataset}/{job.name(self.scale)}: epoch {progress.epochs_done}/{job.settings.epochs} "
                f"({seconds:.0f} s)")

        progress_path.parent.mkdir(parents=True, exist_ok=True)
        t = train_model(job.net, spec, dataset.train_x, dataset.train_y.long(), job.settings, job.settings.epochs,
                        job.seed, bn_weight_init=job.bn_weight_init, init=self.scale.init,
                        channels_last=self.scale.channels_last, resume=resume, on_epoch=keep)
        acc, loss = evaluate(t.model, dataset.test_x, dataset.test_y.long(), make_batch_transform(spec, train=False))
        weights, meta_path = self.paths(job)
        partial = weights.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in float_state(t.model).items()}, str(partial))
        partial.replace(weights)
        meta = {"net": job.net, "dataset": job.dataset, "seed": job.seed, "bn_weight_init": job.bn_weight_init,
                "epochs": job.settings.epochs, "settings": asdict(job.settings), "train_samples": len(dataset.train_x),
                "image_size": spec.image_size, "init": self.scale.init, "channels_last": self.scale.channels_last,
                "test_accuracy": acc, "test_loss": loss, "test_images": len(dataset.test_x),
                "train_seconds": earlier + t.seconds, "torch_threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        meta_path.write_text(to_json(meta) + "\n")
        progress_path.unlink(missing_ok=True)
        return meta


def jobs_for(group: Group, net: str, seed: int, scale: TrainedScale) -> dict[str, Job]:
    """The networks one analysis needs: ``main`` (θf), and on the group's first ``extra_seeds`` seeds ``twin``
    (Fig. 8's θ1) and, for ``fig7_nets``, the ``uniform`` / ``gaussian`` BN-weight inits (Fig. 7)."""
    sgd = replace(scale.sgd, epochs=group.epochs)
    jobs = {"main": Job(group.dataset, net, seed, sgd)}
    if seed in group.seeds[:group.extra_seeds]:
        jobs["twin"] = Job(group.dataset, net, seed, replace(sgd, batch_size=scale.small_batch))
        if net in scale.fig7_nets and NETS[net][1]:
            jobs.update({init: Job(group.dataset, net, seed, sgd, init) for init in ("uniform", "gaussian")})
    return jobs


def run_names(scale: TrainedScale) -> list[str]:
    """The ``<dataset>-seed<k>`` folders of ``scale`` (one ``numbers.json`` each)."""
    return [f"{g.dataset}-seed{seed}" for g in scale.groups for seed in g.seeds]


def run_suite(scale: TrainedScale, out: Path, cache_dir: Path, *, data_dirs: dict[str, str] | None = None,
              time_budget: float = math.inf, threads: int = 1, nets: Collection[str] | None = None,
              runs: Collection[str] | None = None, train_only: bool = False, log=print) -> dict:
    """Train (or load) and analyse every network of ``scale`` (or only ``nets`` of the ``runs`` folders, see
    :func:`run_names`: processes with disjoint ``runs`` may share ``out`` and ``cache_dir``); returns what this
    call did: ``trained`` and ``analysed`` (names), ``stopped`` (why it stopped early, or None). ``train_only``:
    train the selection into the cache and analyse nothing (such a process may run beside one analysing the
    same folders; a network one of them is training, the other waits for, :meth:`Cache.training_lock`)."""
    check_scale(scale)
    unknown = [r for r in runs or () if r not in run_names(scale)] + \
        [n for n in nets or () if not any(n in g.nets for g in scale.groups)]
    if unknown:
        raise SuiteError(f"{unknown[0]!r} is not in the suite; runs: {', '.join(run_names(scale))}; networks: "
                         f"{', '.join(dict.fromkeys(n for g in scale.groups for n in g.nets))}")
    out, cache = Path(out), Cache(cache_dir, scale)
    check_out(out, scale)
    for group in scale.groups:
        for seed in group.seeds:
            for net in group.nets:
                for job in jobs_for(group, net, seed, scale).values():
                    cache.check(job)
    begin = time.perf_counter()
    done: dict = {"trained": [], "analysed": [], "stopped": None}

    def over_budget(what: str) -> bool:
        if time.perf_counter() - begin > time_budget:
            done["stopped"] = f"time budget of {time_budget:g} s spent before {what}"
            log(done["stopped"])
        return done["stopped"] is not None

    for group in scale.groups:
        dataset = None
        for seed in group.seeds:
            folder = out / f"{group.dataset}-seed{seed}"
            numbers_path = folder / "numbers.json"
            numbers = json.loads(numbers_path.read_text()) if numbers_path.is_file() else None
            data = None
            if runs and folder.name not in runs:
                continue
            for net in group.nets:
                if (numbers and net in numbers["nets"]) or (nets and net not in nets):
                    continue
                if dataset is None:
                    dataset = load_dataset(group.dataset, (data_dirs or {}).get(group.dataset))
                    dataset = dataset.padded(group.spec.image_size)
                spec = dataset.spec
                jobs = jobs_for(group, net, seed, scale)
                for wait, job in [(wait, job) for wait in (False, True) for job in jobs.values()]:
                    if cache.has(job):  # first the jobs no other process is training, then wait for the rest
                        continue
                    if over_budget(f"training {group.dataset}/{job.name(scale)}"):
                        return done
                    with cache.training_lock(job, log, wait=wait) as held:
                        if not held or cache.has(job):  # another process is training it, or has trained it
                            continue
                        meta = cache.train(job, dataset, log)
                    done["trained"].append(f"{group.dataset}/{job.name(scale)}")
                    write_networks(out, cache)
                    log(f"[{time.perf_counter() - begin:7.0f} s] trained {group.dataset}/{job.name(scale)}: "
                        f"test accuracy {meta['test_accuracy']:.4f} in {meta['train_seconds']:.0f} s")
                if train_only:
                    continue
                if over_budget(f"analysing {group.dataset}/{net}-seed{seed}"):
                    return done
                start = time.perf_counter()
                if data is None:
                    data = prepare_data(dataset.test_x, dataset.test_y, make_batch_transform(spec, train=False),
                                        dataset.train_x, test_samples=scale.test_samples,
                                        recal_samples=scale.recal_samples, seed=seed)
                numbers = numbers or numbers_header(scale, group.dataset, seed, threads, dataset, data)
                trained = {role: cache.load(job, spec) for role, job in jobs.items()}
                steps = Steps(folder / f"steps_{net}.json",
                              {"scale": asdict(scale), "networks": {role: meta for role, (_, meta) in trained.items()}})
                if steps.done:
                    log(f"resuming the analysis of {group.dataset}/{net}-seed{seed} after {', '.join(steps.done)}")
                res = analyse(net, group, seed, trained, dataset, data, scale, folder, steps)
                numbers["nets"][net] = res
                numbers["seconds"][net] = time.perf_counter() - start + steps.resumed_seconds
                numbers.setdefault("step_seconds", {})[net] = steps.seconds
                write_record(folder, "numbers", numbers)
                steps.path.unlink(missing_ok=True)
                done["analysed"].append(f"{group.dataset}/{net}-seed{seed}")
                log(f"[{time.perf_counter() - begin:7.0f} s] analysed {group.dataset}/{net}-seed{seed} "
                    f"in {numbers['seconds'][net]:.0f} s")
    write_networks(out, cache)
    return done


def numbers_header(scale: TrainedScale, dataset_name: str, seed: int, threads: int, dataset, data) -> dict:
    """A new ``numbers.json`` of one dataset and seed (the BN suite's keys), before any network."""
    return {**run_header(seed, threads, scale), "dataset": dataset_name, "scale_s": 1.0,
            "fig7_scales": FIG7_SCALES, "fig7_filter_1d": FIG7_FILTER_1D,
            "data": {"train": f"the full {DATASET_TITLES[dataset_name]} training split ({len(dataset.train_x)} images, "
                              f"{dataset.spec.image_size}x{dataset.spec.image_size})",
                     "test": f"{len(data.x)} seeded test images",
                     "recal": f"{len(data.recal_x)} seeded training images"},
            "nets": {}, "seconds": {}}


def analyse(net: str, group: Group, seed: int, trained: dict[str, tuple[Trained, dict]], dataset, data,
            scale: TrainedScale, folder: Path, steps: Steps) -> dict:
    """Figs. 3, 4, 5, 8, 11 (and 7) of network ``net`` from its trained networks (role -> (model, JSON), see
    :func:`jobs_for`), each part through ``steps``; PNGs in ``folder``, titled with network, dataset and test
    accuracy."""
    spec = dataset.spec
    t, meta = trained["main"]
    title = (f"{net} on {DATASET_TITLES[group.dataset]}, trained {group.epochs} epochs "
             f"(test acc {meta['test_accuracy']:.3f})")
    soup = replace(scale.sgd, lr=scale.soup_lr)

    def halves(start):
        return train_halves(net, spec, dataset.train_x, dataset.train_y.long(), split_halves(len(dataset.train_x), seed),
                            scale.sgd if start is None else soup, scale.soup_epochs, seed, init=scale.init,
                            channels_last=scale.channels_last, start=start)

    twin = (lambda: trained["twin"][0]) if "twin" in trained else None
    res = net_figures(net, t, data, scale, seed, folder, title, twin, halves, (scale.small_batch, scale.sgd.batch_size),
                      steps)
    res["network"] = meta
    if "uniform" in trained:
        res["fig7"] = steps("fig7", lambda: bn_init_figure(
            net, spec, dataset.train_x, dataset.train_y.long(), scale.sgd, group.epochs, data, scale.points, seed,
            folder / f"fig7_{net}.png", f"Fig. 7-style: {title}, BN weight init",
            trained={"ones": t, "uniform": trained["uniform"][0], "gaussian": trained["gaussian"][0]}))
    return res


def write_networks(out: Path, cache: Cache) -> None:
    """``out/networks.json``: every cached network's accuracy and training time (the cache is outside git),
    added to the entries already there, so a new cache (another machine) never drops a network recorded before."""
    path = Path(out) / "networks.json"
    metas = json.loads(path.read_text()) if path.is_file() else {}
    metas.update({f"{p.parent.name}/{p.stem}": json.loads(p.read_text()) for p in cache.root.glob("*/*.json")})
    if metas:
        write_record(out, "networks", dict(sorted(metas.items())))

"""One paper-sized VGG8 round: sequential local training against the vectorized engine.

10 clients x 5 epochs x 500 CIFAR-10 samples, batch 64, SGD lr 0.03 momentum 0.9
weight decay 1e-5 (the paper's local setting), augmentation on. ``sequential`` calls
:func:`fedsign.training.train_local` once per client (a plain PyTorch loop);
``vectorized`` trains all clients at once with :func:`fedsign.engines.vectorized.train_clients`.
Reference on one H200: the plain sequential loop takes 1.40 s per round, the same
steps vmapped over the 10 clients 0.51 s. ``--uneven`` gives client c ``(2c+1)/clients`` x ``--samples``
(the same total; 50..950 for 10 clients: short last batches and unequal step counts, which
the vectorized engine pads and masks);
``--mixed-precision`` runs the vectorized forward under bf16 autocast with channels-last
images; ``--json`` writes the figures to a file.

    python benchmarks/vgg8_round.py --data-dir ../shared/data/cifar10-jpeg.tar.gz --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsign.data import DATASETS, load_dataset, make_batch_transform  # noqa: E402
from fedsign.models import build_model  # noqa: E402
from fedsign.training import TrainSettings, resolve_device, train_local  # noqa: E402
from fedsign.engines.vectorized import ClientJob, train_clients  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_cuda_syncs(fn) -> int:
    """Host syncs ``fn`` makes, as ``torch.cuda.set_sync_debug_mode('warn')`` reports them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="vgg8")
    parser.add_argument("--dataset", default="cifar10", help="a smaller one (digits, with --model cnn) for smoke runs")
    parser.add_argument("--uneven", action="store_true", help="client c gets (2c+1)/clients x --samples")
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 autocast + channels-last (vectorized)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir if args.dataset == "cifar10" else None)
    spec = DATASETS[args.dataset]
    transform = make_batch_transform(spec, train=True)
    x = torch.as_tensor(data.train_x).to(device)
    y = torch.as_tensor(data.train_y).long().to(device)
    sizes = [args.samples * (2 * c + 1) // args.clients if args.uneven else args.samples for c in range(args.clients)]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
    starts = [sum(sizes[:c]) for c in range(args.clients)]
    jobs = [ClientJob(x[perm[a:a + n]], y[perm[a:a + n]], seed=c) for c, (a, n) in enumerate(zip(starts, sizes))]
    settings = TrainSettings(args.epochs, 64, 0.03, 0.9, 1e-5)
    torch.manual_seed(0)
    model = build_model(args.model, spec.num_classes, spec.channels, spec.image_size).to(device)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}

    def sequential() -> None:
        for job in jobs:
            model.load_state_dict(start)
            train_local(model, job.images, job.labels, settings, seed=job.seed, transform=transform)

    def vectorized() -> None:
        train_clients(model, params, buffers, jobs, settings, spec, mixed_precision=args.mixed_precision)

    results = {}
    for name, fn in (("sequential", sequential), ("vectorized", vectorized)):
        fn()  # warm-up (cuDNN autotuning, allocator)
        times = []
        for _ in range(args.repeats):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        results[name] = statistics.median(times)
        print(f"{name:<11} {results[name]:.3f} s/round  (runs: {', '.join(f'{t:.3f}' for t in times)})", flush=True)
    syncs = {}
    if device.type == "cuda":  # the same count for 1 and 2 epochs: no sync per step
        for epochs in (1, 2):
            one = replace(settings, epochs=epochs)
            syncs[f"{epochs}_epochs"] = count_cuda_syncs(lambda: train_clients(
                model, params, buffers, jobs, one, spec, mixed_precision=args.mixed_precision))
        print(f"host syncs of a vectorized round: {syncs}", flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    setup = (f"{args.model} on {args.dataset}, {args.clients} clients x {args.epochs} epochs x "
             f"{'uneven' if args.uneven else args.samples} samples, batch 64"
             f"{', bf16 + channels-last' if args.mixed_precision else ''}")
    print(f"speed-up {results['sequential'] / results['vectorized']:.2f}x on {gpu}; {setup}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": gpu, "setup": setup, "s_per_round": results,
                                               "vectorized_host_syncs": syncs}, indent=2))


if __name__ == "__main__":
    main()

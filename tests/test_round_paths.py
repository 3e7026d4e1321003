"""The round's fast paths give the results of the slow ones: model initialization per ``init``, the engine
``auto`` picks, the in-process grid's client thread, the finiteness screen, evaluation batches,
and a pinned Table-1 preset cell that must reproduce the numbers the code gave before the round was made faster."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fedsign.config import ConfigError, RunConfig, merge_overrides
from fedsign.engines import choose_engine, run_inprocess
from fedsign.models import DEFAULT_INIT, MODEL_NAMES, build_model, float_state, resolve_init
from fedsign.models.mlp import MLP
from fedsign.results import read_metrics
from fedsign.task import build_run_model, load_tensors
from fedsign.tensors import finite_flags
from fedsign.training import EVAL_BATCH_SIZE, evaluate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from table1_sweep.grid import PRESETS as TABLE1_PRESETS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = "dataset='digits' num-clients=4 clients-per-round=4 num-rounds=2 local-epochs=1 seed=5 device='cpu'"


# ------------------------------------------------------------------ init
def test_pytorch_init_keeps_the_layer_constructors_draws():
    torch.manual_seed(3)
    reference = MLP(10, 1, 28)  # PyTorch's default initialization, the same draws in the same order
    torch.manual_seed(3)
    model = build_model("mlp", 10, 1, 28, init="pytorch")
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_fedrepo_init_draws_small_linear_weights_and_zero_biases():
    torch.manual_seed(0)
    model = build_model("mlp", 10, 1, 28, init="fedrepo")
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in linear)
    assert abs(float(linear[0].weight.detach().std()) - 0.01) < 5e-4  # N(0, 0.01), 156,800 draws
    torch.manual_seed(0)
    default = build_model("mlp", 10, 1, 28, init="pytorch")
    assert float(next(default.parameters()).detach().std()) > 0.02  # PyTorch's Kaiming-uniform: 1/sqrt(3 * 784)


def test_auto_init_per_model_and_config_json_names_the_scheme(tmp_path):
    assert resolve_init("auto", "vgg8") == resolve_init("auto", "vgg16_bn") == "fedrepo"
    assert {resolve_init("auto", m) for m in MODEL_NAMES if not m.startswith("vgg")} == {"pytorch"}
    assert set(DEFAULT_INIT) == set(MODEL_NAMES)
    assert resolve_init("fedrepo", "mlp") == "fedrepo"
    config = RunConfig.from_overrides(f"{SMALL} model='cnn' out-dir='{tmp_path / 'run'}'").resolved()
    assert config.init == "pytorch"
    torch.manual_seed(config.seed)
    expected = build_model("cnn", 10, 1, 8, init="pytorch").state_dict()
    built = build_run_model(config).state_dict()
    assert all(torch.equal(built[k], v) for k, v in expected.items())
    run_inprocess(config.replace(num_rounds=1), progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["init"] == "pytorch"
    with pytest.raises(ConfigError, match="init must be one of auto, fedrepo, pytorch"):
        RunConfig.from_overrides("init='xavier'")


# ---------------------------------------------------------------- engine
def test_auto_engine_is_sequential_on_cpu_vectorized_on_cuda(tmp_path, capsys, monkeypatch):
    config = RunConfig.from_overrides(f"{SMALL} out-dir='{tmp_path / 'run'}'").resolved()
    assert config.engine == "auto" and choose_engine(config) == "inprocess"
    assert choose_engine(config.replace(engine="vectorized")) == "vectorized"
    run_inprocess(config.replace(num_rounds=1), progress=True)
    assert capsys.readouterr().out.splitlines()[0] == "engine: inprocess (engine='auto' on cpu)"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["engine"] == "inprocess"
    import fedsign.engines

    monkeypatch.setattr(fedsign.engines, "resolve_device", lambda name: torch.device("cuda"))
    assert choose_engine(config) == "vectorized"


# ------------------------------------------------------ in-process delivery
def _final_model(config: RunConfig) -> dict:
    run_inprocess(config, progress=False)
    from safetensors.torch import load_file

    return load_file(str(Path(config.out_dir) / "model.safetensors"))


@pytest.mark.parametrize("strategy", ["fedavg", "moon", "feddyn"])
def test_a_run_from_another_thread_gives_the_same_model(tmp_path, strategy):
    """Clients run on the grid's client thread whoever drives the round: same config, same model bit for bit."""
    base = RunConfig.from_overrides(f"{SMALL} strategy='{strategy}' engine='inprocess'").resolved()
    in_place = _final_model(base.replace(out_dir=str(tmp_path / "main")))
    result = {}
    worker = threading.Thread(target=lambda: result.update(_final_model(base.replace(out_dir=str(tmp_path / "t")))))
    worker.start()
    worker.join()
    assert in_place.keys() == result.keys()
    assert all(torch.equal(in_place[k], result[k]) for k in in_place)


def test_a_queued_client_call_runs_once_unless_withdrawn_before_it_starts():
    from fedsign.engines.inprocess import ClientCall, ClientThread

    runs = []
    started, withdrawn = ClientCall(lambda: runs.append("a")), ClientCall(lambda: runs.append("b"))
    assert started.start() and not started.withdraw() and not started.start()
    assert withdrawn.withdraw() and not withdrawn.start()
    thread = ClientThread()
    gate = threading.Event()
    blocking = thread.submit(gate.wait)
    queued = [thread.submit(lambda i=i: runs.append(i)) for i in range(3)]
    assert queued[1].withdraw()  # still queued behind the blocking call
    gate.set()
    thread.retire()
    thread.thread.join(5)
    assert blocking.done.is_set() and queued[0].done.is_set() and queued[2].done.is_set()
    assert not queued[1].done.is_set() and runs == [0, 2]


OPENMP_TEAM = """
import os, torch
from fedsign.engines.inprocess import release_openmp_threads
torch.set_num_threads(2)
tasks = lambda: len(os.listdir("/proc/self/task"))
before = tasks()
x = torch.arange(2_000_000, dtype=torch.float32)
total = (x * 2).sum()  # parallel regions: this thread's OpenMP team starts its second thread
with_team = tasks()
release_openmp_threads()
released = tasks()
assert torch.equal((x * 2).sum(), total)  # a new team, the same result
print(before, with_team, released, tasks())
"""


def _openmp_pauses():
    from fedsign.engines.inprocess import _openmp_pauses as pauses

    return pauses()


@pytest.mark.skipif(not _openmp_pauses(), reason="this torch does not run on libgomp (not Linux, or another OpenMP "
                    "runtime): there is no team to give back and release_openmp_threads does nothing")
def test_a_thread_gives_back_its_openmp_team_when_it_waits():
    out = subprocess.run([sys.executable, "-c", OPENMP_TEAM], capture_output=True, text=True, check=True).stdout
    before, with_team, released, again = map(int, out.split())
    assert (with_team, released, again) == (before + 1, before, before + 1)


def test_the_server_and_the_client_thread_give_back_their_teams_before_they_wait(tmp_path, monkeypatch):
    import fedsign.engines.inprocess as inprocess

    callers = []
    monkeypatch.setattr(inprocess, "release_openmp_threads", lambda: callers.append(threading.current_thread().name))
    config = RunConfig.from_overrides(f"{SMALL} engine='inprocess' out-dir='{tmp_path / 'run'}'").resolved()
    run_inprocess(config, progress=False)
    server = threading.current_thread().name
    # per round: the server before it queues the calls, the client thread after the last one (plus the node query)
    assert callers.count(server) == config.num_rounds + 1
    assert callers.count("fedsign-client") == config.num_rounds + 1


def test_an_unloadable_libgomp_mapping_is_skipped(monkeypatch):
    """A mapped libgomp that cannot be opened again (deleted since) gives no pause; it never reaches the threads."""
    import fedsign.engines.inprocess as inprocess

    line = "7f00-7f10 r-xp 00000000 08:01 1 /nonexistent/libgomp-0123.so.1 (deleted)"
    monkeypatch.setattr(inprocess.Path, "read_text", lambda self: line)
    inprocess._openmp_pauses.cache_clear()
    try:
        assert inprocess._openmp_pauses() == ()
        inprocess.release_openmp_threads()
    finally:
        monkeypatch.undo()
        inprocess._openmp_pauses.cache_clear()


def test_clients_share_one_client_thread_and_a_hanging_one_leaves_nothing_behind(tmp_path, monkeypatch):
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # warm-up: the timeout is for training
    import fedsign.engines.inprocess as inprocess

    started = []
    original = inprocess.ClientThread.__init__
    monkeypatch.setattr(inprocess.ClientThread, "__init__", lambda self: (started.append(1), original(self))[1])
    config = RunConfig.from_overrides(merge_overrides(SMALL, "num-rounds=3 round-timeout=2 fail-partitions='2:hang@1' "
                                                      f"engine='inprocess' out-dir='{tmp_path / 'run'}'")).resolved()
    def client_threads():  # (not a thread count: tqdm starts its monitor thread with the first bar of the process)
        return {t for t in threading.enumerate() if t.name == "fedsign-client"}

    before = client_threads()  # other tests' grids may have left theirs
    results = run_inprocess(config, progress=False)
    assert [(r["num_replies"], r["num_failures"]) for r in results.rows] == [(3, 1), (4, 0), (4, 0)]
    assert len(started) == 2  # 3 rounds x 4 clients on one thread, one more after the hang
    deadline = time.monotonic() + 10
    while client_threads() - before and time.monotonic() < deadline:
        time.sleep(0.1)  # the late call sleeps round-timeout + 1 s, then its thread ends
    assert not client_threads() - before


# ----------------------------------------------------------- screening
def test_finiteness_screen_takes_the_exact_path_when_a_norm_overflows():
    huge = {"w": torch.full((4,), 3e38)}  # finite values whose norm overflows float32
    assert finite_flags([huge, {"w": torch.tensor([1.0, float("nan")])}, {"b": torch.ones(2)}]) == [True, False, True]
    assert finite_flags([{"w": torch.ones(3), "n": torch.tensor(3)}, {}]) == [True, True]
    mixed = {"a": torch.ones(2, dtype=torch.float64), "b": torch.tensor([float("inf")], dtype=torch.float16)}
    assert finite_flags([mixed]) == [False]


def test_load_tensors_refuses_a_wrong_shape_and_copies_exact_values():
    model = build_model("mlp", 10, 1, 28)
    tensors = {k: torch.randn_like(v) for k, v in float_state(model).items()}
    load_tensors(model, tensors)
    assert all(torch.equal(v, tensors[k]) for k, v in float_state(model).items())
    first = next(iter(tensors))
    with pytest.raises(ValueError, match=f"array '{first}' has shape"):
        load_tensors(model, {**tensors, first: tensors[first].reshape(-1)[:1]})


def test_evaluation_batch_size_does_not_change_the_accuracy():
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, 28)
    x, y = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (300,))
    transform = lambda batch, generator=None: batch.float() / 255  # noqa: E731
    small, large = evaluate(model, x, y, transform), evaluate(model, x, y, transform, batch_size=1024)
    assert EVAL_BATCH_SIZE["cpu"] < 300 and small[0] == large[0] and small[1] == pytest.approx(large[1], rel=1e-6)


# ------------------------------------------------------ pinned preset cell
# Round 3 and 4 of cpu-converged's cells (num-rounds=4, eval-every=2, Fashion-MNIST, seed 0, alpha 0.5) as the code
# before the faster round gave them (commit 4c149dc, one torch thread). Bit for bit only on the CPU they were pinned on:
# a later machine's Xeon (torch kernels at AVX512, environment.json's cpu_capability) gives the same code's train
# losses up to 1e-7 apart (relative) and test losses up to 1.1e-6, so the losses hold to 1e-5 (a change of the
# arithmetic — sampling, order, a term — moves them far more) and accuracy to one test image.
PINNED = {
    "fedavg": (2.254626232308797, 2.167611801374209, 0.2256, 2.2466116943359373),
    "fedsign": (-45.084635326743786, -45.17629259549655, 0.2292, 2.243878759765625),
    "moon": (3.642945516175328, 2.3813417558069827, 0.1026, 2.371057177734375),
    "feddyn": (2.2519222519454813, 2.134411024880576, 0.1721, 2.2050778930664063),
}


@pytest.mark.requires_dataset("fmnist")
@pytest.mark.parametrize("strategy", sorted(PINNED))
def test_pinned_cpu_converged_cell_reproduces(tmp_path, strategy):
    overrides = merge_overrides(TABLE1_PRESETS["cpu-converged"].common,
                                f"dataset='fmnist' dirichlet-alpha=0.5 seed=0 num-rounds=4 eval-every=2 "
                                f"strategy='{strategy}' out-dir='{tmp_path / 'cell'}'")
    run_inprocess(RunConfig.from_overrides(overrides).resolved(), progress=False)
    rows = read_metrics(tmp_path / "cell")
    loss3, loss4, accuracy, test_loss = PINNED[strategy]
    losses = (rows[2]["train_loss"], rows[3]["train_loss"], rows[3]["loss"])
    assert losses == pytest.approx((loss3, loss4, test_loss), rel=1e-5)
    assert rows[3]["accuracy"] == pytest.approx(accuracy, abs=1e-4)

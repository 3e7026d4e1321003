"""The ClientApp: local training of one partition with the run's client algorithm.

The node's ``partition-id`` (node config) selects its Dirichlet partition; every other
setting comes from the run config, the same on all nodes. Per-client algorithm state
(MOON's previous model, FedDyn's g_k) lives in ``context.state`` between rounds (as device
tensors when the engine's contexts hold a ``DeviceRecordDict``, as ArrayRecords otherwise),
or, when the node config sets ``state-dir``, on the node's disk, where it survives a SuperNode
restart (Flower keeps ``context.state`` in the SuperNode's memory only). The model a client
trains comes from the process's ``CLIENT_MODELS`` (built once, reused by every client). A node config
``data-dir`` replaces the run's data-dir on that node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from safetensors.torch import load_file, save
from torch import Tensor, nn

from clients import ClientAlgorithm, ClientRound, ClientState, make_client_algorithm
from fedsign.algorithms import client_hyperparameters
from fedsign.config import RunConfig
from fedsign.data import DATASETS, make_batch_transform
from fedsign.faults import corrupt_reply, fail_before_training, fault_for
from fedsign.results import atomic_write
from fedsign.models import float_state, hand_over_float_state
from fedsign.task import CLIENT_MODELS, client_data, initial_model, load_tensors, mean_partition_size
from fedsign.tensors import DeviceRecordDict, pack, to_array_record, unpack
from fedsign.training import TrainSettings, TrainStats, derive_seed, resolve_device, train_local

STATE_PREFIX = "client-state."

app = ClientApp()


def run_config(context: Context) -> RunConfig:
    """The run config as sent by the server (already validated there), with this node's
    ``data-dir`` if its node config sets one."""
    return _run_config(tuple(context.run_config.items()), str(context.node_config.get("data-dir") or ""))


@lru_cache(maxsize=16)
def _run_config(items: tuple, data_dir: str) -> RunConfig:
    """``run_config`` for hashable inputs: built once per run, not per message."""
    config = RunConfig.from_mapping(dict(items), validate=False)
    return config.replace(data_dir=data_dir) if data_dir else config


@lru_cache(maxsize=16)
def _with_hyperparameters(config: RunConfig, values: tuple[tuple[str, Any], ...]) -> RunConfig:
    return config.replace(**dict(values))


def partition_id(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError("node config lacks 'partition-id'; start the SuperNode with "
                         "--node-config \"partition-id=K num-partitions=N\"") from None


def state_file(context: Context, state_key: str) -> Path | None:
    """``<state-dir>/<state_key>/partition-<id>.safetensors`` if the node config sets
    ``state-dir``; ``state_key`` (sent by the server, kept in its checkpoints) names the run."""
    state_dir = context.node_config.get("state-dir")
    if not state_dir:
        return None
    if not re.fullmatch(r"[A-Za-z0-9_-]+", state_key):
        raise ValueError(f"state key {state_key!r} is not a plain name")
    return Path(str(state_dir)) / state_key / f"partition-{partition_id(context)}.safetensors"


def load_state(context: Context, state_key: str = "") -> ClientState:
    """This client's state: from its ``state_file`` when there is one, else ``context.state``."""
    path = state_file(context, state_key or f"run-{context.run_id}")
    if path is None and isinstance(context.state, DeviceRecordDict):
        return dict(context.state.tensors)
    if path is None:
        return {key[len(STATE_PREFIX):]: record.to_torch_state_dict()
                for key, record in context.state.array_records.items() if key.startswith(STATE_PREFIX)}
    if not path.exists():
        return {}
    state: ClientState = {}
    for key, tensor in load_file(str(path)).items():
        name, param = key.split("/", 1)
        state.setdefault(name, {})[param] = tensor
    return state


def save_state(context: Context, state: ClientState, state_key: str = "", copy: bool = True) -> None:
    """Keep ``state`` where ``load_state`` finds it (the file is replaced atomically). In ``context.state``'s
    device tensors: copies, unless ``copy`` is False (no tensor of ``state`` is written again)."""
    path = state_file(context, state_key or f"run-{context.run_id}")
    if path is None and isinstance(context.state, DeviceRecordDict):
        context.state.tensors.update({name: {k: v.detach().clone() if copy else v.detach() for k, v in tensors.items()}
                                      for name, tensors in state.items()})
        return
    if path is None:
        for name, tensors in state.items():
            context.state[STATE_PREFIX + name] = ArrayRecord({k: v.detach().cpu() for k, v in tensors.items()})
        return
    if not state:
        return
    flat = {f"{name}/{param}": v.detach().cpu().contiguous() for name, tensors in state.items()
            for param, v in tensors.items()}
    atomic_write(path, save(flat))


def state_records(context: Context) -> RecordDict:
    """This node's ``context.state`` with client state held as device tensors turned into ArrayRecords
    (what a checkpoint keeps)."""
    state = context.state
    if not isinstance(state, DeviceRecordDict):
        return state
    return RecordDict({**state, **{STATE_PREFIX + name: to_array_record(tensors)
                                   for name, tensors in list(state.tensors.items())}})  # a late client may add


def device_state(records: RecordDict) -> DeviceRecordDict:
    """``state_records``' inverse: a context state holding the client state as tensors."""
    tensors = {key[len(STATE_PREFIX):]: record.to_torch_state_dict()
               for key, record in records.array_records.items() if key.startswith(STATE_PREFIX)}
    return DeviceRecordDict({k: v for k, v in records.items() if not k.startswith(STATE_PREFIX)}, tensors)


def train_settings(config: RunConfig) -> TrainSettings:
    return TrainSettings(epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr,
                         momentum=config.momentum, weight_decay=config.weight_decay,
                         grad_clip=config.grad_clip)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server this node's partition id (it orders nodes by it)."""
    info = MetricRecord({"partition-id": partition_id(context)})
    return Message(RecordDict({"info": info}), reply_to=msg)


@dataclass
class LocalTraining:
    """One client's round between receiving the global model and replying (shared by
    the sequential ``train`` handler and the vectorized engine)."""

    msg: Message
    context: Context
    algorithm: ClientAlgorithm
    round: ClientRound
    state_key: str
    fault: str
    images: Tensor
    labels: Tensor
    seed: int
    term_inputs: dict | None = None  # the algorithm's term_inputs (None without a term)
    owns_model: bool = True  # the model came from CLIENT_MODELS for this job alone (``end_training`` returns it)

    @property
    def config(self) -> RunConfig:
        return self.round.config

    @property
    def model(self) -> nn.Module:
        return self.round.model


def received_config(msg: Message, context: Context) -> RunConfig:
    """The run config with the hyperparameters the strategy sent in this message (``client_config``)."""
    config = run_config(context)
    sent = msg.content["config"]
    hyperparameters = client_hyperparameters(config.strategy, config.sign_gamma)
    missing = [h.key for h in hyperparameters if h.key not in sent]
    if missing:
        raise ValueError(f"the server's train message lacks hyperparameter '{missing[0]}' of strategy "
                         f"'{config.strategy}': run a strategy built by fedsign.server.make_strategy")
    return _with_hyperparameters(config, tuple((h.field, type(h.default)(sent[h.key])) for h in hyperparameters))


def begin_training(msg: Message, context: Context, model: nn.Module | None = None) -> LocalTraining:
    """Load the received global model into ``model`` (default: one from ``CLIENT_MODELS``); gather this
    client's state and data, and the loss term's inputs when the algorithm has a term."""
    config = received_config(msg, context)
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    state_key = str(msg.content["config"].get("state-key", ""))
    fault = fault_for(config.fail_partitions, config.num_clients, pid, server_round)
    if fault:
        fail_before_training(fault, config.round_timeout)
    algorithm = make_client_algorithm(config)
    owns_model = model is None
    if model is None:
        model = CLIENT_MODELS.acquire(config, algorithm, resolve_device(config.device))
    try:
        device = next(model.parameters()).device
        received = unpack(msg.content, "arrays", device)
        if received is None:
            raise ValueError("the server's train message has no 'arrays' (the global model)")
        load_tensors(model, received)
        images, labels = client_data(config, pid, device)
        ctx = ClientRound(
            config=config, model=model, global_params={k: received[k] for k, _ in model.named_parameters()},
            global_state=received,
            state=load_state(context, state_key), partition_id=pid, server_round=server_round,
            num_examples=len(images), mean_num_examples=mean_partition_size(config),
            fresh_model=lambda seed: initial_model(config, seed),
        )
        job = LocalTraining(msg, context, algorithm, ctx, state_key, fault, images, labels,
                            derive_seed(config.seed, server_round, pid), owns_model=owns_model)
        if algorithm.has_term:
            job.term_inputs = algorithm.term_inputs(ctx)
    except BaseException:
        if owns_model:
            CLIENT_MODELS.release(model)
        raise
    return job


def finish_training(job: LocalTraining, stats: TrainStats) -> Message:
    """Update the client state and reply with the trained model and its metrics, in the form the
    global model came in (by reference within the process, an ArrayRecord across processes)."""
    extra = job.algorithm.finish(job.round)
    # a pooled model is loaded before every use: it gives its trained tensors up to the reply (and to a state
    # that holds them) without a copy; nothing writes them again
    tensors = hand_over_float_state(job.model) if job.owns_model else float_state(job.model)
    save_state(job.context, job.round.state, job.state_key, copy=not job.owns_model)
    metrics = {"num-examples": stats.num_examples, "train_loss": stats.train_loss, "ce_loss": stats.ce_loss, **extra}
    if stats.term_grad_ratio is not None:  # the median over the round's clients goes to metrics.csv
        metrics["term_grad_ratio"] = stats.term_grad_ratio
    if job.fault:
        tensors = corrupt_reply(job.fault, tensors)
    content = pack({"metrics": MetricRecord(metrics)}, "arrays", tensors,
                   by_reference=isinstance(job.msg.content, DeviceRecordDict))
    return Message(content, reply_to=job.msg)


def end_training(job: LocalTraining) -> None:
    """Give the job's model back to ``CLIENT_MODELS`` when it took one."""
    if job.owns_model:
        CLIENT_MODELS.release(job.model)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's partition and reply with it."""
    job = begin_training(msg, context)
    try:
        stats = train_local(
            job.model, job.images, job.labels, train_settings(job.config),
            seed=job.seed,
            transform=make_batch_transform(DATASETS[job.config.dataset], train=True),
            term=job.algorithm.make_term(job.round, job.term_inputs),
            measure_term=job.algorithm.has_term,
        )
        return finish_training(job, stats)
    finally:
        end_training(job)

"""The ClientApp: local training of one partition with the run's client algorithm.

The node's ``partition-id`` (node config) selects its Dirichlet partition; every other
setting comes from the run config, the same on all nodes. Per-client algorithm state
(MOON's previous model, FedDyn's g_k) lives in ``context.state`` between rounds, or, when
the node config sets ``state-dir``, on the node's disk, where it survives a SuperNode
restart (Flower keeps ``context.state`` in the SuperNode's memory only). A node config
``data-dir`` replaces the run's data-dir on that node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
from fedsign.task import build_run_model, client_data, load_arrays, model_arrays, run_partitions
from fedsign.training import TrainSettings, TrainStats, derive_seed, resolve_device, term_grad_ratio, train_local

STATE_PREFIX = "client-state."

app = ClientApp()


def run_config(context: Context) -> RunConfig:
    """The run config as sent by the server (already validated there), with this node's
    ``data-dir`` if its node config sets one."""
    config = RunConfig.from_mapping(context.run_config, validate=False)
    data_dir = context.node_config.get("data-dir")
    return config.replace(data_dir=str(data_dir)) if data_dir else config


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


def save_state(context: Context, state: ClientState, state_key: str = "") -> None:
    """Keep ``state`` where ``load_state`` finds it (the file is replaced atomically)."""
    path = state_file(context, state_key or f"run-{context.run_id}")
    if path is None:
        for name, tensors in state.items():
            context.state[STATE_PREFIX + name] = ArrayRecord({k: v.detach().cpu() for k, v in tensors.items()})
        return
    if not state:
        return
    flat = {f"{name}/{param}": v.detach().cpu().contiguous() for name, tensors in state.items()
            for param, v in tensors.items()}
    atomic_write(path, save(flat))


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
    term_grad_ratio: float | None = None

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
    return config.replace(**{h.field: type(h.default)(sent[h.key]) for h in hyperparameters})


def begin_training(msg: Message, context: Context) -> LocalTraining:
    """Build the model with the received global arrays, this client's state and data; measure
    ``term_grad_ratio`` on the first step when the algorithm has a loss term."""
    config = received_config(msg, context)
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    state_key = str(msg.content["config"].get("state-key", ""))
    fault = fault_for(config.fail_partitions, config.num_clients, pid, server_round)
    if fault:
        fail_before_training(fault, config.round_timeout)
    device = resolve_device(config.device)
    algorithm = make_client_algorithm(config)
    model = build_run_model(config, algorithm).to(device)
    load_arrays(model, msg.content["arrays"])
    images, labels = client_data(config, pid, device)
    partitions = run_partitions(config)
    ctx = ClientRound(
        config=config, model=model, global_params={k: v.detach().clone() for k, v in model.named_parameters()},
        state=load_state(context, state_key), partition_id=pid, server_round=server_round,
        num_examples=len(images), mean_num_examples=sum(len(p) for p in partitions) / len(partitions),
        fresh_model=lambda seed: build_run_model(config, algorithm, seed=seed),
    )
    job = LocalTraining(msg, context, algorithm, ctx, state_key, fault, images, labels,
                        derive_seed(config.seed, server_round, pid))
    if algorithm.has_term:
        job.term_inputs = algorithm.term_inputs(ctx)
        job.term_grad_ratio = term_grad_ratio(model, images, labels, train_settings(config), seed=job.seed,
                                              transform=make_batch_transform(DATASETS[config.dataset], train=True),
                                              term=algorithm.make_term(ctx, job.term_inputs))
    return job


def finish_training(job: LocalTraining, stats: TrainStats) -> Message:
    """Update the client state and reply with the trained model and its metrics."""
    extra = job.algorithm.finish(job.round)
    save_state(job.context, job.round.state, job.state_key)
    metrics = {"num-examples": stats.num_examples, "train_loss": stats.train_loss, "ce_loss": stats.ce_loss, **extra}
    if job.term_grad_ratio is not None:
        metrics["term_grad_ratio"] = job.term_grad_ratio
    arrays = model_arrays(job.model)
    if job.fault:
        arrays = corrupt_reply(job.fault, arrays)
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=job.msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's partition and reply with it."""
    job = begin_training(msg, context)
    stats = train_local(
        job.model, job.images, job.labels, train_settings(job.config),
        seed=job.seed,
        transform=make_batch_transform(DATASETS[job.config.dataset], train=True),
        term=job.algorithm.make_term(job.round, job.term_inputs),
    )
    return finish_training(job, stats)

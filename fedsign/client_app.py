"""The ClientApp: local training of one partition with the run's client algorithm.

The node's ``partition-id`` (node config) selects its Dirichlet partition; every other
setting comes from the run config, the same on all nodes. Per-client algorithm state
(MOON's previous model, FedDyn's g_k) lives in ``context.state`` between rounds.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import ClientState, get_client_algorithm
from fedsign.config import RunConfig
from fedsign.data import DATASETS, make_batch_transform
from fedsign.task import build_run_model, client_data, load_arrays, model_arrays
from fedsign.training import TrainSettings, derive_seed, resolve_device, train_local

STATE_PREFIX = "client-state."

app = ClientApp()


def run_config(context: Context) -> RunConfig:
    """The run config as sent by the server (already validated there)."""
    return RunConfig.from_mapping(context.run_config, validate=False)


def partition_id(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError("node config lacks 'partition-id'; start the SuperNode with "
                         "--node-config \"partition-id=K num-partitions=N\"") from None


def load_state(context: Context) -> ClientState:
    return {key[len(STATE_PREFIX):]: record.to_torch_state_dict()
            for key, record in context.state.array_records.items() if key.startswith(STATE_PREFIX)}


def save_state(context: Context, state: ClientState) -> None:
    for name, tensors in state.items():
        context.state[STATE_PREFIX + name] = ArrayRecord({k: v.detach().cpu() for k, v in tensors.items()})


def train_settings(config: RunConfig) -> TrainSettings:
    return TrainSettings(epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr,
                         momentum=config.momentum, weight_decay=config.weight_decay,
                         grad_clip=config.grad_clip)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server this node's partition id (it orders nodes by it)."""
    info = MetricRecord({"partition-id": partition_id(context)})
    return Message(RecordDict({"info": info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's partition and reply with it."""
    config = run_config(context)
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    device = resolve_device(config.device)
    algorithm = get_client_algorithm(config.strategy)

    model = build_run_model(config, algorithm).to(device)
    load_arrays(model, msg.content["arrays"])
    global_params = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = load_state(context)
    term = algorithm.make_term(model, global_params, state, config)

    images, labels = client_data(config, pid, device)
    stats = train_local(
        model, images, labels, train_settings(config),
        seed=derive_seed(config.seed, server_round, pid),
        transform=make_batch_transform(DATASETS[config.dataset], train=True),
        term=term,
    )
    extra = algorithm.finish(model, global_params, state, config)
    save_state(context, state)
    metrics = MetricRecord({"num-examples": stats.num_examples, "train_loss": stats.train_loss,
                            "ce_loss": stats.ce_loss, **extra})
    return Message(RecordDict({"arrays": model_arrays(model), "metrics": metrics}), reply_to=msg)

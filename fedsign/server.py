"""The server's round loop, shared by the ServerApp (Ray / deployment) and the in-process engine.

Each round: the strategy samples clients and builds messages (``configure_train``),
the grid delivers them and collects replies, the strategy aggregates
(``aggregate_train``), the server evaluates the global model on the test split every
``eval-every`` rounds and writes the round to ``metrics.csv``. Sign consistency
(``ssr_*`` columns) is measured on the evaluated rounds only: it reads every weight twice.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from tqdm import tqdm

from fedsign.algorithms import client_hyperparameters, get_algorithm
from fedsign.checkpoint import (Checkpoint, CheckpointError, check_arrays, checkpoint_path, load_checkpoint,
                                resume_point, save_checkpoint)
from fedsign.config import RunConfig
from fedsign.data import DATASETS, loaded_dataset, make_batch_transform, partition_report
from fedsign.landscape.groups import parameter_roles
from fedsign.landscape.signs import sign_consistency
from fedsign.models import float_state
from fedsign.results import RunFailed, RunInterrupted, RunResults, Terminated
from fedsign.task import build_run_model, load_tensors, run_partitions, test_data, validation_data
from fedsign.tensors import Tensors, finite_flags
from fedsign.training import evaluate, resolve_device
from strategies import FedAvg


def make_strategy(config: RunConfig) -> FedAvg:
    """The registered strategy of ``config.strategy`` with the run's sampling settings; it sends
    its clients the algorithm's hyperparameters (and the sign term's, when ``sign-gamma`` > 0)."""
    cls = get_algorithm(config.strategy).strategy_class()
    return cls(
        fraction_train=config.clients_per_round / config.num_clients,
        min_train_nodes=config.clients_per_round,
        min_available_nodes=config.num_clients,
        weighted=config.weighted,
        seed=config.seed,
        min_replies=config.min_replies,
        client_config={h.key: getattr(config, h.field)
                       for h in client_hyperparameters(config.strategy, config.sign_gamma)},
        **cls.options_from_config(config),
    )


def discover_nodes(grid: Grid, config: RunConfig, timeout: float = 600.0) -> list[int]:
    """Node ids ordered by partition id, asked of every node with one query message."""
    deadline = time.monotonic() + timeout
    while len(node_ids := sorted(grid.get_node_ids())) < config.num_clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(node_ids)} of num-clients={config.num_clients} nodes connected "
                               f"within {timeout:.0f}s")
        time.sleep(1.0)
    messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    by_partition: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} failed the partition query: "
                               f"{reply.error.reason}")
        pid = int(reply.content["info"]["partition-id"])
        if pid in by_partition:
            raise RuntimeError(f"two nodes claim partition-id {pid}")
        by_partition[pid] = reply.metadata.src_node_id
    expected = set(range(config.num_clients))
    if set(by_partition) != expected:
        raise RuntimeError(
            f"nodes hold partition ids {sorted(by_partition)[:10]}..., expected 0..{config.num_clients - 1}: "
            f"start exactly num-clients={config.num_clients} nodes (num-supernodes={config.num_clients})"
        )
    return [by_partition[p] for p in sorted(by_partition)]


def sign_tracking(
    previous: Tensors, new: Tensors, client_arrays: list[Tensors], groups: dict[str, str]
) -> dict[str, float]:
    """SSR of the new global model against the previous one (``ssr_global*``) and the mean SSR
    of each participant's model against the global model it received (``ssr_clients*``),
    overall and per parameter group, over trainable parameters (on the tensors' device)."""

    def trainable(tensors: Tensors) -> Tensors:
        return {k: tensors[k] for k in groups if k in tensors}

    sent = trainable(previous)
    row = {_ssr_key("ssr_global", g): v for g, v in sign_consistency(sent, trainable(new), groups).items()}
    if client_arrays:  # stacked: one comparison per parameter for all clients (their mean SSR)
        clients = {k: torch.stack([a[k] for a in client_arrays]) for k in sent}
        row.update({_ssr_key("ssr_clients", g): v for g, v in sign_consistency(sent, clients, groups).items()})
    return row


def weight_size(arrays: Tensors, groups: dict[str, str]) -> dict[str, float]:
    """``weight_norm``: the L2 norm of the model's trainable parameters; ``weights_over_1``: the share
    of them with |θ| > 1 (a term that inflates weights shows in both before the accuracy falls)."""
    trainable = [arrays[k] for k in groups if k in arrays]
    norms = torch._foreach_norm(trainable)
    large = sum(int((t.abs() > 1).sum()) for t in trainable)
    return {"weight_norm": float(torch.linalg.vector_norm(torch.stack(norms))),
            "weights_over_1": large / sum(t.numel() for t in trainable)}


def _ssr_key(prefix: str, group: str) -> str:
    return prefix if group == "all" else f"{prefix}_{group}"


def run_server(grid: Grid, config: RunConfig, *, progress: bool = True) -> RunResults:
    """Run every round of ``config`` over ``grid``; return the written results.

    Everything that can refuse the run (data, partition, out-dir, lock, checkpoint) is checked
    before the first write. RunFailed: the run diverged (marked so in the out-dir);
    RunInterrupted: Ctrl-C (the last checkpoint stays the resume point)."""
    device = resolve_device(config.device)
    spec = DATASETS[config.dataset]
    labels = loaded_dataset(config.dataset, config.data_dir).train_y  # unreadable data fails before any write
    partitions = run_partitions(config)
    model = build_run_model(config).to(device)
    strategy = make_strategy(config)
    arrays = float_state(model)
    results = RunResults.open_run(config.out_dir, resume=config.resume)
    try:
        checkpoint = resume_point(results.out_dir, config)  # so does a bad resume
        if checkpoint is not None:
            check_checkpoint(checkpoint, config, arrays, str(checkpoint_path(results.out_dir)))
        if config.resume:
            print(resume_plan(results.out_dir, config, checkpoint), flush=True)
        results.mark("running")
        results.write_config(config.to_dict())
        results.write_environment(device)
        results.write_files(partition_report(labels, list(partitions), spec.num_classes))
        results.start_tracking(config.to_dict())
        try:
            _rounds(grid, config, results, model, strategy, arrays, checkpoint, progress)
        except RunFailed as err:
            results.mark("diverged", str(err))
            raise
        except KeyboardInterrupt as err:
            saved = load_checkpoint_round(results.out_dir)
            by = " by SIGTERM" if isinstance(err, Terminated) else ""
            reason = (f"stopped{by} after {len(results.rows)} finished round(s); resume=true continues from round "
                      f"{saved + 1}" + ("" if saved else " (no checkpoint)"))
            results.mark("interrupted", reason)
            raise RunInterrupted(f"{reason} in {results.out_dir}", getattr(err, "exit_status", 130)) from None
        except BaseException as err:
            results.mark("failed", f"{type(err).__name__}: {err}".splitlines()[0])
            raise
        results.mark("finished")
    finally:
        results.close()
    if progress:
        print(results.summary_table(), flush=True)
    return results


def check_checkpoint(checkpoint: Checkpoint, config: RunConfig, arrays: Tensors, where: str) -> None:
    """CheckpointError unless ``checkpoint`` fits this run's model (``arrays``) and strategy."""
    check_arrays(checkpoint, {k: (tuple(a.shape), np.dtype(str(a.dtype).removeprefix("torch.")))
                              for k, a in arrays.items()}, where, config.num_clients)
    try:
        make_strategy(config).load_state_dict(checkpoint.strategy)  # tried on a throw-away strategy
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {where} holds strategy state this run cannot use ({err}); "
                              "delete it to rerun from round 1, or pick a new out-dir") from None


def resume_plan(out_dir: Path, config: RunConfig, checkpoint: Checkpoint | None) -> str:
    """The one line that says what ``resume=true`` does here."""
    if checkpoint is not None:
        if checkpoint.round >= config.num_rounds:
            return f"resume: {out_dir} finished all {config.num_rounds} rounds; writing its final files again"
        return f"resume: continuing {out_dir} from round {checkpoint.round + 1} of {config.num_rounds}"
    if (out_dir / "metrics.csv").exists():
        return (f"resume: {out_dir} has no checkpoint (checkpoint-every={config.checkpoint_every}); "
                "starting again from round 1 and replacing its metrics")
    return f"resume: nothing to resume in {out_dir}; starting from round 1"


def load_checkpoint_round(out_dir: Path) -> int:
    """The round of the out-dir's checkpoint, 0 without a readable one."""
    try:
        checkpoint = load_checkpoint(out_dir)
    except CheckpointError:
        return 0
    return checkpoint.round if checkpoint is not None else 0


@dataclass
class RunState:
    """What changes from round to round: the global arrays, the first round still to run and the key
    under which SuperNodes keep this run's client state."""

    arrays: Tensors  # on the server's device
    first_round: int
    state_key: str
    failures: Counter = field(default_factory=Counter)  # failed replies by kind (failure_kind), all rounds


def restore(checkpoint: Checkpoint | None, arrays: Tensors, strategy: FedAvg, grid: Grid,
            results: RunResults) -> RunState:
    """The run's starting state: round 1 from ``arrays``, or where ``checkpoint`` left off (on their device)."""
    if checkpoint is None:
        return RunState(arrays, 1, uuid4().hex)
    strategy.load_state_dict(checkpoint.strategy)
    results.set_rows(checkpoint.rows)
    if checkpoint.client_states is not None and hasattr(grid, "load_client_states"):
        grid.load_client_states(checkpoint.client_states)
    device = next(iter(arrays.values())).device
    return RunState(checkpoint.tensors(device), checkpoint.round + 1, checkpoint.state_key)


FAILURE_HINTS = {  # what to change when every round failed, by the kind of most failed replies
    "timeout": "no reply within round-timeout={timeout:g} s: raise round-timeout",
    "error": "the clients raised errors (their logs, or the warnings above, say which)",
    "non-finite": "non-finite client models (lr={lr:g}): lower lr or set grad-clip",
    "invalid": "replies that do not match the global model: check the clients run this project's code",
}


def failure_kind(reason: str) -> str:
    """The FAILURE_HINTS kind of a dropped reply's reason (``strategies.FedAvg.screen_replies``)."""
    if reason.startswith("client error"):
        return "error"
    return "non-finite" if "non-finite" in reason else "invalid"


def every_round_failed(config: RunConfig, rounds: int, failures: Counter) -> str:
    """The one-line reason of a run none of whose rounds had ``min-replies`` usable replies (``failures``:
    this process's failed replies by kind)."""
    counts = ", ".join(f"{n} {kind}" for kind, n in failures.most_common())
    hint = FAILURE_HINTS[failures.most_common(1)[0][0]] if failures else "check min-replies"
    return (f"every round failed: no round had min-replies={config.min_replies} usable replies "
            f"({failures.total()} failed replies in {rounds} rounds: {counts or 'none'}); "
            f"{hint.format(timeout=config.round_timeout, lr=config.lr)}; "
            "the model was never updated, so no final model is written")


def train_round(grid: Grid, config: RunConfig, strategy: FedAvg, state: RunState, server_round: int,
                groups: dict[str, str], track_signs: bool = True) -> dict[str, Any]:
    """Send the global model to a sample of clients, aggregate their replies into ``state.arrays``;
    return the round's metrics row (``diverged`` set, and the global model kept, when the aggregate
    is not finite; the sign-consistency columns when ``track_signs``)."""
    messages = list(strategy.configure_train(server_round, state.arrays, ConfigRecord({"state-key": state.state_key}),
                                             grid))
    replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
    result = strategy.aggregate_round(server_round, replies)
    row: dict[str, Any] = {"round": server_round, "num_replies": len(result.usable),
                           "num_failures": len(result.dropped) + len(messages) - len(replies)}
    state.failures.update([failure_kind(reason) for reason in result.dropped]
                          + ["timeout"] * (len(messages) - len(replies)))
    if result.arrays is None:  # fewer than min-replies usable replies: the global model stays
        row["skipped"] = 1
    elif not finite_flags([result.arrays])[0]:
        row["diverged"] = 1
    else:
        if track_signs:
            row.update(sign_tracking(state.arrays, result.arrays, result.client_arrays, groups))
        state.arrays = result.arrays
        row.update(weight_size(state.arrays, groups))
    if result.metrics is not None:
        row["train_loss"] = result.metrics.get("train_loss")
    ratios = [float(c.metric_records["metrics"]["term_grad_ratio"]) for c in result.usable
              if "term_grad_ratio" in c.metric_records.get("metrics", {})]
    if ratios:  # the median client's ||grad term|| / ||grad CE|| on its first local step
        row["term_grad_ratio"] = statistics.median(ratios)
    return row


def evaluate_models(model: torch.nn.Module, models: dict[str, Tensors], splits: dict[str, tuple],
                    transform) -> dict[str, float]:
    """Accuracy and loss of each named model (``""``: the global one) on each named split (``""``: test)."""
    row = {}
    for name, arrays in models.items():
        load_tensors(model, arrays)
        for split, (x, y) in splits.items():
            prefix = "".join(f"{part}_" for part in (name, split) if part)
            row[f"{prefix}accuracy"], row[f"{prefix}loss"] = evaluate(model, x, y, transform)
    return row


def _rounds(grid: Grid, config: RunConfig, results: RunResults, model: torch.nn.Module, strategy: FedAvg,
            arrays: Tensors, checkpoint: Checkpoint | None, progress: bool) -> None:
    """The round loop (after the out-dir was opened): restore, then per round train, evaluate every
    ``eval-every`` rounds, write metrics and checkpoint; finally the model."""
    device = next(model.parameters()).device
    spec = DATASETS[config.dataset]
    splits = {"": test_data(config, device)}
    validation = validation_data(config, device)
    if validation is not None:
        splits["val"] = validation
    eval_transform = make_batch_transform(spec, train=False)
    strategy.set_node_order(discover_nodes(grid, config))
    groups = parameter_roles(model)
    state = restore(checkpoint, arrays, strategy, grid, results)
    bar = tqdm(range(state.first_round, config.num_rounds + 1), desc=config.strategy, unit="round",
               initial=state.first_round - 1, total=config.num_rounds, disable=not progress)
    for server_round in bar:
        start = time.perf_counter()
        evaluated = server_round % config.eval_every == 0 or server_round == config.num_rounds
        row = train_round(grid, config, strategy, state, server_round, groups, track_signs=evaluated)
        if row.get("diverged"):
            results.append_round({**row, "seconds": time.perf_counter() - start})
            raise RunFailed(f"run diverged in round {server_round}: the aggregated global model has non-finite "
                            f"values (lr={config.lr:g}); lower lr or set grad-clip, and rerun in a new out-dir")
        if evaluated:
            row.update(evaluate_models(model, {"": state.arrays, **strategy.evaluation_extras()}, splits,
                                       eval_transform))
            bar.set_postfix(acc=f"{row['accuracy']:.4f}", loss=f"{row['loss']:.3f}")
        row["seconds"] = time.perf_counter() - start
        results.append_round(row)
        if config.checkpoint_every and (server_round % config.checkpoint_every == 0
                                        or server_round == config.num_rounds):
            save_checkpoint(results.out_dir, Checkpoint(
                round=server_round, config=config.to_dict(), arrays={k: a.cpu().numpy() for k, a in state.arrays.items()},
                strategy=strategy.state_dict(), rows=results.rows, state_key=state.state_key,
                client_states=grid.client_states() if hasattr(grid, "client_states") else None,
            ))
    if all(r.get("skipped") for r in results.rows):
        raise RunFailed(every_round_failed(config, len(results.rows), state.failures))
    load_tensors(model, state.arrays)
    results.save_model(model)
    results.plot_accuracy()

"""The in-process grid: the same ServerApp loop and ClientApp code, no Ray, no SuperLink.

``InProcessGrid`` implements Flower's ``Grid`` by calling the ClientApp directly for each
message, with one persistent ``Context`` per node (so per-client state survives between
rounds exactly as in a simulation). Server and clients share the process, so models travel
by reference and client state stays in device tensors (``fedsign.tensors``). A ClientApp
exception becomes an error reply, as Flower's simulation engine does. Nodes run one after another, so ``send_and_receive``'s
timeout (``round-timeout``) bounds each node's call: a node still busy after it sends no
reply this round.

Calls run one after another on one long-lived client thread (``ClientThread``; not a thread per
message). A round's calls are queued on it at once, so it goes from one client to the next without
waiting for the grid; the grid waits for each in turn, with the timeout. A call still running after
it is left to finish on that thread, which then ends; the calls queued behind it move to a new client
thread, and the late node handles its next message only when the previous one ends.

Only the thread doing torch work owns an OpenMP team (``release_openmp_threads``): the server gives its team
back before it queues the clients' calls, the client thread before it signals its last queued call done.
With 2+ torch threads libgomp keeps a team for every thread that ran a parallel region, and once the teams
together outnumber the cores it spins only briefly before sleeping, so every parallel region pays a wake-up
(training ~25 % slower on a 2-core CPU; benchmarks/README.md, "Side by side with FL-bench").
"""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
import traceback
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedsign.client_app import device_state, state_records
from fedsign.tensors import DeviceRecordDict


def assign_message_id(msg: Message) -> None:
    """Give ``msg`` a fresh id, as Flower's simulation engine does for the messages it delivers
    (flwr/server/superlink/fleet/vce/vce_api.py); Flower has no public setter for it."""
    msg.metadata.__dict__["_message_id"] = str(uuid4())


def error_reply(msg: Message, err: Exception) -> Message:
    """The reply Flower's simulation engine gives when a ClientApp raises."""
    reason = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


@functools.cache
def _openmp_pauses() -> tuple[Callable[[int], int], ...]:
    """``omp_pause_resource_all`` of each libgomp this process has loaded (torch's on Linux); none elsewhere."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ()
    paths = sorted({fields[5] for fields in (line.split(maxsplit=5) for line in maps.splitlines())
                    if len(fields) == 6 and Path(fields[5]).name.startswith("libgomp")})
    pauses = []
    for path in paths:
        try:
            pause = getattr(ctypes.CDLL(path), "omp_pause_resource_all", None)  # OpenMP 5.0, GCC 9+
        except OSError:  # e.g. a mapping whose file was deleted or replaced since
            continue
        if pause is not None:
            pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
            pauses.append(pause)
    return tuple(pauses)


def release_openmp_threads() -> None:
    """End the calling thread's OpenMP team (libgomp), so that only threads doing torch work own one; its
    next parallel region starts a new team. Results do not change: the thread count stays what it was."""
    for pause in _openmp_pauses():
        pause(1)  # omp_pause_soft


class ClientCall:
    """A call queued on a ``ClientThread``: it runs there once, unless the grid withdraws it first.
    ``done`` is set when it has returned."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._state = "queued"

    def start(self) -> bool:
        """Whether the thread may run it (it was not withdrawn); from now on it cannot be."""
        return self._move("started")

    def withdraw(self) -> bool:
        """Whether it was withdrawn before it started (then it never runs where it was queued)."""
        return self._move("withdrawn")

    def _move(self, state: str) -> bool:
        with self._lock:
            if self._state != "queued":
                return False
            self._state = state
            return True


class ClientThread:
    """A daemon thread that runs the calls handed to it one at a time, until it is retired."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="fedsign-client")
        self.thread.start()

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            if call.start():
                try:
                    call.fn()
                finally:
                    try:
                        if self._calls.empty():  # idle next: no OpenMP team left by the time the grid goes on
                            release_openmp_threads()
                    finally:
                        call.done.set()

    def submit(self, fn: Callable[[], None]) -> ClientCall:
        """Queue ``fn``; the returned call says when it has run."""
        call = ClientCall(fn)
        self._calls.put(call)
        return call

    def retire(self) -> None:
        """End the thread once the calls queued so far have run."""
        self._calls.put(None)


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int
        Nodes get partition ids ``0..num_nodes-1`` and node ids ``1..num_nodes``.
    run_config : dict
        The run config each node's context carries (kebab-case keys).
    """

    shares_process = True  # messages carry the model by reference (fedsign.tensors)

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id=1)
        # Messages take their run and sender from the process's task identity.
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self.contexts = {
            pid + 1: Context(
                run_id=1,
                node_id=pid + 1,
                node_config={"partition-id": pid, "num-partitions": num_nodes},
                state=DeviceRecordDict(),
                run_config=dict(run_config),
            )
            for pid in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        self._busy: dict[int, threading.Event] = {}  # nodes whose late call still runs
        self._timeout: float | None = None
        self._thread = ClientThread()

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        # one batch of calls; a message to a node whose earlier call still runs, or a second message to a
        # node, waits for that call: after the batch
        first, then, nodes = [], [], set()
        for msg in messages:
            assign_message_id(msg)
            node_id = msg.metadata.dst_node_id
            (then if node_id in self._busy or node_id in nodes else first).append(msg)
            nodes.add(node_id)
        self._deliver(first)
        for msg in then:
            self._deliver([msg])
        return [msg.metadata.message_id for msg in messages]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self._timeout = timeout
        try:
            return self.pull_messages(self.push_messages(messages))
        finally:
            self._timeout = None

    def _deliver(self, messages: list[Message]) -> None:
        """Run the nodes' ClientApp on ``messages`` (at most one per node); keep each reply that ends in
        time: the calls are queued at once and each gets the timeout from when the one before it ended."""
        calls: list[tuple[Message, list[Message], ClientCall]] = []
        release_openmp_threads()  # this thread waits while the client thread trains
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            context = self.contexts.get(node_id)
            if context is None:
                self._replies[msg.metadata.message_id] = Message(
                    Error(code=ErrorCode.NODE_UNAVAILABLE, reason="no such node"), reply_to=msg)
                continue
            previous = self._busy.get(node_id)
            if previous is not None:  # a node handles one message at a time
                if not previous.wait(self._timeout):
                    continue
                del self._busy[node_id]
            reply: list[Message] = []
            calls.append((msg, reply, self._thread.submit(lambda m=msg, c=context, r=reply: self._call(m, c, r))))
        for i, (msg, reply, call) in enumerate(calls):
            if not call.done.wait(self._timeout):  # late: it finishes on this thread, which then ends
                self._busy[msg.metadata.dst_node_id] = call.done
                self._thread.retire()
                self._thread = ClientThread()
                for j in range(i + 1, len(calls)):  # the calls queued behind it move to the new thread
                    later_msg, later_reply, later = calls[j]
                    if later.withdraw():
                        calls[j] = (later_msg, later_reply, self._thread.submit(later.fn))
                continue
            if reply:
                self._replies[msg.metadata.message_id] = reply[0]

    def close(self, timeout: float = 60.0) -> None:
        """End the client thread and wait for it (a thread that touched torch's thread pool must not be
        left running at interpreter exit: with 2+ torch threads the process then aborts)."""
        self._thread.retire()
        self._thread.thread.join(timeout)

    def _call(self, msg: Message, context: Context, reply: list[Message]) -> None:
        try:
            reply.append(self.client_app(msg, context))
        except Exception as err:  # a failing client must not stop the round
            reply.append(error_reply(msg, err))

    def client_states(self) -> dict[int, RecordDict]:
        """Every node's ``context.state`` by partition id (checkpoints keep them)."""
        return {int(c.node_config["partition-id"]): state_records(c) for c in self.contexts.values()}

    def load_client_states(self, states: dict[int, RecordDict]) -> None:
        """Restore what ``client_states`` returned."""
        for context in self.contexts.values():
            context.state = device_state(states.get(int(context.node_config["partition-id"]), RecordDict()))

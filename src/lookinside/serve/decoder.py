"""The batch's decoding in a process of its own, beside the server's (`llm serve --decoder process`).

With the batch on the model's thread, the event loop (HTTP, JSON, one chunk per token to every
client) and the batch's Python between kernels share one interpreter lock: at 16 and 32 streaming
clients on tiny the server used 0.85 of the machine's two cores. Here a child process decodes:
the model's weights are put in shared memory and handed to it (torch.multiprocessing), so the
two processes read the same bytes; the child runs the `Batch`, and sends every step's `Step`s in
one message. The server keeps everything else: the routes, the jobs that set a generation up,
and each `Work`'s callbacks, which a relay thread calls as the steps arrive.

A job (a view, a chat step) still runs alone: the model's thread pauses the child between two steps
before it and resumes it after (`holding`), unless the child has had nothing to decode since the
last work it was sent. A completion's job pauses it only if it runs the model (to score an echoed
prompt), at its first forward pass: setting a generation up (its prompt encoded and checked) needs
no pause. A sequence whose client left is dropped by the child at its next step but one (the
message crosses a step in flight).

Messages, parent to child: ("work", wid, prompts), ("leave", wid, number), ("pause",), ("resume",),
("cut",), ("stop",); child to parent: ("ready", pid) or ("failed", error) at start, ("started", wid, seeds),
("steps", [(wid, number, step), ...]), ("ended", wid, error), ("paused",), ("idle", the last wid received).
An error crosses pickled, as bytes.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lookinside.core.model.quantize import WEIGHT_ONLY
from lookinside.serve.openai_api import ApiError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from lookinside.core.decoding.batch import Batcher, Work
    from lookinside.core.model.loading import LM

SHARED_MEMORY = "/dev/shm"  # where torch puts shared tensors on Linux (a container may give it little room)
READY_S = 300.0  # the child imports torch and transformers before it is ready; a loaded machine takes a while


class DecoderGone(ApiError):
    """The decoding process could not start, or ended while sequences were decoding (503, one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503, kind="server_error")


def why_not(lm: LM) -> str | None:
    """Why `lm` cannot decode in a process of its own (None: it can)."""
    if lm.device.type != "cpu":
        return f"the model is on {lm.device.type}: only a CPU model's weights are shared with a process"
    if lm.quantized is not None and lm.quantized.kind not in WEIGHT_ONLY:  # fbgemm's packed int8 is no tensor
        return f"its --quantize {lm.quantized.kind} layers hold weights a process cannot share"
    if type(lm.model).__module__.startswith("transformers_modules"):
        return "the model's code came with it (--trust-remote-code): a process could not import it"
    need = sum(t.nbytes for t in (*lm.model.parameters(), *lm.model.buffers()) if not t.is_shared())
    try:
        free = shutil.disk_usage(SHARED_MEMORY).free
    except OSError:
        return f"no shared memory ({SHARED_MEMORY})"
    if need > free:
        return f"{SHARED_MEMORY} has {free / 2**20:.0f} MiB free, and the weights take {need / 2**20:.0f} MiB"
    return None


class Decoder:
    """The parent's side: sends Works to the child and hands each step it sends back to its Work."""

    def __init__(self, lm: LM, size: int, flush: Callable[[], None]) -> None:
        import torch.multiprocessing as mp  # deferred: torch; its pickler sends tensors as shared memory

        from lookinside.core.decoding.batch import capacity  # deferred: torch

        self.size = capacity(lm, size)
        self._flush = flush  # hands what the callbacks emitted to the event loop, after each message
        self._lock = threading.Condition()
        self._works: dict[int, Work] = {}  # wid -> work with sequences not yet finished
        self._open = 0  # sequences sent and not finished
        self._next = 0
        self._stopped = threading.Event()  # the child said it waits (paused)
        self._idle_at = -1  # the last work the child had been sent when it last said it had nothing to do
        self._sent = -1  # the last work sent to the child
        self._holding: list[Any] | None = None  # inside `holding`: the work messages to send at its end
        self._pausing = False  # inside `holding`: the child was paused
        self.pauses = 0  # how many times the child was paused for a job
        self._lm = lm
        self._dead: BaseException | None = None
        context = mp.get_context("spawn")  # a fork would copy torch's thread pool in a state it cannot use
        self._inbox, child_out = context.Pipe(duplex=False)
        child_in, self._outbox = context.Pipe(duplex=False)
        self._send_lock = threading.Lock()
        try:
            lm.model.share_memory()  # the weights move to shared memory once; both processes then read the same bytes
            self.process = context.Process(target=_child, args=(child_in, child_out), name="lookinside-decoder",
                                           daemon=True)
            self.process.start()
            child_in.close()
            child_out.close()
            with _without_hooks(lm.model):  # transformers' own hooks are closures, which do not pickle
                self._send(lm)
        except Exception as exc:  # said in one line: "auto" goes on with the thread
            raise DecoderGone(f"the decoding process could not start: {exc}") from exc
        if not self._inbox.poll(READY_S):
            self.process.kill()
            raise DecoderGone(f"the decoding process was not ready after {READY_S:.0f} s")
        try:
            ready = self._inbox.recv()
        except EOFError:
            self.process.join()
            raise DecoderGone(f"the decoding process ended at start (exit code {self.process.exitcode})") from None
        if ready[0] != "ready":
            self.process.kill()
            raise DecoderGone(f"the decoding process could not start: {_error(ready[1])}")
        self.pid: int = ready[1]
        self._relay = threading.Thread(target=self._receive, name="lookinside-decoder-relay", daemon=True)
        self._relay.start()

    @property
    def open(self) -> int:
        """Sequences sent to the child and not finished."""
        return self._open

    @property
    def alive(self) -> bool:
        """The child runs and has not failed."""
        return self._dead is None

    def wait_for_room(self, give_up: threading.Event) -> None:
        """Block while the batch is full (until a sequence finishes, or `give_up` is set)."""
        with self._lock:
            while self._open >= self.size and not give_up.is_set() and self._dead is None:
                self._lock.wait(0.5)

    def wake(self) -> None:
        """Wake a `wait_for_room`."""
        with self._lock:
            self._lock.notify_all()

    def add(self, work: Work) -> None:
        """Send `work`'s prompts to the child; its callbacks are called as its steps come back."""
        with self._lock:
            if self._dead is not None:
                work.on_done(self._dead)
                return
            wid, self._next = self._next, self._next + 1
            self._works[wid] = work
            work._open = work.size
            self._open += work.size
        message = ("work", wid, work.prompts)
        if self._holding is not None:
            self._holding.append(message)
        else:
            self._send(message)
            self._sent = wid

    @contextmanager
    def holding(self) -> Iterator[Callable[[], None]]:
        """Inside, the works added are held, to be sent at the block's end (and prefilled together); the block
        calls the `pause` it is given before it runs the model, and the child, if paused, resumes at its end."""
        self._holding, self._pausing = [], False
        try:
            yield self._pause
        finally:
            held, self._holding = self._holding, None
            if self._dead is None:
                for message in held:
                    self._send(message)
                    self._sent = message[1]
                if self._pausing:
                    self._send(("resume",))
            self._pausing = False

    def _pause(self) -> None:
        """The child waits between two steps from now to the end of the hold; nothing to do if it has had nothing
        to decode since the last work it was sent."""
        if self._pausing or self._dead is not None or self._idle_at == self._sent:
            return
        self._stopped.clear()
        self._send(("pause",))
        while not self._stopped.wait(0.5):  # the relay sets it when the child says it waits
            if self._dead is not None:
                return
        self._pausing = True
        self.pauses += 1

    @contextmanager
    def pausing_at_forward(self, pause: Callable[[], None]) -> Iterator[None]:
        """Inside, the model's first forward pass calls `pause` (a completion's job runs the model only to score
        its prompt, for echo or prompt_logprobs)."""
        handle = self._lm.model.register_forward_pre_hook(lambda module, args: pause())
        try:
            yield
        finally:
            handle.remove()

    def cut(self, error: BaseException) -> None:
        """Every work ends now with `error`; the child drops its sequences."""
        with self._lock:
            works, self._works, self._open = list(self._works.values()), {}, 0
            self._lock.notify_all()
        for work in works:
            work._open = 0
            _tell(work, error)
        if self._dead is None:
            self._send(("cut",))
        self._flush()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the child (killed if it has not ended after `timeout_s`)."""
        self._send(("stop",))
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout_s)
        self._outbox.close()

    def _send(self, message: Any) -> None:
        """Send `message` to the child; if it has gone, the relay thread tells its works (nothing to do here)."""
        with self._send_lock:
            try:
                self._outbox.send(message)
            except (OSError, ValueError):  # a broken pipe, or one closed by `close`
                pass

    def _receive(self) -> None:
        """The relay thread: each message from the child, handed to its works, then to the event loop."""
        while True:
            try:
                message = self._inbox.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "paused":
                self._stopped.set()
                continue
            if kind == "idle":
                self._idle_at = message[1]
                continue
            with self._lock:
                if kind == "steps":
                    self._steps(message[1])
                elif kind == "started":
                    self._started(message[1], message[2])
                elif kind == "ended":
                    self._end(message[1], _error(message[2]))
            self._flush()
        self.process.join(READY_S)  # its pipe closes as it exits: the exit code is a moment away
        code = self.process.exitcode
        self._dead = DecoderGone(f"the decoding process ended (exit code {code})")
        self._stopped.set()
        with self._lock:
            for wid in list(self._works):
                self._end(wid, self._dead)
        self._flush()

    def _started(self, wid: int, seeds: list[int | None]) -> None:
        work = self._works.get(wid)
        if work is None:
            return
        try:
            work.on_start(seeds)
        except BaseException as exc:  # noqa: BLE001 (the work's caller answers for it)
            self._leave(wid, work)
            self._end(wid, exc)

    def _steps(self, steps: list[tuple[int, int, Any]]) -> None:
        for wid, number, step in steps:
            work = self._works.get(wid)
            if work is None:
                continue  # ended already (failed, cut, or its client left): the child drops it at its next step
            try:
                stay = work.on_step(number, step)
            except BaseException as exc:  # noqa: BLE001
                self._leave(wid, work)
                self._end(wid, exc)
                continue
            if not stay:
                self._send(("leave", wid, number))
            if not stay or step.finish is not None:
                self._open -= 1
                work._open -= 1
                if work._open <= 0:
                    self._end(wid, None)
        self._lock.notify_all()

    def _leave(self, wid: int, work: Work) -> None:
        for number in range(work.size):
            self._send(("leave", wid, number))

    def _end(self, wid: int, error: BaseException | None) -> None:
        """`wid` is done (with `error`, if any): its open sequences no longer count."""
        work = self._works.pop(wid, None)
        if work is None:
            return
        self._open -= max(work._open, 0)
        work._open = 0
        self._lock.notify_all()
        _tell(work, error)


@contextmanager
def _without_hooks(model: Any) -> Iterator[None]:
    """`model` with no hooks on any module while inside: the child decodes, and needs none of the views' or
    transformers' output-capturing hooks (local functions, which pickle cannot send)."""
    kept = []
    for module in model.modules():
        for name, value in vars(module).items():
            if name.endswith("hooks") and isinstance(value, dict) and value:
                kept.append((module, name, value))
    for module, name, value in kept:
        setattr(module, name, type(value)())
    try:
        yield
    finally:
        for module, name, value in kept:
            setattr(module, name, value)


def _tell(work: Work, error: BaseException | None) -> None:
    try:
        work.on_done(error)
    except BaseException:  # noqa: BLE001, S110 (on_done emits the stream's end; nothing is left to tell)
        pass


def _error(data: bytes) -> BaseException:
    """An error the child sent, or one line saying what it was where it does not unpickle here."""
    try:
        error = pickle.loads(data)  # our own child, through our own pipe
    except Exception as exc:  # noqa: BLE001
        return DecoderGone(f"the decoding process failed ({exc})")
    return error if isinstance(error, BaseException) else DecoderGone(str(error))


def _pickled(error: BaseException) -> bytes:
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # an error with an odd __init__ pickles and then fails to load
        return data
    except Exception:  # noqa: BLE001
        return pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))


# ---- the child


def _child(inbox: Connection, outbox: Connection) -> None:
    """The decoding process: the model from the parent, then Works' sequences decoded one step at a time."""
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):  # the parent stops it (or its end closes the
        signal.signal(number, signal.SIG_IGN)  # pipe): a Ctrl-C to the terminal's group must not end it first
    try:
        from lookinside.core.decoding.batch import Batcher  # deferred: torch, imported in the child
        from lookinside.core.model.loading import use_threads  # deferred: torch

        lm = inbox.recv()
        use_threads(lm, streaming=True)
        batcher = Batcher(lm, BIG)
    except BaseException as exc:  # noqa: BLE001 (told to the parent, which says it in one line)
        outbox.send(("failed", _pickled(exc)))
        return
    outbox.send(("ready", os.getpid()))
    try:
        _decode(batcher, inbox, outbox)
    except (EOFError, OSError, KeyboardInterrupt, SystemExit):
        pass  # the parent has gone, or said stop


BIG = 1 << 20  # the child takes what the parent sends: the parent keeps the batch's limit


def _decode(batcher: Batcher, inbox: Connection, outbox: Connection) -> None:
    """The child's loop: take what the parent sent, prefill the new works together, one step, send its steps."""
    from lookinside.core.decoding.batch import Work  # deferred: torch

    works: dict[int, Work] = {}
    waiting: list[Work] = []  # received, not yet prefilled
    last = -1  # the last work received
    out: list[tuple[int, int, Any]] = []  # this step's (wid, number, step)

    def work(wid: int, prompts: list[Any]) -> Work:
        def on_step(number: int, step: Any) -> bool:
            out.append((wid, number, step))
            return True

        def on_done(error: BaseException | None) -> None:
            works.pop(wid, None)
            if error is not None:
                outbox.send(("ended", wid, _pickled(error)))

        return Work(prompts, on_step, lambda seeds: outbox.send(("started", wid, seeds)), on_done, batcher.batch.lm)

    def handle(message: Any) -> None:
        nonlocal last
        kind = message[0]
        if kind == "work":
            last = message[1]
            works[last] = made = work(last, message[2])
            waiting.append(made)
        elif kind == "leave":
            mine = works.get(message[1])
            for member in batcher.batch.members:
                if member.tag == (mine, message[2]):
                    batcher.batch.leave(member)
        elif kind == "cut":
            works.clear()
            waiting.clear()
            for member in batcher.batch.members:
                batcher.batch.leave(member)
        elif kind == "pause":
            outbox.send(("paused",))
            while (message := inbox.recv())[0] != "resume":
                handle(message)
        elif kind == "stop":
            raise SystemExit

    while True:
        while not (len(batcher) or waiting) or inbox.poll():
            if not (len(batcher) or waiting or inbox.poll()):
                outbox.send(("idle", last))  # the parent's next job need not pause this process
            handle(inbox.recv())
        if waiting:
            batcher.add_all(waiting)  # their prompts prefilled together; a refused work is told (on_done)
            waiting.clear()
        batcher.step()  # a failed step ends every work in it (on_done)
        if out:
            outbox.send(("steps", out))
            out = []

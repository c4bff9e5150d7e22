"""The model runs on ONE thread; every request reaches it through one bounded queue.

A request's job waits in the queue (a full queue refuses at once: the caller answers 503) and
then runs alone on the model. A generating job returns the `Work` that decodes its sequences
(core/decoding/batch.py): the thread adds it to the batch, and between jobs runs one step of every
sequence in the batch, so concurrent completions share forward passes while a view's job still
runs alone between two steps. Jobs are taken while the batch has room (`batch` sequences).
A generating job is handed a `Cancel`, which it checks between tokens: a client that went away,
or the server shutting down, stops it, and frees its place in the batch, at the next step.
With a `Decoder` (serve/decoder.py, `llm serve --decoder process`), the batch decodes in a process
of its own instead: the thread only runs jobs, pausing that process around them, and hands it the
Works; their steps come back through the decoder's relay thread.
`run_on_model` awaits any job from an async route; `stream_on_model` carries the items a job
emits, one by one, to an async iterator (a streamed reply). What the thread emits is handed to the
event loop in one wake-up after each job and each step (`Outbox`), not one per token: 16 streams
cost one wake-up a step.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from lookinside.core.decoding.batch import Batcher, Work
    from lookinside.serve.decoder import Decoder

T = TypeVar("T")
_DONE = object()
_NOTHING = object()  # no job was waiting
BATCH = 32  # sequences that decode together at most (vLLM's max_num_seqs; llama.cpp's parallel slots)


class QueueFull(Exception):
    """Every place in the queue is taken."""


class Cut(Exception):
    """Raised inside a job whose client has gone, to stop it at its next step."""


class ServerStopping(Cut):
    """Raised inside (or after) a job that the server's shutdown cut: its stream ends with it, so the client is told."""


class Cancel:
    """Set when a job's client has gone or the server is stopping; checked between tokens."""

    def __init__(self, closing: threading.Event) -> None:
        self._own = threading.Event()
        self._closing = closing
        self.stopped = False  # the job saw the server stopping, so it was cut by the shutdown

    def set(self) -> None:
        """Stop the job at its next token."""
        self._own.set()

    @property
    def stopping(self) -> bool:
        """The server is shutting down."""
        return self._closing.is_set()

    def __bool__(self) -> bool:
        if self._closing.is_set() and not self._own.is_set():
            self.stopped = True
            return True
        return self._own.is_set()


class Outbox:
    """Items the model thread emits for the event loop's streams, handed over in one wake-up per `flush`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any], Any]] = []

    def put(self, loop: asyncio.AbstractEventLoop, items: asyncio.Queue[Any], item: Any) -> None:
        """Keep `item` for `items` (a queue of `loop`) until the next flush."""
        with self._lock:
            self._items.append((loop, items, item))

    def flush(self) -> None:
        """Hand every kept item to its loop: one call_soon_threadsafe per loop, whatever the number of items."""
        with self._lock:
            kept, self._items = self._items, []
        loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        for loop, items, item in kept:
            loops.setdefault(loop, []).append((items, item))
        for loop, delivery in loops.items():
            try:
                loop.call_soon_threadsafe(_deliver, delivery)
            except RuntimeError:  # that loop has closed: nobody is left to read its items
                pass


def _deliver(delivery: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for items, item in delivery:
        items.put_nowait(item)


class ModelWorker:
    """One thread that runs jobs in the order they came, with at most `size` waiting."""

    def __init__(self, size: int, threads: Callable[[bool], None] | None = None, batch: int = BATCH,
                 beside: Callable[[Callable[[], None], int], Decoder | None] | None = None) -> None:
        self.size, self.batch = size, batch
        # Sets torch's thread count on the model thread (the count is each thread's own): threads(False) before
        # a job, threads(True) before the batch's work, while the event loop streams its tokens.
        self._threads = threads
        self._streaming: bool | None = None  # the count set now
        self.closing = threading.Event()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any], bool] | None] = queue.Queue(maxsize=size)
        self._running = False  # a job is running now
        self._batcher: Batcher | None = None  # made from the first Work: it needs the model
        self.outbox = Outbox()  # what jobs and steps emit, handed to the event loop after each
        # `beside(flush, batch)`: the batch decodes in a process of its own (serve/decoder.py), started here.
        self.decoder = beside(self.outbox.flush, batch) if beside is not None else None
        self._thread = threading.Thread(target=self._run, name="lookinside-model", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A job runs now, or sequences are decoding."""
        return self._running or self.decoding > 0

    @property
    def decoding(self) -> int:
        """Sequences in the batch now."""
        if self.decoder is not None:
            return self.decoder.open
        return len(self._batcher) if self._batcher is not None else 0

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return self._jobs.qsize()

    def cancel(self) -> Cancel:
        """A fresh cancel flag, also set when the worker closes."""
        return Cancel(self.closing)

    def submit(self, job: Callable[[], T], light: bool = False) -> Future[T]:
        """Queue `job`; its future. Raises QueueFull at once when `size` jobs already wait.

        `light`: the job sets a generation up and runs the model only for a prompt's scores, so a decoding
        process is paused only if it does (at its first forward pass), not around it."""
        if self.closing.is_set():
            raise QueueFull("the server is shutting down")
        future: Future[T] = Future()
        try:
            self._jobs.put_nowait((job, future, light))
        except queue.Full:
            raise QueueFull(f"{self.size} requests are already waiting for the model") from None
        return future

    def close(self, timeout_s: float = 10.0) -> None:
        """Cut what runs (at its next token), drop what waits, and stop the thread."""
        self.closing.set()
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
        if self.decoder is not None:
            self.decoder.wake()
        self._thread.join(timeout_s)
        if self.decoder is not None:
            self.decoder.close(timeout_s)

    def _run(self) -> None:
        try:
            carried = self._beside(self.decoder) if self.decoder is not None else []
            if carried is not None:
                self._loop(carried)
        finally:
            self.outbox.flush()

    def _beside(self, decoder: Decoder) -> list[Work] | None:
        """Run jobs while the decoder's process decodes their Works; None once stopped, or, if that process has
        gone, the Works it did not take (they decode on this thread)."""
        self._use_threads(streaming=False)
        carried: list[Work] = []
        while decoder.alive:
            self.outbox.flush()
            decoder.wait_for_room(self.closing)
            item = self._jobs.get()
            with decoder.holding() as pause:  # every job that waits and fits runs in one hold, as the loop here
                while item is not None:  # takes them
                    job, future, light = item
                    if not light:
                        pause()
                    with decoder.pausing_at_forward(pause) if light else nullcontext():
                        work = self._start(job, future)
                    if work is not None:
                        (decoder.add if decoder.alive else carried.append)(work)
                    if decoder.open >= decoder.size:
                        break
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
            if item is None:
                decoder.cut(ServerStopping())
                return None
        self.decoder = None  # the works it had were told why; what comes next decodes on this thread
        return carried

    def _loop(self, joining: list[Work]) -> None:
        self._use_threads(streaming=False)
        # joining: jobs' Work taken since the last step, prefilled together before it
        while True:
            self.outbox.flush()  # what the last job or step emitted, before anything waits
            batcher = self._batcher
            decoding = (batcher is not None and len(batcher) > 0) or bool(joining)
            if self.closing.is_set() and (decoding or joining):
                for work in joining:
                    work.on_done(ServerStopping())  # the server is stopping: their streams end before a token
                joining = []
                if batcher is not None and len(batcher):
                    batcher.step()  # every Cancel is set now: each sequence leaves at this step
                    continue
            item: Any = _NOTHING
            taken = (len(batcher) if batcher is not None else 0) + sum(w.size for w in joining)
            if not decoding or taken < self.batch:
                try:
                    item = self._jobs.get(block=not decoding)  # wait only when nothing decodes
                except queue.Empty:
                    pass
            if item is None:
                return
            if item is not _NOTHING:
                self._use_threads(streaming=False)
                work = self._start(*item[:2])  # every waiting job that fits is taken before the next step
                if work is not None:
                    joining.append(work)
                continue
            self._use_threads(streaming=True)
            if joining:
                if self._batcher is None:
                    from lookinside.core.decoding.batch import Batcher  # deferred: torch

                    self._batcher = Batcher(joining[0].lm, self.batch)
                self._batcher.add_all(joining)  # their prompts prefilled in one forward pass
                joining = []
            if self._batcher is not None and len(self._batcher):
                self._batcher.step()

    def _use_threads(self, streaming: bool) -> None:
        if self._threads is not None and self._streaming is not streaming:
            self._threads(streaming)
            self._streaming = streaming

    def _start(self, job: Callable[[], Any], future: Future[Any]) -> Work | None:
        """Run `job` now; the Work it returns (to decode in the batch), else None."""
        if not future.set_running_or_notify_cancel():
            return None  # its caller gave up while it waited
        self._running = True
        try:
            result = job()
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting route, which answers for it)
            future.set_exception(exc)
            return None
        finally:
            self._running = False
        future.set_result(result)
        from lookinside.core.decoding.batch import Work  # deferred: torch: imported once a job has run

        return result if isinstance(result, Work) and result.lm is not None else None


async def run_on_model(worker: ModelWorker, job: Callable[[], T]) -> T:
    """Run `job` on the model's thread, through the bounded queue (QueueFull at once when it is full).

    Cancelling the awaiting task drops a job that has not started yet.
    """
    return await asyncio.wrap_future(worker.submit(job))


def stream_on_model(worker: ModelWorker, job: Callable[[Callable[[Any], None], Cancel], None]) -> AsyncIterator[Any]:
    """Queue `job(emit, cancel)` now (QueueFull at once), and iterate what it emits as it runs.

    Leaving the iteration early (the client went away) sets `cancel`, so the job stops at its
    next token; an exception the job raises comes out of the iteration. What the job (or its Work's
    steps) emits arrives when the job returns, or at the end of each step.
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    cancel = worker.cancel()

    def emit(item: Any) -> None:
        worker.outbox.put(loop, items, item)

    def run() -> Any:
        try:
            result = None if cancel else job(emit, cancel)
            if result is None and cancel.stopped:
                raise ServerStopping()
        except BaseException as exc:  # noqa: BLE001 (carried to the route, which answers for it)
            emit(_Raised(exc))
            emit(_DONE)
            return None
        from lookinside.core.decoding.batch import Work  # deferred: torch

        if isinstance(result, Work):  # the stream ends when the batch has decoded the work
            result.on_done = functools.partial(_finish, result.on_done, emit, cancel)
            return result
        emit(_DONE)
        return result

    future = worker.submit(run, light=True)
    return _drain(items, cancel, future)


def _finish(then: Callable[[BaseException | None], None], emit: Callable[[Any], None], cancel: Cancel,
            error: BaseException | None) -> None:
    try:
        then(error)
    except BaseException as exc:  # noqa: BLE001
        error = error or exc
    if error is None and cancel.stopped:
        error = ServerStopping()  # cut by the shutdown: the stream ends with an error event, so the client is told
    if error is not None:
        emit(_Raised(error))
    emit(_DONE)


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _drain(items: asyncio.Queue[Any], cancel: Cancel, future: Future[Any]) -> AsyncIterator[Any]:
    try:
        while True:
            item = await items.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        cancel.set()
        future.cancel()

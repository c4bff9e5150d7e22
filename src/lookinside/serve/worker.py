"""The model runs on ONE thread; every request reaches it through one bounded queue.

A request's job waits in the queue (a full queue refuses at once: the caller answers 503) and
then runs alone on the model. A generating job is handed a `Cancel`, which it checks between
tokens: a client that went away, or the server shutting down, stops it at the next token.
`run_on_model` awaits any job from an async route; `stream_on_model` carries the items a job
emits, one by one, to an async iterator (a streamed reply).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


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


class ModelWorker:
    """One thread that runs jobs in the order they came, with at most `size` waiting."""

    def __init__(self, size: int, setup: Callable[[], None] | None = None) -> None:
        self.size = size
        self._setup = setup  # run first on the thread: torch's thread count is the calling thread's own
        self.closing = threading.Event()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue(maxsize=size)
        self.busy = False  # a job is running now
        self._thread = threading.Thread(target=self._run, name="lookinside-model", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return self._jobs.qsize()

    def cancel(self) -> Cancel:
        """A fresh cancel flag, also set when the worker closes."""
        return Cancel(self.closing)

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue `job`; its future. Raises QueueFull at once when `size` jobs already wait."""
        if self.closing.is_set():
            raise QueueFull("the server is shutting down")
        future: Future[T] = Future()
        try:
            self._jobs.put_nowait((job, future))
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
        self._thread.join(timeout_s)

    def _run(self) -> None:
        if self._setup is not None:
            self._setup()
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited
            self.busy = True
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 (handed to the awaiting route, which answers for it)
                future.set_exception(exc)
            finally:
                self.busy = False


async def run_on_model(worker: ModelWorker, job: Callable[[], T]) -> T:
    """Run `job` on the model's thread, through the bounded queue (QueueFull at once when it is full).

    Cancelling the awaiting task drops a job that has not started yet.
    """
    return await asyncio.wrap_future(worker.submit(job))


def stream_on_model(worker: ModelWorker, job: Callable[[Callable[[Any], None], Cancel], None]) -> AsyncIterator[Any]:
    """Queue `job(emit, cancel)` now (QueueFull at once), and iterate what it emits as it runs.

    Leaving the iteration early (the client went away) sets `cancel`, so the job stops at its
    next token; an exception the job raises comes out of the iteration.
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    cancel = worker.cancel()

    def emit(item: Any) -> None:
        loop.call_soon_threadsafe(items.put_nowait, item)

    def run() -> None:
        try:
            if not cancel:
                job(emit, cancel)
            if cancel.stopped:
                raise ServerStopping()
        except BaseException as exc:  # noqa: BLE001 (carried to the route, which answers for it)
            emit(_Raised(exc))
        finally:
            emit(_DONE)

    future = worker.submit(run)
    return _drain(items, cancel, future)


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

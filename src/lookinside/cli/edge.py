"""The CLI's edge: every expected failure becomes one line on stderr and a non-zero exit.

`friendly` wraps each command (typed errors, Ctrl-C, out of memory, a full or closed
output); `run` wraps the whole program, so that nothing can print a traceback on the
way out either: standard output closed or full when Python flushes it at exit, or a
second Ctrl-C arriving while the first is being handled (it exits 130, quietly).
"""

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import typer

from lookinside.core.errors import LookinsideError, is_out_of_memory

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130
EXIT_OUTPUT = 74  # EX_IOERR: the results could not be written
OUTPUT_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EBADF: "it is closed", errno.EIO: "an I/O error",
                 errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "the file system is read-only"}


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    from lookinside.ui.console import stderr_console  # deferred: Rich is not needed until something fails

    console = stderr_console()
    console.print("[bold red]error:[/] ", end="")
    console.print(message, markup=False, highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def friendly(fn: F) -> F:
    """Wrap a command so that typed errors, Ctrl-C and out-of-memory never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LookinsideError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the goodbye
            fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            quiet_stdout()  # `llm ... | head` closed the pipe: what head wanted it has
            raise typer.Exit(0) from None
        except OSError as exc:
            if exc.errno not in OUTPUT_ERRNOS:
                raise
            quiet_stdout()
            fail(f"cannot write the output: {OUTPUT_ERRNOS[exc.errno]} ({exc.strerror})", EXIT_OUTPUT)
        except Exception as exc:
            if is_out_of_memory(exc):
                fail("out of memory: try a shorter prompt, fewer tokens, --dtype bfloat16, or --device cpu")
            raise

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def interrupt_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until its end, then raise it as KeyboardInterrupt.

    Importing torch runs Python code called from C++ (pybind11); a KeyboardInterrupt raised there
    cannot unwind and aborts the process ("terminate called after throwing ... KeyboardInterrupt",
    status -6, seen with Ctrl-C 1.5 s into a command on a loaded machine) instead of exiting 130.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def quiet_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so the interpreter's last flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def run(app: Callable[..., Any], **kwargs: Any) -> NoReturn:
    """Run the Typer app, then flush stdout ourselves: every way out is an exit code, never a traceback."""
    if getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "_interrupted_while_starting":
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt, handled below
    if sys.stdout is None:  # started with `>&-`: nowhere to put results
        _say("error: standard output is closed: nothing can be shown (redirect it to a file or /dev/null)")
        os._exit(EXIT_OUTPUT)
    try:
        app(**kwargs)
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # after `friendly` let go, or before a command started
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say("error: interrupted")
        code = EXIT_INTERRUPTED
    code = code if isinstance(code, int) else (0 if code is None else 1)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
    except OSError as exc:
        quiet_stdout()
        _say(f"error: cannot write the output: {OUTPUT_ERRNOS.get(exc.errno or 0, exc.strerror)}")
        code = code or EXIT_OUTPUT
    if code == EXIT_INTERRUPTED:
        _flush_stderr()
        os._exit(code)  # no interpreter shutdown, where a late Ctrl-C would print "Exception ignored"
    sys.exit(code)


def _say(line: str) -> None:
    try:
        if sys.stderr is not None:
            print(line, file=sys.stderr)
    except OSError:
        pass


def _flush_stderr() -> None:
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except OSError:
        pass

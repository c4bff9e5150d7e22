"""The CLI's edge: every expected failure becomes one line on stderr and a non-zero exit."""

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

from lookinside.core.errors import LookinsideError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    from lookinside.ui.console import stderr_console  # Rich is not needed until something fails

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
            fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            raise typer.Exit(0) from None
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
                fail("out of memory: try a shorter prompt, fewer tokens, --dtype bfloat16, or --device cpu")
            raise

    return wrapper  # type: ignore[return-value]

"""The command line: Typer only. Parse options, make one core call, print one view.

Started as a program (`llm`, `lookinside`, `python -m lookinside`), the first thing it does is make
Ctrl-C quiet: while Typer, Rich and the rest are still importing, SIGINT exits 130 with one line
instead of a traceback; `edge.run` hands it back to Python (KeyboardInterrupt) once it is ready.
"""

import os
import signal
import sys

EXIT_INTERRUPTED = 130
PROGRAM_NAMES = ("llm", "lookinside")


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"error: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def quiet_interrupts_until_ready() -> None:
    """Until `edge.run` starts, Ctrl-C exits 130 quietly (the imports before it would print a traceback)."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT (`cmd &`) stays ignored
            signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # not the main thread: not ours to change
        pass


if os.path.basename(sys.argv[0] if sys.argv else "") in PROGRAM_NAMES:  # the console script, not a test's import
    quiet_interrupts_until_ready()

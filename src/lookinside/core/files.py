"""Writes that lose nothing: a file is replaced whole or not at all, through links, never over a device.

`write_atomically` writes a temporary file beside the target and renames it over, following a
symlink to the file it names; a character device or a FIFO with a reader is written in place,
never replaced; `-` and `/dev/stdout` mean standard output. Every failure is one BadInput line.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from pathlib import Path

from lookinside.core import errors

STDOUT_NAMES = ("-", "/dev/stdout")  # where a save path means standard output


def write_atomically(path: Path, text: str, make_parents: bool = False) -> None:
    """Write `text` to a temp file beside `path`, flush it to disk, then rename it over `path`; or refuse whole.

    A symlink is followed: its target is replaced, the link stays. `-` and /dev/stdout mean standard
    output. What is not a regular file is never replaced: a character device (/dev/null, a terminal)
    or a FIFO with a reader is written to directly; a block device, a socket, or a FIFO nobody reads
    is refused. A missing directory is refused unless `make_parents`; every failure is a BadInput
    naming the path.
    """
    if str(path) in STDOUT_NAMES:
        _write_stdout(text)
        return
    target = Path(os.path.realpath(path))  # a link's target (a chain of links too); `path` itself otherwise
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # not there yet (a parent that is a file is said below)
        mode = None
    except OSError as exc:
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise errors.BadInput(f"cannot write {path}: it is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        _write_special(path, target, mode, text)
        return
    if not target.parent.is_dir():
        if target.parent.exists():
            raise errors.BadInput(f"cannot write {path}: {target.parent} is a file, not a directory")
        if not make_parents:
            raise errors.BadInput(f"cannot write {path}: there is no directory {target.parent} (create it first)")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.BadInput(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    try:
        _replace_with(target, text, None if mode is None else stat.S_IMODE(mode))
    except OSError as exc:
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None


def _write_stdout(text: str) -> None:
    if sys.stdout is None:
        raise errors.BadInput("cannot write to standard output: it is closed")
    sys.stdout.write(text)
    sys.stdout.flush()


def _write_special(path: Path, target: Path, mode: int, text: str) -> None:
    """Write to a device or FIFO in place (never replace the node), or refuse what cannot take a file."""
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "a block device" if stat.S_ISBLK(mode) else "a socket"
        raise errors.BadInput(f"cannot write {path}: it is {kind}, not a file; nothing was written")
    try:
        fd = os.open(target, os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(mode) else 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO with no reader: writing would wait forever
            raise errors.BadInput(f"cannot write {path}: it is a FIFO and nothing reads it; nothing was written") from None
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from None
    try:
        os.set_blocking(fd, True)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        raise errors.BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _replace_with(path: Path, text: str, mode: int | None = None) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp's 0600 is for secrets; these are the user's ordinary files (a replaced file keeps its mode)
    os.chmod(temp, mode if mode is not None else 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

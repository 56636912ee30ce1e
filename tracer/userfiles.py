"""Opening a file the user named: the one place that checks it is a regular file and bounds the read.

A named pipe, a terminal or a device (/dev/zero) given where a file is expected would block
forever or fill memory; here it is one clear error instead. The file is opened with O_NONBLOCK
(opening a pipe with no writer returns at once), then `fstat` of that very descriptor decides:
only a regular file is read, and never more than `max_bytes`.
"""

from __future__ import annotations

import os
import stat

from .errors import InputError

MIB = 1 << 20
MAX_USER_FILE = 512 * MIB  # facts, batch and results files
MAX_SMALL_FILE = 16 * MIB  # settings and model config files


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "something other than a regular file"


def check_regular_file(path, what: str, *, error=InputError, max_bytes: int | None = None) -> int:
    """The size of `path` when it is a regular file (links followed), without opening it.

    Args:
        path: the file the user named.
        what: how messages name it ("results file", "model file").
        error: the TracerError subclass raised (InputError, or ModelError for models).
        max_bytes: the largest size accepted (None: any).

    Returns:
        The file's size in bytes.

    Raises:
        `error`: the path is missing, not a regular file, or larger than `max_bytes`.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return check_stat(st, path, what, error, max_bytes)


def check_stat(st: os.stat_result, path, what: str, error=InputError, max_bytes: int | None = None) -> int:
    """`st.st_size` when `st` (of `path`) is a regular file no larger than `max_bytes`; else `error`."""
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} is {_kind(st.st_mode)}: {path}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {path} is {st.st_size / MIB:.1f} MiB, more than the {max_bytes / MIB:.0f} MiB "
                    f"tracer-tui reads")
    return st.st_size


def read_user_file(path, what: str, *, max_bytes: int = MAX_USER_FILE, error=InputError,
                   offset: int = 0) -> bytes:
    """The bytes of a regular file the user named, read with a bound.

    Args:
        path: the file.
        what: how messages name it ("facts file", "results file", "settings file").
        max_bytes: the largest file accepted.
        error: the TracerError subclass raised.
        offset: start reading here (following a file that grows).

    Returns:
        The file's bytes from `offset` (at most `max_bytes`, even if it grows while read).

    Raises:
        `error`: missing, unreadable, not a regular file (directory, pipe, device), or too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory: {path}") from None
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        size = check_stat(os.fstat(fd), path, what, error, max_bytes)
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], max(0, min(size, max_bytes) - offset)
        while left > 0:
            chunk = os.read(fd, min(left, 8 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)

"""Errors the user can fix: their message is shown as one line, never a traceback."""


class TracerError(Exception):
    """Base for errors reported to the user as a single line."""


class ModelError(TracerError):
    """A model could not be found, read or understood."""


class InputError(TracerError):
    """A prompt, subject or setting is unusable."""


def read_user_file(path: str, what: str) -> bytes:
    """The bytes of a file the user named; a missing, unreadable or directory path is one
    InputError line naming `what` ("facts file", "results file")."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class TraceCancelled(Exception):
    """Raised inside a trace when its cancel event is set (between layers of a forward,
    or between forwards)."""


def check_cancel(cancel) -> None:
    """Raise TraceCancelled once `cancel` (a threading.Event, or None) is set."""
    if cancel is not None and cancel.is_set():
        raise TraceCancelled()


"""Errors the user can fix: their message is shown as one line, never a traceback."""


class TracerError(Exception):
    """Base for errors reported to the user as a single line."""


class ModelError(TracerError):
    """A model could not be found, read or understood."""


class InputError(TracerError):
    """A prompt, subject or setting is unusable."""


def one_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of `text`, cut to `limit` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def user_message(exc: BaseException) -> str:
    """What to show the user for `exc`: a TracerError's own message; anything else is a bug,
    shown as "internal error: <type>: <first line>" (the caller logs the traceback)."""
    if isinstance(exc, TracerError):
        return one_line(str(exc)) or type(exc).__name__
    detail = one_line(str(exc))
    return f"internal error: {type(exc).__name__}" + (f": {detail}" if detail else "")


def error_location(exc: BaseException) -> str:
    """Where an unexpected exception was raised, for the log: "ValueError at gguf.py:120 in f"."""
    import os
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {os.path.basename(last.filename)}:{last.lineno} in {last.name}"


class TraceCancelled(Exception):
    """Raised inside a trace when its cancel event is set (between layers of a forward,
    or between forwards)."""


def check_cancel(cancel) -> None:
    """Raise TraceCancelled once `cancel` (a threading.Event, or None) is set."""
    if cancel is not None and cancel.is_set():
        raise TraceCancelled()


"""Errors the user can fix: their message is shown as one line, never a traceback."""


class TracerError(Exception):
    """Base for errors reported to the user as a single line."""


class ModelError(TracerError):
    """A model could not be found, read or understood."""


class InputError(TracerError):
    """A prompt, subject or setting is unusable."""


class TraceCancelled(Exception):
    """Raised inside a trace when its cancel event is set (between layers of a forward,
    or between forwards)."""


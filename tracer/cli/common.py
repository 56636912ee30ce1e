"""What every subcommand shares: the parser class (one-line errors, exit 2), the model options,
and writing the output file."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from contextlib import contextmanager

from ..errors import InputError, TracerError

EXIT_USAGE = 2


class HelpFormatter(argparse.HelpFormatter):
    """Help that states every option's default: " (default: X)" is added to an option's help
    when it has a default other than None or False and its help does not state one already."""

    def _get_help_string(self, action):
        return help_with_default(action)


def help_with_default(action) -> str:
    """An action's help as --help shows it: its own text, plus " (default: X)" when it has a
    default (not None, False or suppressed) its text does not mention."""
    text = action.help or ""
    default = action.default
    if default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
        return text
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and help that states the defaults (HelpFormatter)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line on stderr, exit 2
        print(f"tracer-tui: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="GGUF file, mlx-lm directory or HF repo id (default: embedded SmolLM2-135M)")
    p.add_argument("--keep-quantized", action="store_true", help="keep quantized weights on CPU (default: dequantize to float32)")


def check_writable(path: str | None) -> None:
    """Fail before any work if the output cannot be written."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise InputError(f"cannot write output file {path}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"cannot write output file {path}")


def write_output(path: str | None, text: str) -> int:
    """Write `text` to `path` (saying so on stderr), or to stdout when no path is given."""
    if path is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise InputError(f"cannot write output file {path}: {exc.strerror or exc}") from None
    print(f"wrote {path}", file=sys.stderr)
    return 0


@contextmanager
def loaded_engine(args):
    """The one thread model of every subcommand: an Engine (its own thread) with `args.model` loaded
    through tracer.load; the subcommand runs the front door's functions there (Engine.call, .trace,
    .robustness, .sweep) and the main thread waits (`wait`), turning Ctrl-C into cancellation.
    The engine is closed (its thread joined) on the way out."""
    from ..engine import Engine  # here: --help and argument errors stay quick (no MLX import)

    engine = Engine(args.model, keep_quantized=args.keep_quantized)
    try:
        yield engine
    finally:
        engine.close()  # joins the engine thread: exiting with it alive aborts in MLX's teardown


def wait(future, cancel: threading.Event | None = None, *, keep_result: bool = False,
         settle: threading.Event | None = None):
    """The future's result, waited for on the main thread. Ctrl-C sets `cancel` and waits for the
    engine to stop at its next check; then KeyboardInterrupt goes on (exit 130), or with
    `keep_result` (a sweep: its file stays valid and its summary says so) the result is returned;
    a second Ctrl-C gives up waiting. With `settle` (a trace with adaptive samples), the first
    Ctrl-C sets it instead (the trace finishes with the samples each cell has: a complete result)
    and waiting goes on as without it."""
    try:
        while True:
            try:
                return future.result(timeout=0.2)
            except TimeoutError:
                continue
    except KeyboardInterrupt:
        if settle is not None and not settle.is_set():
            settle.set()
            print("\ninterrupted: no more samples; every cell keeps the ones it has (Ctrl-C again to cancel)",
                  file=sys.stderr)
            return wait(future, cancel, keep_result=keep_result)
        if cancel is None:
            raise
        cancel.set()
        print("\ninterrupted: stopping (Ctrl-C again to quit at once)", file=sys.stderr)
        try:
            result = future.result()
        except TracerError:
            result = None
        if keep_result:
            return result
        raise KeyboardInterrupt from None

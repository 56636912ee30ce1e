"""Command line: `tracer-tui` opens the app; subcommands run headless (tracer.cli).

The app also takes the trace settings as flags (`tracer-tui --samples 20 --kinds mlp`), generated
from tracer.settings.TraceSettings as the CLI's are (add_settings_arguments); they override the
settings saved from the last session.
"""

from __future__ import annotations

import os
import sys


def parse(argv: list[str]):
    """(parsed arguments, None), or (None, exit code) when parsing ended (--help, a usage error)."""
    from tracer.cli import build_parser
    from tracer.settings import add_settings_arguments

    parser = build_parser()
    group = parser.add_argument_group("trace settings of the app (saved for the next launch)")
    add_settings_arguments(group)
    try:
        return parser.parse_args(argv), None
    except SystemExit as exc:
        return None, int(exc.code or 0)


def leave(code: int) -> None:
    """End the app's process at once. The app has closed its engine and saved its settings by now;
    the interpreter's own teardown of MLX, numpy and Textual takes seconds on a loaded machine
    (issue 16.8: the process exits within 1 s of ctrl+q)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    import tracer  # loads a fast BLAS before anything imports mlx.core

    tracer.keep_freed_memory()  # the app and CLI keep freed blocks (tracer/memory.py); library users opt in
    from tracer.cli import run_cli
    from tracer.errors import TracerError

    args, code = parse(sys.argv[1:] if argv is None else argv)
    if args is not None:
        code = run_cli([], args)
        if code is None:  # no subcommand: the app
            from tui.app import run_app

            try:
                code = run_app(args)
            except TracerError as exc:  # a bad setting flag: one line, exit 2
                print(f"tracer-tui: error: {exc}", file=sys.stderr)
                code = 2
    if argv is None:
        if args is not None and args.command is None:
            leave(code or 0)
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

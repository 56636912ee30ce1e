"""Command line: `tracer-tui` opens the app; subcommands run headless (tracer.cli)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import tracer  # loads a fast BLAS before anything imports mlx.core

    tracer.keep_freed_memory()  # the app and CLI keep freed blocks (tracer/memory.py); library users opt in
    from tracer.cli import parse, run_cli

    args, code = parse(sys.argv[1:] if argv is None else argv)
    if args is not None:
        code = run_cli([], args)
        if code is None:  # no subcommand: the app
            from tui.app import run_app

            code = run_app(args)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

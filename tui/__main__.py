"""Command line: `tracer-tui` opens the app; subcommands run headless."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import tracer  # loads a fast BLAS before anything imports mlx.core

    tracer.keep_freed_memory()  # the app and CLI keep freed blocks (tracer/memory.py); library users opt in
    from tracer.cli import run_cli

    code = run_cli(sys.argv[1:] if argv is None else argv)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

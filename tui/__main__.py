"""Command line: `tracer-tui` opens the app; subcommands run headless."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import tracer  # noqa: F401 - loads a fast BLAS before anything imports mlx.core
    from tracer.cli import run_cli

    code = run_cli(sys.argv[1:] if argv is None else argv)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

"""The command line: one parser for the app's options and the headless subcommands, one module
per subcommand owning its parser (doctor.py, with --version; trace.py, sweep.py, report.py,
export_npz.py). tui/__main__ chooses: no subcommand opens the app (`run_cli` returns None).
Nothing here imports the app."""

from __future__ import annotations

import argparse
import re
import sys

from ..errors import TracerError
from . import doctor, export_npz, report, robustness, sweep, trace
from .common import EXIT_USAGE, Parser, add_model_args

SUBCOMMANDS = {"doctor": doctor, "trace": trace, "sweep": sweep, "sweep-report": report, "sweep-export-npz": export_npz,
               "robustness": robustness}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tracer-tui", description="Causal tracing (ROME) for MLX language models. "
                    "With no subcommand, opens the app.")
    parser.add_argument("--version", action="store_true", help="print version and the BLAS in use")
    add_model_args(parser)
    parser.add_argument("--theme", default=None, help="colour theme (dark, light, high-contrast)")
    parser.add_argument("--export-dir", default=None, help="where the app's export key writes (default: ./exports)")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def _join_negative_positions(argv: list[str]) -> list[str]:
    """`--positions -3--1` as `--positions=-3--1`: argparse takes a value such as "-3--1" or "-2,-1"
    for an option (only a bare negative number passes)."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "--positions" and re.fullmatch(r"-\d[\d,\s-]*", out[i + 1]):
            out[i:i + 2] = [f"--positions={out[i + 1]}"]
            break
    return out


def parse(argv: list[str]):
    """(parsed arguments, None), or (None, exit code) when parsing ended (--help, a usage error)."""
    try:
        return build_parser().parse_args(_join_negative_positions(argv)), None
    except SystemExit as exc:
        return None, int(exc.code or 0)


def run_cli(argv: list[str], args=None) -> int | None:
    """Run a headless command: its exit code; None when there is none to run (open the app)."""
    if args is None:
        args, code = parse(argv)
        if args is None:
            return code
    try:
        if args.version:
            return doctor.version()
        if args.command is None:
            return None
        return SUBCOMMANDS[args.command].run(args)
    except TracerError as exc:
        print(f"tracer-tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tracer-tui: interrupted", file=sys.stderr)
        return 130

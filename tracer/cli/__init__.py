"""The command line: one parser for the app's options and the headless subcommands, one module
per subcommand owning its parser (trace.py, sweep.py, report.py, export_npz.py; doctor and
--version here). tui/__main__ chooses: no subcommand opens the app (`run_cli` returns None).
Nothing here imports the app."""

from __future__ import annotations

import argparse
import sys

from ..errors import TracerError
from . import export_npz, report, sweep, trace
from .common import EXIT_USAGE, Parser, add_model_args

SUBCOMMANDS = {"trace": trace, "sweep": sweep, "sweep-report": report, "sweep-export-npz": export_npz}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tracer-tui", description="Causal tracing (ROME) for MLX language models. "
                    "With no subcommand, opens the app.")
    parser.add_argument("--version", action="store_true", help="print version and the BLAS in use")
    add_model_args(parser)
    parser.add_argument("--theme", default=None, help="colour theme (dark, light, high-contrast)")
    parser.add_argument("--export-dir", default=None, help="where the app's export key writes (default: ./exports)")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    doctor = sub.add_parser("doctor", help="check BLAS speed and load the model")
    add_model_args(doctor)
    doctor.add_argument("--no-model", action="store_true", help="skip loading the model")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def parse(argv: list[str]):
    """(parsed arguments, None), or (None, exit code) when parsing ended (--help, a usage error)."""
    try:
        return build_parser().parse_args(argv), None
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
            return _version()
        if args.command == "doctor":
            return _doctor(args)
        if args.command is None:
            return None
        return SUBCOMMANDS[args.command].run(args)
    except TracerError as exc:
        print(f"tracer-tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tracer-tui: interrupted", file=sys.stderr)
        return 130


def _version() -> int:
    from importlib.metadata import version

    import mlx.core as mx

    from .. import BLAS

    print(f"tracer-tui {version('tracer-tui')} (mlx {mx.__version__}, device {mx.default_device()})")
    print(f"BLAS: {BLAS.describe()}")
    return 0


def _doctor(args) -> int:
    import mlx.core as mx

    from .. import BLAS
    from ..blas import gemm_gflops

    print(f"mlx {mx.__version__}, default device {mx.default_device()}")
    print(f"BLAS: {BLAS.describe()}")
    rate = gemm_gflops(512 if not BLAS.fast else 1024, repeats=2 if not BLAS.fast else 5)
    print(f"float32 GEMM on CPU: {rate:.1f} GFLOP/s")
    if not BLAS.fast:
        print("warning: tracing will be 30-65x slower than it should be. " + BLAS.note, file=sys.stderr)
    if not args.no_model:
        import time

        from ..models import load_model

        start = time.perf_counter()
        lm = load_model(args.model, keep_quantized=args.keep_quantized)
        print(f"model: {lm.summary()} (loaded in {time.perf_counter() - start:.1f} s)")
    return 0

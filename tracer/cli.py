"""Argument parsing for tracer-tui: the app (no subcommand) and the headless commands."""

from __future__ import annotations

import argparse
import sys

from .errors import TracerError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        print(f"tracer-tui: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="GGUF file, mlx-lm directory or HF repo id (default: embedded SmolLM2-135M)")
    p.add_argument("--keep-quantized", action="store_true", help="keep quantized weights on CPU (default: dequantize to float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tracer-tui", description="Causal tracing (ROME) for MLX language models.")
    parser.add_argument("--version", action="store_true", help="print version and the BLAS in use")
    _add_model_args(parser)
    parser.add_argument("--theme", default=None, help="colour theme (dark, light, high-contrast)")
    parser.add_argument("--export-dir", default=None, help="where the app's export key writes (default: ./exports)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    doctor = sub.add_parser("doctor", help="check BLAS speed and load the model")
    _add_model_args(doctor)
    doctor.add_argument("--no-model", action="store_true", help="skip loading the model")
    from . import commands

    commands.add_subcommands(sub, _add_model_args)
    return parser


def run_cli(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.version:
            return _version()
        if args.command == "doctor":
            return _doctor(args)
        if args.command is None:
            from tui.app import run_app

            return run_app(args)
        from . import commands

        return commands.dispatch(args)
    except TracerError as exc:
        print(f"tracer-tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tracer-tui: interrupted", file=sys.stderr)
        return 130


def _version() -> int:
    from importlib.metadata import version

    import mlx.core as mx

    from . import BLAS

    print(f"tracer-tui {version('tracer-tui')} (mlx {mx.__version__}, device {mx.default_device()})")
    print(f"BLAS: {BLAS.describe()}")
    return 0


def _doctor(args) -> int:
    import mlx.core as mx

    from . import BLAS
    from .blas import ENV_VAR, fix_hint, gemm_gflops

    slow_gflops = 20.0  # below this a "fast" BLAS is not doing its job (the reference does ~5)

    print(f"mlx {mx.__version__}, default device {mx.default_device()}")
    if BLAS.found:
        print("BLAS candidates, in the order tried:")
        for name, path, where in BLAS.found:
            print(f"  {name:<9} {where:<11} {path}")
    elif BLAS.name != "accelerate":
        print("BLAS candidates: none found")
    print(f"BLAS: {BLAS.describe()}")
    if BLAS.reason:
        print(f"BLAS chosen because: {BLAS.reason}")
    rate = gemm_gflops(512 if not BLAS.fast else 1024, repeats=2 if not BLAS.fast else 5)
    print(f"float32 GEMM on CPU: {rate:.1f} GFLOP/s")
    if not BLAS.fast:
        print("warning: tracing will be 30-65x slower than it should be. " + BLAS.note, file=sys.stderr)
        if BLAS.reason == f"{ENV_VAR}=none":
            print(f"fix: unset {ENV_VAR}")
        elif BLAS.imported_too_late:
            print("fix: put `import tracer` before `import mlx.core`")
        else:
            print(f"fix: {fix_hint()}")
    elif BLAS.name != "accelerate" and rate < slow_gflops:
        print(
            f"warning: {BLAS.name} runs GEMM at only {rate:.1f} GFLOP/s (a busy machine?); "
            f"try another BLAS with {ENV_VAR}=<path to libopenblas.so or libmkl_rt.so>",
            file=sys.stderr,
        )
    if not args.no_model:
        import time

        from .models import load_model

        start = time.perf_counter()
        lm = load_model(args.model, keep_quantized=args.keep_quantized)
        print(f"model: {lm.summary()} (loaded in {time.perf_counter() - start:.1f} s)")
    return 0

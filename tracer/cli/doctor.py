"""`tracer-tui doctor` (and `--version`): which BLAS is in use and why, how fast, and the model."""

from __future__ import annotations

import sys

from .. import blas as blas_library
from .common import EXIT_USAGE, add_model_args


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check BLAS speed and load the model")
    add_model_args(p)
    p.add_argument("--no-model", action="store_true", help="skip loading the model (with --model its memory plan is still printed)")
    p.add_argument("--samples", type=int, default=10, help="noise samples the memory plan is for")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length the memory plan is for")


def version() -> int:
    """--version: the package, MLX and the BLAS in use."""
    from importlib.metadata import version

    import mlx.core as mx

    blas = blas_library.load_fast_blas()  # what `import tracer` loaded (idempotent)
    print(f"tracer-tui {version('tracer-tui')} (mlx {mx.__version__}, device {mx.default_device()})")
    print(f"BLAS: {blas.describe()}")
    return 0


def run(args) -> int:
    """doctor: which BLAS was found and chosen and why, its GEMM rate, the fix when slow; the model."""
    import mlx.core as mx

    blas = blas_library.load_fast_blas()  # what `import tracer` loaded (idempotent)
    slow_gflops = 20.0  # below this a "fast" BLAS is not doing its job (the reference does ~5)

    print(f"mlx {mx.__version__}, default device {mx.default_device()}")
    if blas.found:
        print("BLAS candidates, in the order tried:")
        for name, path, where in blas.found:
            print(f"  {name:<9} {where:<11} {path}")
    elif blas.name != "accelerate":
        print("BLAS candidates: none found")
    print(f"BLAS: {blas.describe()}")
    if blas.reason:
        print(f"BLAS chosen because: {blas.reason}")
    rate = blas_library.gemm_gflops(512 if not blas.fast else 1024, repeats=2 if not blas.fast else 5)
    print(f"float32 GEMM on CPU: {rate:.1f} GFLOP/s")
    if not blas.fast:
        print("warning: tracing will be 30-65x slower than it should be. " + blas.note, file=sys.stderr)
        if blas.reason == f"{blas_library.ENV_VAR}=none":
            print(f"fix: unset {blas_library.ENV_VAR}")
        elif blas.imported_too_late:
            print("fix: put `import tracer` before `import mlx.core`")
        else:
            print(f"fix: {blas_library.fix_hint()}")
    elif blas.name != "accelerate" and rate < slow_gflops:
        print(
            f"warning: {blas.name} runs GEMM at only {rate:.1f} GFLOP/s (a busy machine?); "
            f"try another BLAS with {blas_library.ENV_VAR}=<path to libopenblas.so or libmkl_rt.so>",
            file=sys.stderr,
        )
    if (getattr(args, "model", None) is not None or not args.no_model) and not print_plan(args):
        return EXIT_USAGE
    if not args.no_model:
        import time

        from ..models.load import load_model

        start = time.perf_counter()
        lm = load_model(args.model, keep_quantized=args.keep_quantized)
        print(f"model: {lm.summary()} (loaded in {time.perf_counter() - start:.1f} s)")
    return 0


def print_plan(args) -> bool:
    """Print the memory plan of `args.model` (read before loading it: core/budget.py).

    Returns:
        False when the model will not fit (the refusal is printed on stderr).
    """
    from ..core.budget import plan_memory
    from ..errors import InputError
    from ..models.shape import read_shape

    if args.samples < 1 or args.prompt_tokens < 1:
        raise InputError("--samples and --prompt-tokens must be at least 1")
    shape = read_shape(args.model)
    if shape is None:
        print("memory plan: none before loading (the model's shape is known only once it is loaded)")
        return True
    plan = plan_memory(shape, n_tokens=args.prompt_tokens, samples=args.samples, keep_quantized=args.keep_quantized)
    print("memory plan:")
    for line in plan.lines():
        print(f"  {line}")
    if not plan.fits:
        print(f"tracer-tui: error: {plan.refusal(args.model or 'the embedded model')}", file=sys.stderr)
    return plan.fits

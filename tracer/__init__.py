"""tracer: the causal-tracing engine (MLX only, no UI)."""

from .blas import load_fast_blas

BLAS = load_fast_blas()  # before anything imports mlx.core

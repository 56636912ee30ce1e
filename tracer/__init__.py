"""tracer: the causal-tracing engine (MLX only, no UI)."""

from .blas import load_fast_blas
from .memory import keep_freed_memory

BLAS = load_fast_blas()  # before anything imports mlx.core
MALLOC_TUNED = keep_freed_memory()  # before MLX's threads start allocating

"""tracer: causal tracing (Meng et al., ROME, NeurIPS 2022) for MLX language models.

    import tracer
    model = tracer.load()                       # embedded SmolLM2-135M; or a GGUF path, an mlx-lm dir, an HF id
    result = tracer.trace(model, "The Eiffel Tower is located in the city of", "Eiffel Tower",
                          kinds=("mlp",), positions="subject-last", samples=10)
    result.grid("mlp")                          # numpy [rows, layers] of P(target)
    result.grid("mlp", "recovery")              # any metric by name
    tracer.predict(model, "The Eiffel Tower is located in the city of", k=5)
    tracer.patch(model, clean_prompt, corrupted_prompt, kind="mlp", layers=[8])
    tracer.sweep(model, "known_1000", "results.jsonl", kinds=("mlp",)); tracer.report("results.jsonl")

Import tracer before anything imports mlx.core: on Linux it loads a fast BLAS first,
which must precede MLX (imported after MLX, the bundled reference BLAS stays in use,
5-60x slower; tracer then warns, and `tracer.BLAS` and `tracer-tui doctor` say so).
The engine never imports Textual.
"""

import warnings as _warnings

from .blas import load_fast_blas

BLAS = load_fast_blas()  # before anything below imports mlx.core


class SlowBlasWarning(UserWarning):
    """MLX runs on its bundled reference BLAS (matmul 30-60x slower)."""


if BLAS.imported_too_late:
    _warnings.warn(f"tracer: {BLAS.note}", SlowBlasWarning, stacklevel=2)

from .errors import InputError, ModelError, TraceCancelled, TracerError
from .memory import keep_freed_memory
from .settings import NoiseRule, TraceSettings
from .types import PatchedRun, Prediction, TraceRequest, TraceResult

# The names that need MLX load on first use, so that `import tracer` stays light: the app's UI
# imports tracer's plain dataclasses and must not pull in mlx (tests/tui check it).
_LAZY = {"load": "api", "predict": "api", "trace": "api", "estimate": "api", "patch": "api", "sweep": "api",
         "report": "api", "Tracer": "core.tracing", "inspect": "api",
         "robustness": "api"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        globals().update({n: getattr(module, n) for n, where in _LAZY.items() if where == _LAZY[name]})
        return globals()[name]
    raise AttributeError(f"module 'tracer' has no attribute {name!r}")


__all__ = [
    "BLAS",
    "InputError",
    "ModelError",
    "NoiseRule",
    "PatchedRun",
    "Prediction",
    "SlowBlasWarning",
    "TraceCancelled",
    "TraceRequest",
    "TraceResult",
    "TraceSettings",
    "Tracer",
    "TracerError",
    "estimate",
    "inspect",
    "keep_freed_memory",
    "load",
    "patch",
    "predict",
    "report",
    "robustness",
    "sweep",
    "trace",
]

"""Find and load a fast BLAS before `mlx.core` is imported (Linux only).

MLX's Linux CPU wheel links a bundled *reference* BLAS (~5 GFLOP/s). Its
`cblas_sgemm` is resolved through the global symbol table, so a real BLAS
loaded first with RTLD_GLOBAL takes its place (30-65x faster GEMM). This must
run before the first `import mlx.core` anywhere in the process; `tracer`'s
package import does it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import sysconfig
from dataclasses import dataclass

ENV_VAR = "TRACER_BLAS"  # a path to force, or "none" to skip


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "openblas", "mkl", "blis", "reference", "accelerate"
    path: str | None
    fast: bool
    note: str = ""

    @property
    def imported_too_late(self) -> bool:
        """True when mlx.core was imported before tracer could load a fast BLAS."""
        return self.note.startswith(_TOO_LATE)

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.name}{where}" + (f" - {self.note}" if self.note else "")


_FIX_HINT = (
    "install a real BLAS: `sudo apt-get install libopenblas0-pthread` (Debian/Ubuntu) "
    "or `uv sync --extra mkl` (x86_64)"
)


_TOO_LATE = "mlx.core was imported before tracer"


def _prefixes() -> list[str]:
    seen = []
    for p in (sys.prefix, sys.base_prefix, sysconfig.get_paths().get("data")):
        if p and p not in seen:
            seen.append(p)
    return seen


def candidates() -> list[tuple[str, str]]:
    """(name, path) of BLAS libraries found on this machine, best first."""
    found: list[tuple[str, str]] = []
    forced = os.environ.get(ENV_VAR, "")
    if forced and forced.lower() != "none":
        found.append(("custom", forced))
    for prefix in _prefixes():
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*"))):
            found.append(("mkl", path))
    system_dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ]
    patterns = [
        ("openblas", "openblas-pthread/libopenblas.so.0"),
        ("openblas", "openblas-openmp/libopenblas.so.0"),
        ("openblas", "libopenblas.so.0"),
        ("openblas", "libopenblas.so"),
        ("blis", "blis-pthread/libblis.so.4"),
        ("blis", "libblis.so.4"),
    ]
    for name, pattern in patterns:
        for d in system_dirs:
            path = os.path.join(d, pattern)
            if os.path.exists(path):
                found.append((name, os.path.realpath(path)))
    unique, seen = [], set()
    for name, path in found:
        if path not in seen:
            seen.add(path)
            unique.append((name, path))
    return unique


_loaded: BlasInfo | None = None


def load_fast_blas() -> BlasInfo:
    """Load the best BLAS found; idempotent. Returns what is in use."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if sys.platform == "darwin":
        _loaded = BlasInfo("accelerate", None, True, "macOS: MLX uses Accelerate/Metal")
        return _loaded
    if os.environ.get(ENV_VAR, "").lower() == "none":
        _loaded = BlasInfo(
            "reference", None, False,
            f"disabled by {ENV_VAR}=none; unset {ENV_VAR} to use a real BLAS (30-65x faster matmul)",
        )
        return _loaded
    if "mlx.core" in sys.modules:
        _loaded = BlasInfo(
            "reference", None, False,
            f"{_TOO_LATE}, so MLX keeps its bundled reference BLAS (matmul 30-60x slower): "
            "put `import tracer` before `import mlx.core` (first line of the script or notebook)",
        )
        return _loaded
    errors = []
    for name, path in candidates():
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            lib.cblas_sgemm  # noqa: B018 - must export the symbol MLX uses
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        _loaded = BlasInfo(name, path, True)
        return _loaded
    note = "only MLX's bundled reference BLAS (30-65x slower matmul); " + _FIX_HINT
    _loaded = BlasInfo("reference", None, False, note)
    return _loaded


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GEMM rate (n x n x n) in GFLOP/s on MLX's CPU stream."""
    import time

    import mlx.core as mx

    with mx.stream(mx.cpu):
        a = mx.random.normal((n, n))
        b = mx.random.normal((n, n))
        mx.eval(a, b, a @ b)
        start = time.perf_counter()
        for _ in range(repeats):
            mx.eval(a @ b)
        seconds = (time.perf_counter() - start) / repeats
    return 2 * n**3 / seconds / 1e9


def set_blas_threads(n: int) -> bool:
    """Threads per BLAS call, where the loaded BLAS lets us say (OpenBLAS, MKL). With several
    engine workers each running its own GEMMs, one thread per call avoids oversubscribing the
    cores (9% faster traces measured with two workers on two cores)."""
    info = _loaded
    if info is None or not info.fast or info.path is None:
        return False
    try:
        lib = ctypes.CDLL(info.path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    for symbol in ("openblas_set_num_threads", "MKL_Set_Num_Threads", "bli_thread_set_num_threads"):
        setter = getattr(lib, symbol, None)
        if setter is not None:
            setter(ctypes.c_int(max(1, n)))
            return True
    return False

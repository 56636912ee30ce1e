"""Find and load a fast BLAS before `mlx.core` is imported (Linux only).

MLX's Linux CPU wheel links a bundled *reference* BLAS (~5 GFLOP/s). Its
`cblas_sgemm` is resolved through the global symbol table, so a real BLAS
loaded first with RTLD_GLOBAL takes its place (30-65x faster GEMM). This must
run before the first `import mlx.core` anywhere in the process; `tracer`'s
package import does it.

Where a BLAS comes from, in the order tried: the path in TRACER_BLAS; a system
OpenBLAS (or BLIS); OpenBLAS or MKL in the Python environment (on Linux x86_64
`uv sync` installs PyPI's `mkl`, so there is always one there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import platform
import sys
import sysconfig
from dataclasses import dataclass

ENV_VAR = "TRACER_BLAS"  # a path to force, or "none" to skip

# where each candidate was found, for `doctor`
FROM_ENV, FROM_SYSTEM, FROM_PYTHON = "TRACER_BLAS", "system", "python env"

PREFERRED_ORDER = "TRACER_BLAS, then a system OpenBLAS, then BLIS, then the Python environment's OpenBLAS or MKL"


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "openblas", "mkl", "blis", "custom", "reference", "accelerate"
    path: str | None
    fast: bool
    note: str = ""  # what is wrong and how to fix it, when not fast
    reason: str = ""  # why this one was chosen
    found: tuple[tuple[str, str, str], ...] = ()  # (name, path, where) of every candidate seen

    @property
    def imported_too_late(self) -> bool:
        """True when mlx.core was imported before tracer could load a fast BLAS."""
        return self.note.startswith(_TOO_LATE)

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.name}{where}" + (f" - {self.note}" if self.note else "")


_TOO_LATE = "mlx.core was imported before tracer"


def fix_hint(machine: str | None = None) -> str:
    """How to get a real BLAS on this kind of machine."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return (
            "run `uv sync` (it installs MKL from PyPI on Linux x86_64), or "
            "`sudo apt-get install libopenblas0-pthread` (Debian/Ubuntu)"
        )
    return (
        f"MKL has no {machine} wheel: `sudo apt-get install libopenblas0-pthread` (Debian/Ubuntu), "
        "`sudo dnf install openblas` (Fedora), or `conda install -c conda-forge openblas` in a conda "
        f"environment; or point {ENV_VAR} at a libopenblas.so"
    )


def _prefixes() -> list[str]:
    seen = []
    for p in (sys.prefix, sys.base_prefix, sysconfig.get_paths().get("data")):
        if p and p not in seen:
            seen.append(p)
    return seen


SYSTEM_DIRS = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
]
SYSTEM_PATTERNS = [
    ("openblas", "openblas-pthread/libopenblas.so.0"),
    ("openblas", "openblas-openmp/libopenblas.so.0"),
    ("openblas", "libopenblas.so.0"),
    ("openblas", "libopenblas.so"),
    ("blis", "blis-pthread/libblis.so.4"),
    ("blis", "libblis.so.4"),
]


def kind_of(path: str) -> str:
    """The BLAS a library file is, from its name ("custom" when it does not say)."""
    base = os.path.basename(path).lower()
    for name in ("mkl", "openblas", "blis"):
        if name in base:
            return name
    return "custom"


def found_libraries() -> list[tuple[str, str, str]]:
    """(name, path, where) of every BLAS library found, in the order they are tried."""
    found: list[tuple[str, str, str]] = []
    forced = os.environ.get(ENV_VAR, "")
    if forced and forced.lower() != "none":
        found.append((kind_of(forced), forced, FROM_ENV))
    for name, pattern in SYSTEM_PATTERNS:
        for d in SYSTEM_DIRS:
            path = os.path.join(d, pattern)
            if os.path.exists(path):
                found.append((name, os.path.realpath(path), FROM_SYSTEM))
    for prefix in _prefixes():  # a venv (PyPI's mkl) or a conda environment (conda-forge openblas)
        lib = os.path.join(prefix, "lib")
        for path in sorted(glob.glob(os.path.join(lib, "libopenblas*.so*"))):
            found.append(("openblas", os.path.realpath(path), FROM_PYTHON))
        for path in sorted(glob.glob(os.path.join(lib, "libmkl_rt.so*"))):
            found.append(("mkl", os.path.realpath(path), FROM_PYTHON))
    unique, seen = [], set()
    for name, path, where in found:
        if path not in seen:
            seen.add(path)
            unique.append((name, path, where))
    return unique


def candidates() -> list[tuple[str, str]]:
    """(name, path) of BLAS libraries found on this machine, in the order they are tried."""
    return [(name, path) for name, path, _ in found_libraries()]


def prepare_mkl() -> str:
    """Environment MKL needs, set before it is loaded and only where the user has not set it:
    its default threading layer is Intel's OpenMP, which clashes with GNU's libgomp in one
    process (and libgomp is what the system's compilers and OpenMP builds use)."""
    if "MKL_THREADING_LAYER" in os.environ:
        return f"MKL_THREADING_LAYER={os.environ['MKL_THREADING_LAYER']} (yours)"
    if ctypes.util.find_library("gomp"):
        os.environ["MKL_THREADING_LAYER"] = "GNU"
        return "MKL_THREADING_LAYER=GNU (set by tracer)"
    return "MKL_THREADING_LAYER unset (no libgomp found; MKL uses Intel's OpenMP)"


_loaded: BlasInfo | None = None


def load_fast_blas() -> BlasInfo:
    """Load the best BLAS found; idempotent. Returns what is in use."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if sys.platform == "darwin":
        _loaded = BlasInfo("accelerate", None, True, reason="macOS: MLX uses Accelerate/Metal")
        return _loaded
    found = tuple(found_libraries())
    if os.environ.get(ENV_VAR, "").lower() == "none":
        _loaded = BlasInfo(
            "reference", None, False,
            f"disabled by {ENV_VAR}=none; unset {ENV_VAR} to use a real BLAS (30-65x faster matmul)",
            reason=f"{ENV_VAR}=none", found=found,
        )
        return _loaded
    if "mlx.core" in sys.modules:
        _loaded = BlasInfo(
            "reference", None, False,
            f"{_TOO_LATE}, so MLX keeps its bundled reference BLAS (matmul 30-60x slower): "
            "put `import tracer` before `import mlx.core` (first line of the script or notebook)",
            reason="mlx.core was imported first", found=found,
        )
        return _loaded
    errors = []
    for name, path, where in found:
        kind = name
        extra = ""
        if kind == "mkl":
            extra = "; " + prepare_mkl()
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            lib.cblas_sgemm  # noqa: B018 - must export the symbol MLX uses
        except (OSError, AttributeError) as exc:
            errors.append(f"{path} ({where}) failed to load: {exc}")
            continue
        if where == FROM_ENV:
            reason = f"forced by {ENV_VAR}"
        else:
            reason = f"first usable in the preferred order ({PREFERRED_ORDER})"
        reason = "; ".join([*errors, reason]) + extra
        _loaded = BlasInfo(kind, path, True, reason=reason, found=found)
        return _loaded
    note = "only MLX's bundled reference BLAS (30-65x slower matmul); " + fix_hint()
    reason = "; ".join([*errors, "no usable BLAS library found"])
    _loaded = BlasInfo("reference", None, False, note, reason=reason, found=found)
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


_THREAD_SETTERS = ("openblas_set_num_threads", "MKL_Set_Num_Threads", "bli_thread_set_num_threads")
_THREAD_GETTERS = ("openblas_get_num_threads", "MKL_Get_Max_Threads", "bli_thread_get_num_threads")


def _loaded_lib():
    info = _loaded
    if info is None or not info.fast or info.path is None:
        return None
    try:
        return ctypes.CDLL(info.path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None


def set_blas_threads(n: int) -> bool:
    """Threads per BLAS call, where the loaded BLAS lets us say (OpenBLAS, MKL, BLIS). With several
    engine workers each running its own GEMMs, one thread per call avoids oversubscribing the
    cores (9% faster traces measured with two workers on two cores)."""
    lib = _loaded_lib()
    if lib is None:
        return False
    for symbol in _THREAD_SETTERS:
        setter = getattr(lib, symbol, None)
        if setter is not None:
            setter(ctypes.c_int(max(1, n)))
            return True
    return False


def blas_threads() -> int | None:
    """Threads per BLAS call of the loaded BLAS, where it says."""
    lib = _loaded_lib()
    if lib is None:
        return None
    for symbol in _THREAD_GETTERS:
        getter = getattr(lib, symbol, None)
        if getter is not None:
            getter.restype = ctypes.c_int
            return int(getter())
    return None

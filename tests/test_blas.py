"""The fast-BLAS loader: discovery, the TRACER_BLAS switch, the import-order
trap, what `tracer-tui --version` says, and that the fast one really is fast."""

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tracer
from tracer import blas

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
SCRIPT = str(Path(sys.executable).with_name("tracer-tui"))


def run_py(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    for k, v in env.items():
        if v is None:
            full_env.pop(k)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def run_script(*args, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=full_env, timeout=120)


@pytest.mark.skipif(not os.path.isdir(OPENBLAS_DIR), reason="no system OpenBLAS (libopenblas0-pthread)")
def test_candidates_find_system_openblas(monkeypatch):
    monkeypatch.delenv(blas.ENV_VAR, raising=False)
    found = blas.candidates()
    names = dict((path, name) for name, path in found)
    real = os.path.realpath(os.path.join(OPENBLAS_DIR, "libopenblas.so.0"))
    assert names.get(real) == "openblas"
    assert len({p for _, p in found}) == len(found)  # no duplicates (symlinks resolved)


def test_forced_path_comes_first(monkeypatch):
    monkeypatch.setenv(blas.ENV_VAR, "/opt/some/libblas.so")
    assert blas.candidates()[0] == ("custom", "/opt/some/libblas.so")
    monkeypatch.setenv(blas.ENV_VAR, "none")
    assert all(name != "custom" for name, _ in blas.candidates())


@pytest.mark.skipif(not blas.candidates(), reason="no fast BLAS on this machine")
def test_this_process_uses_a_fast_blas():
    # conftest imports tracer before mlx.core, so the fast BLAS must be in use
    assert tracer.BLAS.fast
    assert tracer.BLAS.path in {p for _, p in blas.candidates()}
    assert tracer.BLAS.describe().startswith(f"{tracer.BLAS.name} ({tracer.BLAS.path})")


@pytest.mark.skipif(not blas.candidates(), reason="no fast BLAS on this machine")
def test_fast_blas_is_much_faster_than_reference():
    fast = max(blas.gemm_gflops(512, repeats=3) for _ in range(3))
    proc = run_py(
        "import tracer\nfrom tracer.blas import gemm_gflops\n"
        "print(tracer.BLAS.fast, max(gemm_gflops(512, repeats=2) for _ in range(2)))",
        TRACER_BLAS="none",
    )
    assert proc.returncode == 0, proc.stderr
    flag, ref = proc.stdout.split()
    assert flag == "False"
    # ~15-35x on an idle 2-core machine; 3x leaves room for a busy one
    assert fast > 3 * float(ref), (fast, ref)


def test_tracer_blas_none_disables_it():
    proc = run_py("import tracer; print(tracer.BLAS.fast, tracer.BLAS.name)", TRACER_BLAS="none")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "reference"]


def test_version_with_reference_blas_says_how_to_fix():
    proc = run_script("--version", TRACER_BLAS="none")
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("BLAS:"))
    assert "reference" in line
    assert "unset TRACER_BLAS" in line


def test_mlx_imported_first_is_reported():
    proc = run_py(
        "import mlx.core\nimport tracer\nprint(tracer.BLAS.fast)\nprint(tracer.BLAS.describe())",
        TRACER_BLAS=None,
    )
    assert proc.returncode == 0, proc.stderr
    fast, desc = proc.stdout.splitlines()
    assert fast == "False"
    assert desc.startswith("reference")
    assert "mlx.core was imported before tracer" in desc and "put `import tracer` before `import mlx.core`" in desc


@pytest.mark.skipif(not blas.candidates(), reason="no fast BLAS on this machine")
def test_version_mentions_blas():
    proc = run_script("--version", TRACER_BLAS="")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("tracer-tui 0.1.0 (mlx ")
    assert lines[1] == f"BLAS: {tracer.BLAS.describe()}"
    assert not proc.stderr


# --- load_fast_blas decisions, in-process with the module state swapped ---------


@pytest.fixture
def fresh_loader(monkeypatch):
    monkeypatch.setattr(blas, "_loaded", None)
    monkeypatch.delenv(blas.ENV_VAR, raising=False)
    monkeypatch.setattr(blas.sys, "platform", "linux")
    monkeypatch.delitem(sys.modules, "mlx.core")  # pretend mlx.core is not imported yet
    return monkeypatch


def test_no_blas_found_gives_the_install_hint(fresh_loader):
    fresh_loader.setattr(blas, "candidates", lambda: [])
    info = blas.load_fast_blas()
    assert (info.name, info.fast) == ("reference", False)
    assert "apt-get install libopenblas0-pthread" in info.note
    assert blas.load_fast_blas() is info  # idempotent


def test_unusable_candidates_are_skipped(fresh_loader, tmp_path):
    not_a_lib = tmp_path / "libfake.so"
    not_a_lib.write_text("not an ELF file")
    libm = ctypes.util.find_library("m")  # loads, but has no cblas_sgemm
    good = tracer.BLAS.path
    if not good:
        pytest.skip("no fast BLAS on this machine")
    cands = [("custom", str(not_a_lib)), ("blis", libm), ("openblas", good)]
    fresh_loader.setattr(blas, "candidates", lambda: cands)
    info = blas.load_fast_blas()
    assert (info.name, info.path, info.fast) == ("openblas", good, True)


def test_blas_threads_can_be_set_for_the_engine_workers():
    import ctypes

    import tracer
    from tracer.blas import set_blas_threads

    if tracer.BLAS.name != "openblas":
        pytest.skip("thread control checked on OpenBLAS")
    lib = ctypes.CDLL(tracer.BLAS.path)
    before = lib.openblas_get_num_threads()
    try:
        assert set_blas_threads(1) and lib.openblas_get_num_threads() == 1
        assert set_blas_threads(2) and lib.openblas_get_num_threads() == min(2, os.cpu_count() or 1)
    finally:
        set_blas_threads(before)

"""The fast-BLAS loader: discovery, the TRACER_BLAS switch, the import-order
trap, what `tracer-tui --version` says, and that the fast one really is fast."""

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import tracer
from tracer import blas

import pytest

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
    for k, v in env.items():
        if v is None:
            full_env.pop(k)
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
    monkeypatch.setenv(blas.ENV_VAR, "/opt/intel/lib/libmkl_rt.so.2")  # named by what the file is
    assert blas.found_libraries()[0] == ("mkl", "/opt/intel/lib/libmkl_rt.so.2", "TRACER_BLAS")


@pytest.mark.skipif(not os.path.isdir(OPENBLAS_DIR), reason="no system OpenBLAS (libopenblas0-pthread)")
def test_system_openblas_is_tried_before_the_python_environments_mkl(monkeypatch):
    monkeypatch.delenv(blas.ENV_VAR, raising=False)
    found = blas.found_libraries()
    assert found[0][0] == "openblas" and found[0][2] == "system"
    wheres = [where for _, _, where in found]
    assert wheres == sorted(wheres, key=["TRACER_BLAS", "system", "python env"].index)


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
    fresh_loader.setattr(blas, "found_libraries", lambda: [])
    info = blas.load_fast_blas()
    assert (info.name, info.fast) == ("reference", False)
    assert "apt-get install libopenblas0-pthread" in info.note
    assert info.reason == "no usable BLAS library found"
    assert blas.load_fast_blas() is info  # idempotent


def test_unusable_candidates_are_skipped(fresh_loader, tmp_path):
    not_a_lib = tmp_path / "libfake.so"
    not_a_lib.write_text("not an ELF file")
    libm = ctypes.util.find_library("m")  # loads, but has no cblas_sgemm
    good = tracer.BLAS.path
    if not good:
        pytest.skip("no fast BLAS on this machine")
    cands = [("custom", str(not_a_lib), "TRACER_BLAS"), ("blis", libm, "system"), ("openblas", good, "system")]
    fresh_loader.setattr(blas, "found_libraries", lambda: cands)
    info = blas.load_fast_blas()
    assert (info.name, info.path, info.fast) == ("openblas", good, True)
    assert info.found == tuple(cands)
    parts = info.reason.split("; ")
    assert parts[0].startswith(f"{not_a_lib} (TRACER_BLAS) failed to load: ")
    assert parts[1].startswith(f"{libm} (system) failed to load: ") and "cblas_sgemm" in parts[1]
    assert parts[2].startswith("first usable in the preferred order (TRACER_BLAS, then a system OpenBLAS")


def venv_mkl() -> str | None:
    paths = sorted(Path(sys.prefix, "lib").glob("libmkl_rt.so*"))
    return os.path.realpath(paths[0]) if paths else None


def test_mkl_threading_layer_is_set_only_where_the_user_has_not(monkeypatch):
    monkeypatch.setenv("MKL_THREADING_LAYER", "SEQUENTIAL")
    assert blas.prepare_mkl() == "MKL_THREADING_LAYER=SEQUENTIAL (yours)"
    assert os.environ["MKL_THREADING_LAYER"] == "SEQUENTIAL"
    monkeypatch.delenv("MKL_THREADING_LAYER")
    if ctypes.util.find_library("gomp") is None:
        pytest.skip("no libgomp here")
    assert blas.prepare_mkl() == "MKL_THREADING_LAYER=GNU (set by tracer)"
    assert os.environ["MKL_THREADING_LAYER"] == "GNU"


@pytest.mark.skipif(venv_mkl() is None, reason="no MKL in this environment (Linux x86_64 only)")
def test_mkl_loads_with_gnu_threads_and_its_thread_count_can_be_set():
    code = (
        "import os, tracer\nfrom tracer.blas import set_blas_threads, blas_threads\n"
        "print(tracer.BLAS.name, os.environ.get('MKL_THREADING_LAYER'))\n"
        "print(set_blas_threads(1), blas_threads())\n"
        "print(set_blas_threads(2), blas_threads())\n"
        "from tracer.blas import gemm_gflops\nprint(gemm_gflops(256, repeats=2) > 0)"
    )
    proc = run_py(code, TRACER_BLAS=venv_mkl(), MKL_THREADING_LAYER=None)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "mkl GNU"
    assert lines[1] == "True 1"
    assert lines[2] == f"True {min(2, os.cpu_count() or 1)}"
    assert lines[3] == "True"


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


# --- doctor: which BLAS, found where, chosen why, how fast, and the fix ----------


def doctor(**env) -> tuple[list[str], str]:
    proc = run_script("doctor", "--no-model", **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines(), proc.stderr


def gemm_rate(lines: list[str]) -> float:
    line = next(l for l in lines if l.startswith("float32 GEMM on CPU: "))
    assert line.endswith(" GFLOP/s")
    return float(line.removeprefix("float32 GEMM on CPU: ").removesuffix(" GFLOP/s"))


@pytest.mark.skipif(not blas.candidates(), reason="no fast BLAS on this machine")
def test_doctor_forced_path():
    path = venv_mkl() or blas.candidates()[0][1]
    name = blas.kind_of(path)
    lines, _ = doctor(TRACER_BLAS=path, MKL_THREADING_LAYER=None)
    assert lines[1] == "BLAS candidates, in the order tried:"
    assert lines[2] == f"  {name:<9} {'TRACER_BLAS':<11} {path}"
    assert f"BLAS: {name} ({path})" in lines
    why = next(l for l in lines if l.startswith("BLAS chosen because: "))
    if name == "mkl":
        assert why == "BLAS chosen because: forced by TRACER_BLAS; MKL_THREADING_LAYER=GNU (set by tracer)"
    else:
        assert why == "BLAS chosen because: forced by TRACER_BLAS"
    assert gemm_rate(lines) > 0
    assert not any(l.startswith("fix:") for l in lines)


def test_doctor_tracer_blas_none():
    lines, err = doctor(TRACER_BLAS="none")
    assert lines[-4].startswith("BLAS: reference - disabled by TRACER_BLAS=none")
    assert lines[-3] == "BLAS chosen because: TRACER_BLAS=none"
    assert 0 < gemm_rate(lines) < 30  # MLX's reference BLAS: ~5 GFLOP/s on an idle machine
    assert lines[-1] == "fix: unset TRACER_BLAS"
    assert "tracing will be 30-65x slower" in err


@pytest.mark.skipif(not blas.candidates(), reason="no fast BLAS on this machine")
def test_doctor_normal_case(monkeypatch):
    monkeypatch.delenv(blas.ENV_VAR, raising=False)
    found = blas.found_libraries()  # what the doctor's process will find too
    lines, _ = doctor(TRACER_BLAS=None)
    assert lines[1] == "BLAS candidates, in the order tried:"
    assert lines[2 : 2 + len(found)] == [f"  {n:<9} {w:<11} {p}" for n, p, w in found]
    first_name, first_path, _ = found[0]
    assert lines[2 + len(found)] == f"BLAS: {first_name} ({first_path})"
    assert lines[3 + len(found)].startswith(
        "BLAS chosen because: first usable in the preferred order (TRACER_BLAS, then a system OpenBLAS"
    )
    assert gemm_rate(lines) > 0
    assert not any(l.startswith("fix:") for l in lines)


def test_doctor_with_no_blas_on_aarch64_says_what_to_install(monkeypatch, capsys):
    from argparse import Namespace

    from tracer.cli import doctor

    none = blas.BlasInfo("reference", None, False, "only MLX's bundled reference BLAS", reason="no usable BLAS library found")
    monkeypatch.setattr(blas, "load_fast_blas", lambda: none)
    monkeypatch.setattr(blas.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(blas, "gemm_gflops", lambda n, repeats: 4.2)
    assert doctor.run(Namespace(no_model=True)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "BLAS candidates: none found",
        "BLAS: reference - only MLX's bundled reference BLAS",
        "BLAS chosen because: no usable BLAS library found",
        "float32 GEMM on CPU: 4.2 GFLOP/s",
        "fix: MKL has no aarch64 wheel: `sudo apt-get install libopenblas0-pthread` (Debian/Ubuntu), "
        "`sudo dnf install openblas` (Fedora), or `conda install -c conda-forge openblas` in a conda "
        "environment; or point TRACER_BLAS at a libopenblas.so",
    ]


def test_fix_hint_on_x86_64_names_uv_sync_and_openblas():
    hint = blas.fix_hint("x86_64")
    assert hint.startswith("run `uv sync` (it installs MKL from PyPI on Linux x86_64)")
    assert "sudo apt-get install libopenblas0-pthread" in hint

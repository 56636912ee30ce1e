"""Shared fixtures. `import tracer` comes first: it loads the fast BLAS before mlx.core."""

from pathlib import Path

import tracer  # noqa: F401  - must precede any import of mlx.core

import pytest
from tiny import ARCHS, make_tiny_model

TINY_ARCH = "llama"  # 6 layers, GQA (2 KV heads for 4 query heads)


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    """Session directory holding one tiny model directory per architecture."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_model_root):
    """`make(arch) -> Path`: the tiny model directory for `arch`, built once per session."""
    built: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in built:
            built[arch] = make_tiny_model(arch, tiny_model_root / arch, seed=0)
        return built[arch]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory) -> Path:
    """A tiny random-init llama (6 layers, hidden 64, GQA) as an mlx-lm directory."""
    return tiny_model_factory(TINY_ARCH)


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_model_factory) -> dict[str, Path]:
    """{arch: directory} for every architecture in tiny.ARCHS."""
    return {arch: tiny_model_factory(arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """The tiny llama loaded through tracer.models.load.load_model (a LoadedModel)."""
    from tracer.models.load import load_model

    return load_model(str(tiny_model_dir))


def pytest_collection_modifyitems(items):
    """Every test that uses the embedded model (the `embedded_model` fixture, directly or through
    another fixture) is `slow`: `pytest -m "not slow"` is the quick loop (README)."""
    for item in items:
        if "embedded_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct, dequantized to float32 (loads in ~5 s, once)."""
    from tracer.models.load import load_model

    return load_model()


@pytest.fixture(scope="module")
def tiny_tracer(tiny_model_dir):
    """An engine Tracer on its own copy of the tiny llama (its taps stay out of the session's tiny_lm)."""
    from tracer.core.tracing import Tracer
    from tracer.models.load import load_model

    return Tracer(load_model(str(tiny_model_dir)))


@pytest.fixture(scope="module")
def tracers(tiny_model_factory):
    """Per arch: (an engine Tracer with small forwards, a separately loaded model for the oracle)."""
    from tracer.core.tracing import Tracer
    from tracer.models.load import load_model

    cache = {}

    def get(arch):
        if arch not in cache:
            path = str(tiny_model_factory(arch))
            cache[arch] = (Tracer(load_model(path), max_rows=7), load_model(path))
        return cache[arch]

    return get

"""Fixtures for driving the app with Textual's Pilot on the tiny random llama."""

from __future__ import annotations

from tracer.engine import Engine

import pytest


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    """Every test gets its own settings folder (the theme choice is saved there)."""
    path = tmp_path / "config"
    monkeypatch.setenv("TRACER_TUI_CONFIG_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    """One engine thread for the whole session, shared by the apps (they do not close it)."""
    eng = Engine(str(tiny_model_dir))
    eng.load().result(timeout=120)
    yield eng
    eng.close()

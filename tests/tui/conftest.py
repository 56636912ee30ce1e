"""Fixtures for driving the app with Textual's Pilot on the tiny random llama."""

from __future__ import annotations

import asyncio
import time

import pytest

from tracer.engine import Engine


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


async def wait_for(pilot, condition, timeout: float = 30.0, what: str = "condition"):
    """Let the app run until `condition()` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


async def ready(pilot):
    app = pilot.app
    await wait_for(pilot, lambda: app.model_info is not None, what="the model to load")
    strip = app.query_one("#strip")
    await wait_for(pilot, lambda: bool(strip.tokens), what="the token strip")
    await pilot.pause()


def notifications(app) -> list[tuple[str, str]]:
    return [(n.severity, n.message) for n in app._notifications]


__all__ = ["asyncio", "wait_for", "ready", "notifications"]

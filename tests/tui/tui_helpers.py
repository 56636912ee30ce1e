"""Helpers for the Pilot tests (a plain module: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import time


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


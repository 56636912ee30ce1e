"""Helpers for the Pilot tests (a plain module: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import time


async def wait_for(pilot, condition, timeout: float = 60.0, what: str = "condition"):
    """Let the app run until `condition()` is true (generous: the test machine is loaded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


async def ready(pilot):
    app = pilot.app
    await wait_for(pilot, lambda: app.model_info is not None, what="the model to load")
    strip = app.trace_screen.strip
    await wait_for(pilot, lambda: bool(strip.tokens), what="the token strip")
    await pilot.pause()


async def start_long_run(pilot, what: str = "the first cells"):
    """ctrl+r with 3,000 samples (a run that lasts), then wait for its first cells; the trace screen."""
    app = pilot.app
    ts = app.trace_screen
    app.query_one("#samples").value = "3000"
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: ts.run.progress.done > 0, what=what)
    return ts


def idle(screen) -> bool:
    """No run in hand (none started, or the last one ended)."""
    return screen.run is None or screen.run.ended


async def run_and_wait(pilot, timeout=120.0):
    """ctrl+r, then wait for that run to end."""
    screen = pilot.app.trace_screen
    before = screen.run_count
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: screen.run_count > before and idle(screen), timeout, "the run to end")
    await pilot.pause(0.3)


def result(screen, mode=None):
    """The last finished TraceResult of `mode` (default: the view on screen), or None."""
    done = screen.finished.get(mode or screen.view_mode)
    return done[1] if done else None


def notifications(app) -> list[tuple[str, str]]:
    return [(n.severity, n.message) for n in app._notifications]

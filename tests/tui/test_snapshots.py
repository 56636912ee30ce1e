"""Issue 16.7: snapshots of the trace screen in its main states, with a deterministic fake engine
(tests/tui/fake_engine.py). Update with `uv run pytest tests/tui/test_snapshots.py --snapshot-update`
after a deliberate change, and look at the report it writes."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine

from tui.app import make_app

pytest.importorskip("pytest_textual_snapshot")


async def settle(pilot) -> None:
    """Let the screen settle; no toasts and no focus (a blinking cursor differs between shots)."""
    await pilot.pause(0.3)
    pilot.app.clear_notifications()
    pilot.app.set_focus(None)
    await pilot.pause(0.1)


def app_with(**kwargs):
    return make_app(engine=FakeEngine(**kwargs), theme="dark")


async def run_trace(pilot) -> None:
    await pilot.pause(0.2)
    await pilot.press("ctrl+r")
    await settle(pilot)


def test_ready_before_a_run(snap_compare):
    assert snap_compare(app_with(), terminal_size=(140, 40), run_before=settle)


def test_all_tokens_recovery_with_warnings(snap_compare):
    assert snap_compare(app_with(), terminal_size=(140, 40), run_before=run_trace)


def test_probability_with_intervals_and_marks(snap_compare):
    async def before(pilot):
        await run_trace(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)

    assert snap_compare(app_with(), terminal_size=(140, 40), run_before=before)


def test_number_table(snap_compare):
    async def before(pilot):
        await run_trace(pilot)
        await pilot.press("f3")
        await settle(pilot)

    assert snap_compare(app_with(), terminal_size=(140, 40), run_before=before)


def test_chosen_positions_without_warnings(snap_compare):
    async def before(pilot):
        await pilot.press("ctrl+o")
        await run_trace(pilot)

    assert snap_compare(app_with(warnings=False, intervals=False), terminal_size=(140, 40), run_before=before)


def test_small_terminal(snap_compare):
    assert snap_compare(app_with(), terminal_size=(80, 24), run_before=run_trace)

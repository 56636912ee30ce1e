"""Nothing stale (issue 24.3): a grid that belongs to another prompt or settings is marked, and an
export is named after the fact it holds. Fake engine."""

from __future__ import annotations

import json

from fake_engine import FakeEngine
from textual.widgets import Input
from tui_helpers import ready, run_and_wait, wait_for

from tui.app import make_app


async def test_a_grid_of_another_prompt_or_settings_is_marked_and_exports_name_its_fact(tmp_path):
    app = make_app(engine=FakeEngine(), export_dir=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        assert not ts.pane.current.title.startswith("STALE") and not ts.pane.has_class("-stale")
        app.query_one("#prompt", Input).value = "The Louvre Museum is located in the city of"
        app.query_one("#subject", Input).value = "Louvre Museum"
        await wait_for(pilot, lambda: ts.pane.has_class("-stale"), what="the stale mark")
        assert ts.pane.current.title.startswith("STALE: the prompt changed; ctrl+r traces it")
        assert str(ts.pane.peak.render()).startswith("stale (the prompt changed): this grid is 'The Eiffel Tower")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: ts.last_export is not None, what="the export")
        assert "trace-eiffel-tower-" in ts.last_export["json"]  # the fact it holds, not the form's
        assert json.load(open(ts.last_export["json"]))["tokens"][1] == " Eiffel"
        app.query_one("#prompt", Input).value = "The Eiffel Tower is located in the city of"
        app.query_one("#subject", Input).value = "Eiffel Tower"
        await wait_for(pilot, lambda: not ts.pane.has_class("-stale"), what="current again")
        app.query_one("#samples", Input).value = "3"
        await wait_for(pilot, lambda: ts.pane.has_class("-stale"), what="stale settings")
        assert ts.pane.current.title.startswith("STALE: samples changed")
        await run_and_wait(pilot)
        assert not ts.pane.has_class("-stale")


async def test_at_80x24_every_row_is_reachable_and_the_title_says_what_is_off_screen():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        plot = ts.pane.plot
        await pilot.pause(0.2)
        n_rows = len(ts.pane.current.values)
        assert 0 < plot.shown_rows < n_rows  # not all fit at 80x24
        subject_last = ts.finished["all"][1].subject_range[1] - 1
        assert plot.first_row <= subject_last < plot.first_row + plot.shown_rows  # the early site in view
        off = n_rows - plot.shown_rows
        rendered = str(plot.render())
        first, last = plot.first_row, plot.first_row + plot.shown_rows - 1
        assert f"rows {first}-{last} of {n_rows} (↑↓ {off} more) · hidden" in rendered
        seen = set(range(plot.first_row, plot.first_row + plot.shown_rows))
        plot.focus()
        for _ in range(n_rows):
            await pilot.press("up")
            await pilot.pause(0.05)
            plot.render()
            seen |= set(range(plot.first_row, plot.first_row + plot.shown_rows))
        assert ts.cursor[0] == 0 and plot.first_row == 0
        for _ in range(n_rows):
            await pilot.press("down")
            await pilot.pause(0.05)
            plot.render()
            seen |= set(range(plot.first_row, plot.first_row + plot.shown_rows))
        assert seen == set(range(n_rows)) and ts.cursor[0] == n_rows - 1
        assert plot.first_row + plot.shown_rows == n_rows


async def test_the_chosen_positions_view_reuses_the_all_tokens_trace():
    engine = FakeEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)  # all tokens
        ts = app.trace_screen
        before = ts.run_count
        await pilot.press("ctrl+o")  # chosen positions: the subject's last token, already in the grid
        await pilot.pause(0.2)
        assert ts.view_mode == "positions" and ts.run_count == before
        grid, result = ts.finished["positions"]
        all_result = ts.finished["all"][1]
        token = all_result.subject_range[1] - 1
        assert result.positions == [token]
        for kind in all_result.grids:
            assert result.grids[kind]["prob"] == [all_result.grids[kind]["prob"][token]]
        assert ts.pane.current.values == [all_result.grids[k]["recovery"][token] for k in grid.kinds]
        # the same rows as a chosen-positions trace of that token (the fake engine computes it directly)
        direct = engine.trace(result.request).result()
        assert {k: g["prob"] for k, g in direct.grids.items()} == {k: g["prob"] for k, g in result.grids.items()}

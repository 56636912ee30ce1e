"""F6 opens the sweep screen with the settings; the token strip follows typing during a run."""

from __future__ import annotations

import threading

from tracer.types import TraceRequest

from textual.coordinate import Coordinate
from textual.widgets import Input
from tui_helpers import ready, wait_for

from tui.app import make_app
from tui.screens.sweep import SweepScreen
from tui.widgets.token_strip import TokenStrip


async def test_f6_opens_the_sweep_screen_with_the_settings(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "4"
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), what="the sweep screen")
        assert app.screen.config.samples == 4
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SweepScreen), what="back to the tracer")
        assert app.is_running


async def test_token_strip_follows_typing_while_the_engine_is_busy(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        gate = threading.Event()
        engine.submit(gate.wait, 30)  # the engine thread is busy until released
        try:
            app.query_one("#prompt", Input).value = "Big Ben is located in the city of"
            app.query_one("#subject", Input).value = "Big Ben"
            strip = app.query_one(TokenStrip)
            target = ("Big Ben is located in the city of", "Big Ben")
            await wait_for(pilot, lambda: strip.source == target, timeout=5, what="tokens while busy")
            assert "".join(strip.tokens) == target[0]
        finally:
            gate.set()


def test_engine_tokenize_needs_no_engine_thread(engine):
    tokens, span = engine.tokenize("The Eiffel Tower is located in the city of", "Eiffel Tower")
    assert "".join(tokens) == "The Eiffel Tower is located in the city of"
    assert "".join(tokens[span[0]:span[1]]).strip() == "Eiffel Tower"
    done = engine.trace(TraceRequest("The Eiffel Tower is located in the city of", "Eiffel Tower",
                                     kinds=("hidden",), samples=1)).result(timeout=60)
    assert done.tokens == tokens and tuple(done.subject_range) == tuple(span)


async def test_sweep_screen_clears_the_old_report_when_a_file_cannot_be_read(engine, tmp_path):
    import json

    from test_sweep import synthetic_records
    from textual.widgets import DataTable, Static
    from tui_helpers import notifications

    from tui.widgets.log import RunLog
    from tui.widgets.sweep_plot import SweepPlot

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))
    bad = tmp_path / "a-directory"
    bad.mkdir()
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{]\n")
    app = make_app(engine=engine)
    async with app.run_test(size=(140, 48)) as pilot:
        await ready(pilot)
        screen = SweepScreen()  # showing files only (F6 would also start a sweep of known_1000)
        app.push_screen(screen)
        await wait_for(pilot, lambda: app.screen is screen and screen.is_mounted, what="the sweep screen")
        await pilot.pause()
        screen.open(str(good))
        await pilot.pause()
        assert "Facts: 3 traced" in str(screen.query_one("#sweep-summary", Static).render())
        table = screen.query_one("#sweep-table", DataTable)
        assert table.row_count > 0
        curve = screen.report.curves[screen.kind]["last_subject"]  # each AIE with its 95% interval (the report's)
        column = 1 + list(screen.report.curves[screen.kind]).index("last_subject")
        for layer in (0, screen.report.n_layers - 1):
            half = (curve.high[layer] - curve.low[layer]) / 2
            assert table.get_cell_at(Coordinate(layer, column)) == f"{curve.mean[layer]:+.4f} ±{half:.4f}"
        for path, message in [(bad, f"results file is a directory: {bad}"),
                              (garbage, f"{garbage}: no sweep result lines (2 unreadable lines)")]:
            screen.open(str(good))
            await pilot.pause()
            screen.open(str(path))
            await pilot.pause()
            assert str(screen.query_one("#sweep-status", Static).render()) == message
            assert str(screen.query_one("#sweep-summary", Static).render()) == ""
            assert screen.query_one("#sweep-table", DataTable).row_count == 0
            assert screen.query_one(SweepPlot).report is None and screen.report is None
            assert ("error", message) in notifications(app)
            assert any(line.endswith(f"error: sweep: {message}") for line in app.screen_stack[0].query_one(RunLog).lines_text)
        assert app.is_running

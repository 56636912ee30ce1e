"""Driving the app as a user would: launch, edit, choose tokens, run, cancel, bad input."""

from __future__ import annotations

import time

from tracer.events import CellsDone, Started
from tracer.render.terminal_plot import format_value, visible
from tracer.types import TraceRequest

import pytest
from textual.coordinate import Coordinate
from textual.widgets import Input
from tui_helpers import idle, notifications, ready, result, run_and_wait, start_long_run, wait_for

from tui.app import make_app
from tui.messages import CellsArrived
from tui.runstate import RunState
from tui.widgets.grid import GridPane, GridTable
from tui.widgets.prompt_form import EIFFEL_PROMPT, EIFFEL_SUBJECT
from tui.widgets.token_strip import TokenStrip


def chip_offset(strip: TokenStrip, index: int) -> tuple[int, int]:
    """Where chip `index` is drawn (one line of chips: true for the short test prompts)."""
    x = 1 + len("Tokens ") + sum(len(visible(t)) + 1 for t in strip.tokens[:index])
    return x + 1, 0


async def test_launch_loads_in_background_with_eiffel_prefilled(tiny_model_dir):
    app = make_app(model_spec=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.query_one(GridPane).loading or app.model_info is not None  # the screen is up at once
        assert app.query_one("#prompt", Input).value == EIFFEL_PROMPT
        assert app.query_one("#subject", Input).value == EIFFEL_SUBJECT
        await ready(pilot)
        assert "6 layers" in app.sub_title and "BLAS" in app.sub_title
        assert not app.query_one(GridPane).loading
        strip = app.query_one(TokenStrip)
        assert strip.tokens[1:3] == (" Eiffel", " Tower") and strip.subject_range == (1, 3)
        assert strip.positions == (2,)  # the subject's last token is preselected


async def test_token_strip_follows_the_prompt_and_toggles_by_mouse_and_keyboard(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        strip = app.query_one(TokenStrip)
        await pilot.click(TokenStrip, offset=chip_offset(strip, 5))
        assert strip.positions == (2, 5)
        await pilot.click(TokenStrip, offset=chip_offset(strip, 2))
        assert strip.positions == (5,)
        strip.focus()
        await pilot.press("home", "right", "space")
        assert strip.positions == (1, 5)
        await pilot.press("end", "enter")
        assert strip.positions == (1, 5, len(strip.tokens) - 1)
        # editing the prompt re-tokenizes; the new subject's last token is chosen
        app.query_one("#prompt", Input).value = "Big Ben is located in the city of"
        app.query_one("#subject", Input).value = "Big Ben"
        big_ben = ("Big Ben is located in the city of", "Big Ben")
        await wait_for(pilot, lambda: strip.source == big_ben, what="new tokens")
        assert "".join(strip.tokens) == big_ben[0]
        assert strip.subject_range is not None and strip.positions == (strip.subject_range[1] - 1,)
        app.query_one("#subject", Input).value = "Louvre"
        await wait_for(pilot, lambda: "not found" in strip.note, what="a 'not found' note")
        assert app.is_running


async def test_grid_and_table_show_exactly_the_engines_values(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        await pilot.press("ctrl+o")  # the chosen-positions view
        strip = app.query_one(TokenStrip)
        await pilot.click(TokenStrip, offset=chip_offset(strip, 4))  # positions (2, 4)
        await run_and_wait(pilot)
        res = result(ts, "positions")
        assert res is not None and res.positions == [2, 4]
        expected = engine.trace(ts.run.request).result(timeout=60)
        assert res.grids == expected.grids
        grid = ts.finished["positions"][0]
        for kind in expected.grids:
            for metric in ("prob", "recovery", "logit_diff"):
                assert grid.values[kind][metric] == expected.grids[kind][metric]
        view = app.query_one(GridPane).current
        if res.recovery_available:
            assert view.values == [expected.grids[k]["recovery"][0] for k in expected.grids]
        else:  # the tiny model: no empty recovery heatmap, the probability instead (the table lists "n/a")
            assert view.values == [expected.grids[k]["prob"][0] for k in expected.grids]
            assert view.title.startswith("recovery n/a, P shown")
        table = app.query_one(GridTable)
        for r, kind in enumerate(expected.grids):
            for c, value in enumerate(expected.grids[kind]["recovery"][0]):
                shown = "n/a" if value is None else format_value(value, "recovery")  # None: recovery not available
                assert table.get_cell_at(Coordinate(r, c + 1)).plain.split("±")[0] == shown
        peak = app.query_one("#peak").render()
        assert str(peak).startswith("subject site: ") and "' Eiffel' + ' located'" not in str(peak)
        # the paper's tokens x layers view: another run, same checks
        await pilot.press("ctrl+o", "ctrl+g", "ctrl+g")  # all tokens; kind hidden -> mlp -> attn
        assert ts.view_mode == "all" and ts.view_kind == "attn"
        await run_and_wait(pilot)
        expected = engine.trace(ts.run.request).result(timeout=60)
        assert result(ts, "all").grids == expected.grids
        assert ts.shown_grid().view("attn", "recovery").values == expected.grids["attn"]["recovery"]
        await pilot.press("ctrl+n")  # metric: probability
        assert app.query_one(GridPane).current.values == expected.grids["attn"]["prob"]
        cell = table.get_cell_at(Coordinate(0, 1)).plain  # the value, then its 95% interval's half-width
        assert cell.split("±")[0] == format_value(expected.grids["attn"]["prob"][0][0], "prob")
        log = "\n".join(app.query_one("#log").lines_text)
        n = len(expected.clean_top)
        assert f"clean top-{n}: " in log and f"corrupted top-{len(expected.corrupted_top)}" in log and "finished in" in log


async def test_grid_fills_in_live_from_cells_done_events(engine):
    """Synthetic events through the same path the engine thread uses (RunState.on_event)."""
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        await pilot.press("ctrl+o")  # the chosen-positions view is on screen; the run fills all tokens
        run = ts.run = RunState(99, TraceRequest(EIFFEL_PROMPT, EIFFEL_SUBJECT), "all", post=ts.post_message)
        tokens = ["The", " Eiffel", " Tower", " is"]
        run.on_event(Started(tokens, (1, 3), 0.5, 0.1, (4, 6), ("hidden", "mlp"), " Paris", 48))
        await pilot.pause(0.1)
        for i in range(3):
            cells = [(i, layer) for layer in range(6)]
            run.on_event(CellsDone("hidden", cells, [0.1 * i] * 6, [10.0 * i] * 6, [0.0] * 6, 6 * (i + 1), 48))
        await wait_for(pilot, lambda: run.progress.done == 18, what="the cells")
        await pilot.pause(0.3)
        assert ts.view_mode == "positions" and app.query_one(GridPane).current is None
        assert run.grid.values["hidden"]["recovery"][2] == [20.0] * 6
        assert run.grid.values["hidden"]["recovery"][3] == [None] * 6
        await pilot.press("ctrl+o")  # all tokens: kind hidden (the default)
        assert ts.view_kind == "hidden"
        view = app.query_one(GridPane).current
        assert view.values[1] == [10.0] * 6 and view.values[3] == [None] * 6
        assert app.query_one(GridTable).get_cell_at(Coordinate(3, 1)).plain == "·"  # pending, not n/a
        app.trace_screen.post_message(CellsArrived(98))  # an older run's events are ignored
        await pilot.pause()
        assert run.progress.done == 18
        run.cancel.set()


@pytest.mark.slow
async def test_cancel_stops_a_long_run_within_a_second(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = await start_long_run(pilot)  # all tokens: 162 cells x 3000 samples
        await pilot.pause(0.3)
        await pilot.press("x")  # the UI still takes typing while the engine works
        start = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(ts), timeout=30, what="the cancellation")
        assert time.monotonic() - start < 10  # generous: the precise figure is benchmarks/tui_cancel.py's
        assert result(ts, "all") is None and ts.run.progress.done < ts.run.progress.total
        assert any("cancelled" in m for _, m in notifications(app))
        assert app.is_running


@pytest.mark.slow
async def test_starting_a_new_run_cancels_the_old_one(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = await start_long_run(pilot)
        first = ts.run
        app.query_one("#samples", Input).value = "2"
        await pilot.press("ctrl+r")
        assert first.cancel.is_set() and ts.run_count == 2
        await wait_for(pilot, lambda: result(ts, "all") is not None, timeout=120, what="the second run")
        assert result(ts, "all").request.samples == 2


async def test_bad_input_notifies_and_the_app_keeps_running(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        prompt, subject = app.query_one("#prompt", Input), app.query_one("#subject", Input)
        cases = [
            (lambda: setattr(prompt, "value", ""), "prompt is empty"),
            (lambda: (setattr(prompt, "value", EIFFEL_PROMPT), setattr(subject, "value", "Louvre")), "not in the prompt"),
            (lambda: (setattr(subject, "value", EIFFEL_SUBJECT), setattr(app.query_one("#samples", Input), "value", "0")),
             "samples must be between 1"),
        ]
        for change, message in cases:
            change()
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda message=message: any(message in m for _, m in notifications(app)), 10, message)
        app.query_one("#samples", Input).value = "2"
        app.query_one("#corrupted", Input).value = "The Eiffel Tower is located in the big old city of Rome"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: any(s == "error" and "run failed" in m for s, m in notifications(app)), 30,
                       "the substitution length error")
        assert idle(app.trace_screen) and app.is_running
        log = "\n".join(app.query_one("#log").lines_text)
        assert "prompt is empty" in log and "run failed" in log
        # the app still works after all that
        app.query_one("#corrupted", Input).value = ""
        await run_and_wait(pilot)
        assert result(app.trace_screen, "all") is not None


async def test_a_model_that_cannot_load_is_reported_and_the_app_stays_up(tmp_path):
    app = make_app(model_spec=str(tmp_path / "no-such-model"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model_error is not None, 30, "the load failure")
        await pilot.pause()
        assert "no model" in app.sub_title
        assert any(s == "error" and "failed to load" in m for s, m in notifications(app))
        await pilot.press("ctrl+r")
        assert any("cannot run: no model loaded" in m for _, m in notifications(app))
        assert app.is_running


async def test_the_recording_phase_shows_in_the_status_line(engine):
    """Recording events (before Started) name the phase and layer, through the engine thread's path."""
    from tracer.events import Recording

    from tui.widgets.run_status import RunStatus

    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        run = ts.run = RunState(77, TraceRequest(EIFFEL_PROMPT, EIFFEL_SUBJECT), "all", post=ts.post_message)
        run.on_event(Recording("corrupted", 12, 30, 2, 3))
        status = app.query_one(RunStatus)
        await wait_for(pilot, lambda: "recording the corrupted run: layer 12/30, samples batch 2/3" in status.plain,
                       what="the recording status")
        run.cancel.set()

"""The trace screen in use: leaving during a run, help, the status line, exports after a cancel, the sweep screen, the number table, the layer axis and the log (each once a defect found by trying the app)."""

from __future__ import annotations

import json

from tracer.events import CellsDone, Started
from tracer.types import TraceRequest

import pytest
from textual.widgets import Input
from tui_helpers import idle, notifications, ready, result, run_and_wait, start_long_run, wait_for

from tui.app import make_app
from tui.gridmodel import sites_sentence
from tui.runstate import RunState
from tui.screens.help import HelpScreen
from tui.screens.sweep import SweepScreen
from tui.widgets.grid import GridTable
from tui.widgets.prompt_form import EIFFEL_PROMPT, EIFFEL_SUBJECT


def fake_run(screen, n_tokens: int, n_layers: int, kinds=("hidden", "mlp", "attn"), run_id: int = 500) -> RunState:
    """A run fed by synthetic events through the engine thread's path, every cell filled."""
    run = screen.run = RunState(run_id, TraceRequest(EIFFEL_PROMPT, EIFFEL_SUBJECT), "all", post=screen.post_message)
    tokens = [f" t{i}" for i in range(n_tokens)]
    total = n_tokens * n_layers * len(kinds)
    run.on_event(Started(tokens, (1, 3), 0.6, 0.1, (n_tokens, n_layers), kinds, " Paris", total))
    done = 0
    for kind in kinds:
        for r in range(n_tokens):
            done += n_layers
            cells = [(r, c) for c in range(n_layers)]
            run.on_event(CellsDone(kind, cells, [0.1 + 0.01 * c for c in range(n_layers)],
                                            [float(c + r) for c in range(n_layers)], [0.0] * n_layers, done, total))
    return run


@pytest.mark.slow
async def test_leaving_while_a_run_streams_cells_does_not_crash(engine):
    """The refresh timer and late engine messages never query widgets being pruned (NoMatches)."""
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = await start_long_run(pilot)
        await ts.pane.remove()  # a widget gone while cells keep arriving: redraws must not raise
        ts._dirty = True
        ts._refresh()
        await pilot.pause(0.3)
    assert ts.run.cancel.is_set()  # leaving stopped the run


async def test_question_mark_types_into_the_prompt_and_f1_opens_help(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        prompt = app.query_one("#prompt", Input)
        assert prompt.has_focus
        await pilot.press("question_mark")
        assert prompt.value == EIFFEL_PROMPT + "?"  # typed at the end; the example is not wiped
        assert not isinstance(app.screen, HelpScreen)
        shown = {key: b.binding for key, b in app.screen.active_bindings.items() if b.binding.show}
        assert shown["f1"].description == "Help" and "question_mark" not in shown
        await pilot.press("f1")  # works while the prompt has focus
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        app.trace_screen.strip.focus()
        await pilot.press("question_mark")  # outside an Input, ? is help too
        assert isinstance(app.screen, HelpScreen)


async def test_the_status_line_names_the_peak_of_the_kind_on_screen(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "2"
        await run_and_wait(pilot)
        ts = app.trace_screen
        result = ts.finished[ts.view_mode][1]
        assert ts.view_kind == "hidden" and ts.status.plain.endswith(sites_sentence(result, ("hidden",), ts.metric))
        assert "subject site: " in ts.status.plain
        await pilot.press("ctrl+g")
        assert ts.view_kind == "mlp" and ts.status.plain.endswith(sites_sentence(result, ("mlp",), ts.metric))
        assert sites_sentence(result, ("mlp",), ts.metric) != sites_sentence(result, ("hidden",), ts.metric)
        assert ts.status.plain.endswith(str(app.query_one("#peak").render()))


@pytest.mark.slow
async def test_a_cancelled_rerun_keeps_the_previous_grid_exportable(engine, tmp_path):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        app.query_one("#samples", Input).value = "2"
        app.query_one("#export-dir", Input).value = str(tmp_path)
        await run_and_wait(pilot)
        first = result(ts)
        await start_long_run(pilot, what="the re-run's first cells")
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(ts), what="the cancellation")
        assert result(ts) is first and ts.shown_grid().values["hidden"]["recovery"] == first.grids["hidden"]["recovery"]
        await pilot.press("ctrl+s")
        assert ts.last_export is not None
        assert json.load(open(ts.last_export["json"]))["grids"]["hidden"]["prob"] == first.grids["hidden"]["prob"]


async def test_sweep_screen_exports_the_sweep_lists_its_keys_and_reports_the_loaded_file(engine, tmp_path):
    from test_sweep import synthetic_records

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))
    app = make_app(engine=engine)
    async with app.run_test(size=(140, 48)) as pilot:
        await ready(pilot)
        screen = SweepScreen(export_dir=str(tmp_path / "out"))
        app.push_screen(screen)
        await wait_for(pilot, lambda: app.screen is screen and screen.is_mounted, what="the sweep screen")
        screen.open(str(good))
        await pilot.pause()
        status = str(screen.query_one("#sweep-status").render())
        assert "no results" not in status and f"{good}: 3 facts" in status
        shown = {key: b.binding.description for key, b in app.screen.active_bindings.items() if b.binding.show}
        assert shown["ctrl+s"] == "Export" and shown["escape"] == "Back"
        assert "ctrl+o" not in shown and "ctrl+n" not in shown  # the trace screen's keys are not listed
        await pilot.press("ctrl+s")
        assert screen.last_export and all(p.startswith(str((tmp_path / "out").resolve())) for p in screen.last_export)
        assert {p.rsplit(".", 1)[1] for p in screen.last_export[:3]} == {"txt", "csv", "json"}
        assert "Facts: 3 traced" in open(screen.last_export[0]).read()
        assert app.trace_screen.last_export is None  # not the trace behind it
        assert not any("nothing to export" in m for _, m in notifications(app))


async def test_the_number_table_has_every_layer_and_frozen_row_labels(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        fake_run(ts, 12, 30)
        await wait_for(pilot, lambda: ts.run.progress.done == 12 * 30 * 3, what="the cells")
        ts.show_view()
        await pilot.press("f3")
        await pilot.pause(0.2)
        table = app.query_one(GridTable)
        assert table.fixed_columns == 1 and len(table.columns) == 31
        assert [str(c.label) for c in list(table.columns.values())[1:]] == [f"L{i}" for i in range(30)]
        table.scroll_to(x=table.max_scroll_x, animate=False)
        await pilot.pause(0.2)
        assert table.scroll_x > 0
        line = table.render_line(table.header_height).text  # the first row, scrolled right
        print(repr(line))
        assert line.split()[0] == "␣t0"  # the label stays
        assert line.split()[-1] == "29.0"  # the last layer's cell (recovery = layer + row) is in view
        ts.run.cancel.set()


async def test_a_29_token_prompt_at_48_rows_keeps_the_layer_axis_on_screen(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        fake_run(ts, 29, 30)
        await wait_for(pilot, lambda: ts.run.progress.done == 29 * 30 * 3, what="the cells")
        ts.show_view()
        await pilot.pause(0.3)
        plot = ts.pane.plot
        assert plot.region.bottom <= 48 - 1  # above the footer
        drawn = str(plot.render())
        assert drawn.rstrip().splitlines()[-1].strip() == "layer"  # the x label, last line, is drawn
        ts.run.cancel.set()


async def test_the_log_uses_the_width_of_its_pane(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot)
        log = app.trace_screen.run_log
        log.line("x" * 120)  # written while the Log tab is hidden
        await pilot.press("f4")
        await pilot.pause(0.3)
        assert any(("x" * 120) in strip.text for strip in log.lines)  # one line, not wrapped at 78

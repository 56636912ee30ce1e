"""Feedback that helps (issue 24.5): each defect the half-hour session found, fixed. Fake engine
(and a synthetic results file for the sweep screen)."""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import Future

from tracer.types import Prediction

from fake_engine import FakeEngine
from textual.widgets import Checkbox, DataTable, TabbedContent
from tui_helpers import notifications, ready, run_and_wait, wait_for

from tui.app import make_app
from tui.exporting import export_text
from tui.gridmodel import GridView
from tui.screens.sweep import SweepScreen
from tui.screens.trace import in_app_words


class SlowEngine(FakeEngine):
    """A trace that never reports: the first run stays in its recording phase."""

    def trace(self, request, on_event=None, cancel=None, *, settle=None) -> Future:
        return Future()


async def test_while_the_first_trace_records_the_grid_says_so_not_no_trace_yet():
    app = make_app(engine=SlowEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert "No trace in the all tokens view yet" in app.trace_screen.pane.plot.placeholder
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        assert app.trace_screen.pane.plot.placeholder.startswith("Recording the clean and corrupted runs")


async def test_a_finished_trace_is_no_toast_and_f8_is_one_toast_in_the_apps_words():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        assert not any("trace done" in m for _, m in notifications(app))  # the status line says it
        assert "done in 1.5 s" in app.trace_screen.status.plain
        for _ in range(3):
            await pilot.press("f8")
            await pilot.pause()
        shown = notifications(app)
        assert len(shown) == 1 and shown[0][0] == "warning"
        assert "small-total-effect" in shown[0][1] and "weak-target" in shown[0][1]
    assert in_app_words("give the fact's answer with --target") == "give the fact's answer in the Target field"
    assert "--" not in in_app_words("raise --samples or change --noise")


def test_rounding_is_not_beyond_the_scale():
    view = GridView([[-0.01, 50.0, 100.04]], ["a"], ["a"], "t", "recovery", "hidden", ["hidden"], True,
                    scale=(0.0, 100.0))
    assert view.beyond == (0, None, None)  # "-0" and "100" as shown: rounding
    view.values = [[-5.0, 50.0, 112.0]]
    assert view.beyond == (2, -5.0, 112.0)


async def test_recovery_not_available_draws_the_probability_not_an_empty_heatmap():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        grid = ts.finished["all"][0]
        for kind in grid.kinds:
            grid.values[kind]["recovery"] = [[None] * grid.n_layers for _ in range(grid.n_rows)]
        ts.show_view()
        shown = ts.pane.current  # the probability, said so: never an empty recovery heatmap
        assert shown.metric == "prob" and shown.title.startswith("recovery n/a, P shown · hidden · ")
        assert shown.values == ts.finished["all"][1].grids["hidden"]["prob"]
        assert "probability" in str(ts.pane.legend.render())
        assert ts.table.get_cell_at((0, 1)).plain == "n/a"  # the table lists the recovery cells: n/a


async def test_the_log_names_as_many_top_tokens_as_it_lists():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        result = ts.finished["all"][1]
        five = [Prediction(i, f" t{i}", 0.1) for i in range(5)]
        ts.run_log.result(dataclasses.replace(result, clean_top=five))
        line = next(t for t in reversed(ts.run_log.lines_text) if "clean top-" in t)
        assert "clean top-5: ' t0' 0.100" in line and line.count("0.100") == 5


async def test_f2_to_f4_work_while_a_settings_checkbox_has_focus():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        box = app.query(Checkbox).first()
        box.focus()
        await pilot.pause()
        assert app.focused is box
        tabs = app.query_one(TabbedContent)
        for key, tab in (("f2", "tab-grid"), ("f3", "tab-table"), ("f4", "tab-log")):
            await pilot.press("f5")
            app.query(Checkbox).first().focus()
            await pilot.pause()
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active == tab, key


async def test_a_sweep_group_of_one_fact_shows_no_interval(tmp_path):
    from test_sweep import synthetic_records

    one = tmp_path / "one.jsonl"
    records = [r for r in synthetic_records() if r.get("status") != "kept" or r["known_id"] == 0]
    one.write_text("".join(json.dumps(r) + "\n" for r in records))
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(140, 48)) as pilot:
        await ready(pilot)
        screen = SweepScreen()
        app.push_screen(screen)
        await wait_for(pilot, lambda: app.screen is screen and screen.is_mounted, what="the sweep screen")
        screen.open(str(one))
        await pilot.pause()
        table = screen.query_one("#sweep-table", DataTable)
        cells = [str(table.get_row_at(r)[c]) for r in range(3) for c in range(1, len(table.columns))]
        assert cells and not any("±" in c for c in cells)


async def test_text_export_keeps_the_marks_and_does_not_draw_values_with_the_noise_texture():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        grid, result = ts.finished["all"]
        view = grid.view("hidden", "prob")
        text = export_text(result, view)
        assert "░" not in text and "±" in text and "~" in text
        assert view.cell_text(2, 3) in text.split("as on screen")[1]


def test_the_robustness_view_has_an_eta_from_the_corruptions_done():
    from tui.screens.robustness import robustness_eta

    assert robustness_eta(20.0, 2, 8) == "ETA 1m00s (20s elapsed)"  # 10 s per corruption, 6 left
    assert robustness_eta(3.0, 0, 8).startswith("ETA after the first corruption")
    # with the engine's work: a quarter of the token-layers in 20 s leaves 60 s, whatever the corruptions done
    from tui.gridmodel import WorkClock

    clock = WorkClock(time.monotonic() - 20.0)
    clock.update(250, 1000)
    assert robustness_eta(20.0, 0, 8, clock) == "ETA 1m00s (20s elapsed)"


def test_the_trace_eta_comes_from_the_work_the_engine_reports():
    from tracer.events import CellsDone, Recording, Started

    from tui.gridmodel import Progress, eta_blend

    progress = Progress()
    assert progress.eta is None and progress.work.started is None  # nothing counted yet
    progress.add_work(Recording("corrupted", 3, 3, work_done=30, work_total=120))
    assert progress.fraction == 0.25 and progress.work.started is not None  # the clock runs from the first count
    progress.work.started = time.monotonic() - 10.0  # 10 s since
    progress.add_work(Started(["a"], (0, 1), 0.9, 0.1, (1, 3), ("mlp",), " x", 3))  # no work_done: no change
    assert progress.fraction == 0.25
    progress.add_work(CellsDone("mlp", [(0, 0)], [0.5], [50.0], [0.0], 1, 3, work=30, work_done=60, work_total=120))
    # half the work in 10 s: 10 s left at this pace
    assert progress.fraction == 0.5 and abs(progress.eta - 10.0) < 0.1
    progress.work.cost = 30.0 / 120  # a prediction of 30 s in all: 20 s left; blended by the work done
    assert abs(progress.eta - (0.5 * 20.0 + 0.5 * 10.0)) < 0.1
    assert eta_blend(10.0, 0.5, None) == 10.0 and eta_blend(10.0, 0.5, 30.0) == 0.5 * 20.0 + 0.5 * 10.0


async def test_the_first_screen_tells_a_newcomer_what_to_do_next():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        assert "type your own fact (Prompt, Subject), or ctrl+o: the components" in ts.status.plain
        await run_and_wait(pilot)
        assert any("next: your own fact in Prompt and Subject" in line for line in ts.run_log.lines_text)

"""The app during a run: rapid run/cancel cycles, resizes, theme switches, exports and quit. No tight timing here (the machine is loaded): the
precise quit measurement is benchmarks/tui_quit_during_run.py's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from textual.widgets import Input
from tui_helpers import idle, notifications, ready, result, run_and_wait, start_long_run, wait_for

from tui.app import make_app

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_thirty_rapid_run_cancel_cycles(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        app.query_one("#samples", Input).value = "500"
        for _ in range(30):
            await pilot.press("ctrl+r", "escape")
        assert ts.run_count == 30
        await wait_for(pilot, lambda: idle(ts), what="the last cancellation")
        assert app.is_running and result(ts) is None
        app.query_one("#samples", Input).value = "2"
        await run_and_wait(pilot)  # the engine is still in working order
        assert result(ts) is not None and ts.run_count == 31


@pytest.mark.slow
async def test_resize_to_60x15_and_back_during_a_run(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = await start_long_run(pilot)
        await pilot.resize_terminal(60, 15)
        await pilot.pause(0.5)
        assert app.size == (60, 15) and ts.has_class("-narrow") and ts.facts.region.width == 0
        assert str(ts.pane.plot.render()) in ("(too small to draw)", "") or "layer" in str(ts.pane.plot.render())
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.5)
        assert ts.pane.plot.region.height > 6 and ts.run.active
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(ts), what="the cancellation")
        assert app.is_running


@pytest.mark.slow
async def test_theme_switch_during_a_run(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = await start_long_run(pilot)
        before = ts.run.progress.done
        await pilot.press("ctrl+t")
        assert app.theme == "light"
        await wait_for(pilot, lambda: ts.run.progress.done > before, what="more cells after the switch")
        await pilot.pause(0.3)
        assert ts.run.active
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(ts), what="the cancellation")


async def test_export_to_an_unusable_folder_notifies_and_loses_nothing(engine, tmp_path):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        app.query_one("#samples", Input).value = "2"
        await run_and_wait(pilot)
        shown = ts.pane.current
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        app.query_one("#export-dir", Input).value = str(blocker / "sub")  # a folder inside a file
        await pilot.press("ctrl+s")
        assert any(s == "error" and m.startswith("export failed: ") and str(blocker) in m
                   for s, m in notifications(app))
        # the same grid is still on screen (the pane may have redrawn it: compare what it shows)
        current = ts.pane.current
        assert ts.last_export is None and result(ts) is not None
        assert current.values == shown.values and current.labels == shown.labels
        app.query_one("#export-dir", Input).value = str(tmp_path / "good")
        await pilot.press("ctrl+s")
        assert ts.last_export and Path(ts.last_export["json"]).exists()


@pytest.mark.slow
def test_quit_during_a_run_exits_promptly_with_code_0(tiny_model_dir):
    spec = importlib.util.spec_from_file_location("tui_quit", REPO / "benchmarks" / "tui_quit_during_run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    code, seconds = bench.measure(str(tiny_model_dir), samples=3000)
    assert code == 0
    assert seconds < 10  # 1 s on an idle machine (the benchmark); generous here, the suite runs loaded


def test_recording_progress_reaches_the_ui_a_few_times_a_second_and_at_each_phases_ends():
    """A layer's Recording each is 60 messages in a trace's first second, when the engine needs the
    CPU most: RunState posts a few (each carries the work done by then) and every phase's first and
    last, so the status line still says where the recording is."""
    from tracer.events import Recording
    from tracer.types import TraceRequest

    from tui.messages import RunEvent
    from tui.runstate import RunState

    posted = []
    run = RunState(1, TraceRequest("The Eiffel Tower is in", "Eiffel Tower"), "all", post=posted.append)
    for phase in ("clean", "corrupted"):
        for layer in range(31):
            run.on_event(Recording(phase, layer, 30, work_done=layer))
    said = [(m.event.phase, m.event.layer) for m in posted if isinstance(m, RunEvent)]
    assert {("clean", 0), ("clean", 30), ("corrupted", 0), ("corrupted", 30)} <= set(said)
    assert len(said) < 10  # all 62 came within a few milliseconds

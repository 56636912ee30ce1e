"""Samples auto in the app (issue 21.3): the Settings tab's Samples takes "auto" and a CI width,
the run asks the engine for adaptive samples, ctrl+f (stop refining) reaches the engine's settle,
the cursor's readout gives each cell's samples, and the choice is kept for the next launch. On
fake engines."""

from __future__ import annotations

import json
from concurrent.futures import Future

from tracer.events import CellsDone, Started
from tracer.types import AUTO_CI_WIDTH, AUTO_SAMPLES

from fake_engine import N_LAYERS, FakeEngine
from textual.widgets import Input
from tui_helpers import idle, notifications, ready, run_and_wait, wait_for

from tui.app import make_app
from tui.commands import COMMANDS
from tui.config import config_path
from tui.screens.help import HELP


class RecordingEngine(FakeEngine):
    """The fake engine, keeping every request it was given."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.requests = []

    def trace(self, request, on_event=None, cancel=None, *, settle=None) -> Future:
        self.requests.append(request)
        return super().trace(request, on_event, cancel)


class RefiningEngine(FakeEngine):
    """A trace that starts, delivers one row of cells and then waits (as a trace refining its cells
    does) until the test finishes it; keeps the settle event it was given."""

    def __init__(self):
        super().__init__()
        self.settle, self.future, self.request = None, None, None

    def trace(self, request, on_event=None, cancel=None, *, settle=None) -> Future:
        tokens = request.prompt.split(" ")
        emit = on_event or (lambda e: None)
        emit(Started(tokens, (1, 3), 0.8, 0.05, (len(tokens), N_LAYERS), tuple(request.kinds), " Paris",
                     len(tokens) * N_LAYERS * len(request.kinds)))
        emit(CellsDone(request.kinds[0], [(0, c) for c in range(N_LAYERS)], [0.05] * N_LAYERS, [0.0] * N_LAYERS,
                       [0.0] * N_LAYERS, N_LAYERS, len(tokens) * N_LAYERS * len(request.kinds)))
        self.settle, self.request, self.future = settle, request, Future()
        return self.future

    def finish(self) -> None:
        self.future.set_result(FakeEngine.trace(self, self.request).result())


async def choose_auto(pilot, width: str | None = None) -> None:
    app = pilot.app
    app.query_one("#samples", Input).value = "auto"
    if width is not None:
        app.query_one("#ci-width", Input).value = width
    await pilot.pause()


async def test_samples_auto_runs_an_adaptive_request():
    engine = RecordingEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ci_width = app.query_one("#ci-width", Input)
        assert ci_width.value == "0.02" and ci_width.disabled  # counts only for auto
        await choose_auto(pilot, "0.05")
        assert not ci_width.disabled
        await run_and_wait(pilot)
        request = engine.requests[-1]
        assert (request.samples, request.ci_width) == (AUTO_SAMPLES, 0.05)
        assert "samples auto (up to 40 per cell, to a 95% interval 0.05 wide)" in "\n".join(app.trace_screen.run_log.lines_text)
        app.query_one("#samples", Input).value = "12"
        await pilot.pause()
        assert "samples changed" in app.trace_screen.stale_reason(request)
        await run_and_wait(pilot)
        assert (engine.requests[-1].samples, engine.requests[-1].ci_width) == (12, None)


async def test_stop_refining_reaches_the_engine_and_the_trace_finishes():
    engine = RefiningEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        assert "ctrl+f" not in ts.active_bindings  # nothing refines: not in the footer
        await choose_auto(pilot)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: ts.run is not None and ts.run.progress.done > 0, what="the first cells")
        assert engine.request.ci_width == AUTO_CI_WIDTH and not engine.settle.is_set()
        assert "ctrl+f" in ts.active_bindings  # refining: in the footer
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert engine.settle.is_set() and engine.settle is ts.run.settle
        assert "ctrl+f" not in ts.active_bindings and not ts.run.cancel.is_set()
        engine.finish()
        await wait_for(pilot, lambda: idle(ts), what="the run to end")
        assert ts.finished["all"] is not None  # a complete grid, not a cancelled run


async def test_stop_refining_from_the_palette_with_nothing_refining_says_so():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        action = next(a for title, _, a in COMMANDS if title.startswith("Stop refining"))
        await app.run_action(action, ts)
        await pilot.pause()
        message = "nothing to stop refining: no trace with Samples auto (F5) is running"
        assert notifications(app) == [("warning", message)]
        assert message in ts.run_log.lines_text[-1]
    assert "| ctrl+f | Samples auto: stop refining" in HELP


async def test_the_readout_gives_each_cells_samples():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await choose_auto(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        for layer, count in ((0, 3), (1, 6), (5, 12)):
            ts.set_cursor(2, layer)
            await pilot.pause()
            assert str(ts.pane.readout.render()).endswith(f"· {count} samples · F9 top-5")
        grid = ts.finished["all"][0]
        grid.cell_samples = {}  # a running adaptive grid: the counts come with the result
        ts.set_cursor(2, 2)
        ts.show_cursor(grid, ts.pane.current)
        assert "adaptive, up to 40 samples (to a 0.02-wide interval)" in str(ts.pane.readout.render())


async def test_a_bad_ci_width_is_one_notification_and_a_log_line():
    engine = RecordingEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await choose_auto(pilot, "2")
        app.clear_notifications()
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
        message = "cannot run: CI width: '2' is not a number between 0 and 1 (e.g. 0.02)"
        assert notifications(app) == [("error", message)]
        assert app.trace_screen.run_log.lines_text[-1].endswith(message)
        assert engine.requests == []
        app.query_one("#ci-width", Input).value = "0.1"  # still alive: a good width runs
        await run_and_wait(pilot)
        assert engine.requests[-1].ci_width == 0.1


async def test_samples_auto_and_its_width_are_kept_for_the_next_launch():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await choose_auto(pilot, "0.04")
        await pilot.pause(0.2)
    saved = json.loads(config_path().read_text())
    assert saved["adaptive"] == {"auto": True, "ci_width": 0.04} and saved["trace"]["samples"] == AUTO_SAMPLES
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.query_one("#samples", Input).value == "auto"
        assert app.trace_screen.panel.read().ci_width == 0.04


async def test_a_broken_saved_width_is_dropped_with_a_warning():
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(json.dumps({"adaptive": {"auto": True, "ci_width": 5}}))
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.query_one("#samples", Input).value == "10"
        assert app.query_one("#ci-width", Input).value == "0.02"
        assert ("warning", "saved adaptive samples ignored: {'auto': True, 'ci_width': 5}") in notifications(app)


async def test_samples_auto_on_the_real_engine(engine):
    """The tiny model, chosen positions: the engine's adaptive run, each cell's count in the readout."""
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await choose_auto(pilot, "0.1")
        await pilot.press("ctrl+o")
        await run_and_wait(pilot)
        ts = app.trace_screen
        grid, result = ts.finished["positions"]
        assert result.request.ci_width == 0.1
        for row, kind in enumerate(grid.kinds):
            count = result.grids[kind]["samples"][0][4]
            assert count in (3, 6, 12, 24, 40)
            ts.set_cursor(row, 4)
            await pilot.pause()
            assert str(ts.pane.readout.render()).endswith(f"· {count} samples · F9 top-5")


async def test_the_apps_samples_auto_flag():
    from tui.__main__ import parse
    from tui.app import settings_overrides
    from tui.config import saved_settings

    args, code = parse(["--samples", "auto", "--window", "4"])
    assert code is None
    settings, _ = saved_settings({}, settings_overrides(args))
    assert (settings.samples, settings.window) == (AUTO_SAMPLES, 4)
    app = make_app(engine=FakeEngine(), settings=settings, auto_samples=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.query_one("#samples", Input).value == "auto"
        assert app.trace_screen.panel.read().ci_width == AUTO_CI_WIDTH


def test_a_running_grid_gives_each_finished_cells_samples_as_it_arrives():
    """CellsDone of an adaptive trace carries each cell's count: the readout says it before the
    trace ends; a cell still refining says what it may reach."""
    from tui.gridmodel import GridData, samples_text

    started = Started(["The", " E", "iff", "el"], (1, 3), 0.7, 0.02, (4, 3), ("mlp",), " Paris", 12)
    grid = GridData.from_started("all", started)
    grid.samples, grid.ci_width = AUTO_SAMPLES, AUTO_CI_WIDTH
    grid.apply(CellsDone("mlp", [(2, 0), (2, 1)], [0.3, 0.4], [40.0, 55.0], [1.0, 1.5], 2, 12, samples=[3, 12]))
    assert samples_text(grid, "mlp", 2, 0) == "3 samples" and samples_text(grid, "mlp", 2, 1) == "12 samples"
    assert samples_text(grid, "mlp", 2, 2) == f"adaptive, up to {AUTO_SAMPLES} samples (to a 0.02-wide interval)"

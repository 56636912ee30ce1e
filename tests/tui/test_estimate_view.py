"""Issue 21.2/21.4 in the app: a run shows the first-order estimate first (tracer.events.Estimate),
marked as such; exact cells replace it as they arrive; once exact, ctrl+y shows estimate minus exact."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future

from tracer.events import CellsDone, Estimate

from fake_engine import FakeEngine
from tui_helpers import ready, wait_for

from tui.app import make_app
from tui.commands import COMMANDS
from tui.gridmodel import ESTIMATE_TITLE, ESTIMATED

SHIFT = 0.1  # the fake estimate: every exact P plus 0.1


class EstimatingEngine(FakeEngine):
    """Sends Started and every grid's estimate at once; the exact cells when the test releases them."""

    def trace(self, request, on_event=None, cancel=None, *, settle=None) -> Future:
        events = []
        result = super().trace(request, events.append).result()
        self.request, self.emit, self.future = request, on_event, Future()
        self.cells = [e for e in events if isinstance(e, CellsDone)]
        on_event(events[0])  # Started
        estimate = {}
        for kind, g in result.grids.items():
            prob = [[p + SHIFT for p in row] for row in g["prob"]]
            recovery = [[r + 100 * SHIFT / 0.75 for r in row] for row in g["recovery"]]
            estimate[kind] = {"prob": prob, "recovery": recovery}
            cells = [(r, c) for r in range(len(prob)) for c in range(len(prob[0]))]
            on_event(Estimate(kind, cells, [prob[r][c] for r, c in cells], [recovery[r][c] for r, c in cells], 0.01))
        self.result = dataclasses.replace(result, estimate=estimate)
        return self.future

    def release(self, n: int | None = None) -> None:
        """Send the next `n` CellsDone (all when None); the run ends with the last."""
        n = len(self.cells) if n is None else n
        for event in self.cells[:n]:
            self.emit(event)
        self.cells = self.cells[n:]
        if not self.cells:
            self.future.set_result(self.result)


async def run_until_started(pilot):
    """ctrl+r, then wait until the run has its grid (Started and the estimate sent); the trace screen."""
    ts = pilot.app.trace_screen
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: ts.run is not None and ts.run.grid is not None, what="the run's grid")
    return ts


async def test_the_estimate_shows_marked_and_exact_cells_replace_it():
    engine = EstimatingEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: ts.pane.current is not None and ESTIMATE_TITLE in ts.pane.current.title,
                       what="the estimate")
        assert engine.request.estimate == "progressive"  # the app's default
        grid, n_rows = ts.run.grid, len(engine.result.tokens)
        kinds = len(engine.result.grids)
        assert grid.n_estimated == kinds * n_rows * 12 and grid.done == 0
        view = ts.pane.current
        assert view.title.startswith(f"{ESTIMATE_TITLE} (first-order, {n_rows * 12} cells")
        # the estimate's values are drawn, each marked in the table
        exact = engine.result.grids["hidden"]["recovery"]
        assert abs(view.values[0][0] - (exact[0][0] + 100 * SHIFT / 0.75)) < 1e-9
        assert view.cell_text(0, 0).startswith(ESTIMATED)
        # the first row of exact cells replaces its estimate; the others stay marked
        engine.release(1)  # hidden, token 0, every layer
        await wait_for(pilot, lambda: grid.done == 12, what="the first exact cells")
        await pilot.pause(0.3)
        view = ts.pane.current
        assert view.values[0] == exact[0] and not view.cell_text(0, 0).startswith(ESTIMATED)
        assert view.cell_text(1, 0).startswith(ESTIMATED)
        assert view.title.startswith(f"{ESTIMATE_TITLE} (first-order, {(n_rows - 1) * 12} cells")
        engine.release()
        await wait_for(pilot, lambda: ts.finished["all"] is not None, what="the run to end")
        await pilot.pause(0.3)
        assert ESTIMATE_TITLE not in ts.pane.current.title and ts.pane.current.values == exact
        assert not any(ESTIMATED in ts.pane.current.cell_text(r, c) for r in range(n_rows) for c in range(12))


async def test_ctrl_y_shows_estimate_minus_exact_once_exact():
    engine = EstimatingEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await run_until_started(pilot)
        await pilot.press("ctrl+y")  # not exact yet: refused, said so
        await pilot.pause(0.2)
        assert not ts.estimate_error and any("no estimate minus exact yet" in line for line in ts.run_log.lines_text)
        engine.release()
        await wait_for(pilot, lambda: ts.finished["all"] is not None, what="the run to end")
        await pilot.press("ctrl+n")  # probability
        await pilot.press("ctrl+y")
        await pilot.pause(0.3)
        view = ts.pane.current
        assert ts.estimate_error and view.title.startswith("estimate − exact (")
        assert all(abs(v - SHIFT) < 1e-9 for row in view.values for v in row)
        await pilot.press("ctrl+y")  # back to the exact grid
        await pilot.pause(0.3)
        assert ts.pane.current.values == engine.result.grids["hidden"]["prob"]
    assert any(action == "toggle_estimate_error" for _, _, action in COMMANDS)


async def test_the_log_summarises_the_estimates_error_once_exact():
    engine = EstimatingEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await run_until_started(pilot)
        worst = {"row": 2, "layer": 3, "token": "iffel", "estimate": 0.074, "exact": 0.386, "error": -0.312}
        errors = {kind: {"correlation": r, "mean_abs_error": 0.05, "max_abs_error": 0.312, "largest": [worst]}
                  for kind, r in (("hidden", 0.961), ("mlp", None), ("attn", 0.5))}
        engine.result = dataclasses.replace(engine.result, estimate_error=errors)
        engine.release()
        await wait_for(pilot, lambda: ts.finished["all"] is not None, what="the finished trace")
        lines = ts.run_log.lines_text
        assert any("first-order estimate vs exact P(target): correlation hidden 0.961 · mlp n/a · attn 0.500" in x
                   for x in lines)
        assert any("mlp: iffel layer 3: estimated 0.074, exact 0.386" in x for x in lines)

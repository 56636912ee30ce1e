"""Issues 16.3, 13.1-13.3, 15.1: what is on screen beside the grid, the colour scales, n/a, ± and marks."""

from __future__ import annotations

import dataclasses

from tracer.guards import TraceWarning
from tracer.render.terminal_plot import format_value
from tracer.types import TraceRequest

from textual.coordinate import Coordinate
from tui_helpers import notifications, ready, wait_for

from tui.app import make_app
from tui.gridmodel import GridData
from tui.messages import RunEnded
from tui.runstate import RunState
from tui.widgets.grid import GridTable
from tui.widgets.prompt_form import EIFFEL_PROMPT, EIFFEL_SUBJECT

REQUEST = TraceRequest(EIFFEL_PROMPT, EIFFEL_SUBJECT, kinds=("hidden",), samples=2)


def far_cells(result, kind="hidden", away=2e-7):
    """(row, layer) of the cells whose P is more than `away` from p_corrupted, farthest first."""
    p = result.grids[kind]["prob"]
    cells = [(abs(v - result.corrupted_prob), r, c) for r, row in enumerate(p) for c, v in enumerate(row)]
    return [(r, c) for d, r, c in sorted(cells, reverse=True) if d > away]


def with_intervals(result, widened, half: float = 1e-7):
    """The result with noise intervals [p - half, p + half], the cell `widened` given one that holds
    p_corrupted (indistinguishable from the corrupted run)."""
    grids = {}
    r, c = widened
    for kind, g in result.grids.items():
        low = [[p - half for p in row] for row in g["prob"]]
        high = [[p + half for p in row] for row in g["prob"]]
        low[r][c], high[r][c] = g["prob"][r][c] - 0.5, g["prob"][r][c] + 0.5
        grids[kind] = {**g, "prob_low": low, "prob_high": high}
    return dataclasses.replace(result, grids=grids)


async def show_result(pilot, res):
    """Hand `res` to the trace screen as the engine's done-callback would."""
    ts = pilot.app.trace_screen
    ts.run_count += 1
    run = ts.run = RunState(ts.run_count, res.request, "all", post=ts.post_message)
    ts.post_message(RunEnded(run.id, res))
    await wait_for(pilot, lambda: run.ended, what="the result")
    await pilot.pause(0.2)
    return ts


async def test_the_facts_beside_the_grid_and_the_warning_badge(engine):
    res = engine.trace(REQUEST).result(timeout=120)
    warnings = [TraceWarning("small-total-effect", "small total effect: 0.01"),
                TraceWarning("weak-target", "the target ' the' is a stop word")]
    res = dataclasses.replace(res, warnings=warnings)
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await show_result(pilot, res)
        text = ts.facts.plain
        assert ts.facts.region.width > 0 and ts.facts.region.x > ts.pane.region.x  # beside the grid
        assert f"p_clean     {res.clean_prob:.4f}" in text and f"p_corrupted {res.corrupted_prob:.4f}" in text
        assert "clean top-3" in text and "corrupted top-3" in text
        for p in res.clean_top[:3] + res.corrupted_top[:3]:
            assert f"{p.prob:.3f}" in text
        assert REQUEST.noise_rule.describe(res.noise_std) in text and "2 samples" in text
        badge = ts.facts.badge
        assert badge.display and str(badge.render()) == "⚠ 2 warnings: small-total-effect, weak-target (F8)"
        await pilot.press("f8")
        shown = notifications(app)  # one toast, every warning in it
        assert len(shown) == 1 and "• weak-target: the target ' the' is a stop word" in shown[0][1]


async def test_fixed_colour_scales_by_default_and_auto_on_request(engine):
    res = engine.trace(REQUEST).result(timeout=120)
    if not res.recovery_available:  # the tiny model: recovery as if the total effect were 0.5 (a heatmap to draw)
        grids = {k: {**g, "recovery": [[100 * (p - res.corrupted_prob) / 0.5 for p in row] for row in g["prob"]]}
                 for k, g in res.grids.items()}
        res = dataclasses.replace(res, grids=grids, recovery_available=True)
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await show_result(pilot, res)
        view = ts.pane.current
        assert view.metric == "recovery" and view.scale == (0.0, 100.0)
        legend = str(ts.pane.legend.render())
        assert legend.startswith("0.0 ") and "100.0  recovery % (fixed scale)" in legend
        # beyond as shown (one decimal): -0.04 reads "-0.0", the scale's end, not a cell beyond it
        n_beyond = sum(1 for row in view.values for v in row if v is not None and not -0.05 < v < 100.05)
        assert (f"▲ {n_beyond} cell" in legend) == (n_beyond > 0)
        await pilot.press("ctrl+n")  # probability: from p_corrupted to p_clean, as ROME draws it
        assert ts.pane.current.scale == tuple(sorted((res.corrupted_prob, res.clean_prob)))
        await pilot.press("f7")  # auto: the cells' own range
        assert ts.pane.current.scale is None and "(auto scale)" in str(ts.pane.legend.render())
        assert ts.pane.plot.scale == (min(min(r) for r in ts.pane.current.values),
                                      max(max(r) for r in ts.pane.current.values))


async def test_noise_intervals_give_plus_minus_and_marks(engine):
    res = engine.trace(REQUEST).result(timeout=120)
    far = far_cells(res)
    assert len(far) >= 2, "the tiny model's trace has cells away from the corrupted run"
    (r0, c0), (r1, c1) = far[0], far[1]
    res = with_intervals(res, (r0, c0))
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await show_result(pilot, res)
        await pilot.press("ctrl+n")  # probability
        view = ts.pane.current
        assert (r0, c0) in view.marks and (r1, c1) not in view.marks
        table = app.query_one(GridTable)
        p = res.grids["hidden"]["prob"]
        assert table.get_cell_at(Coordinate(r0, c0 + 1)).plain == f"{format_value(p[r0][c0], 'prob')}±0.500~"
        assert table.get_cell_at(Coordinate(r1, c1 + 1)).plain == f"{format_value(p[r1][c1], 'prob')}±0.000"
        assert "indistinguishable from the corrupted run" in str(ts.pane.legend.render())


async def test_cells_without_a_value_are_not_available(engine):
    res = engine.trace(REQUEST).result(timeout=120)
    grids = {k: {**g, "recovery": [[None] * len(row) for row in g["recovery"]]} for k, g in res.grids.items()}
    res = dataclasses.replace(res, grids=grids, recovery_available=False)
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await show_result(pilot, res)
        table = app.query_one(GridTable)
        assert table.get_cell_at(Coordinate(0, 1)).plain == "n/a"
        headline = str(ts.pane.peak.render())  # the sites in probability: recovery % is not available
        assert "subject site: " in headline and "%" not in headline
        assert "recovery %: n/a" in ts.facts.plain


def test_grid_model_scales_without_a_total_effect():
    """Probability's fixed scale needs p_clean != p_corrupted; else the view scales itself."""
    grid = GridData("all", ["a"], (0, 1), ("hidden",), 1, 2, clean_prob=0.3, corrupted_prob=0.3)
    grid.values = {"hidden": {m: [[0.1, 0.2]] for m in ("prob", "recovery", "logit_diff")}}
    assert grid.view("hidden", "prob").scale is None
    assert grid.view("hidden", "recovery").scale == (0.0, 100.0)
    assert grid.view("hidden", "recovery", auto=True).scale is None


async def test_f9_inspects_the_selected_cell(engine):
    res = engine.trace(REQUEST).result(timeout=120)
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        ts = await show_result(pilot, res)
        await pilot.press("f3")
        ts.table.cursor_coordinate = Coordinate(2, 4)  # token 2, layer 3
        await pilot.press("f9")
        await wait_for(pilot, lambda: any("top-5 restoring hidden layer 3" in m for _, m in notifications(app)),
                       what="the inspected cell")
